"""Retrying a job stopped by a transient fault: the decision, the backoff, the words.

The fault is classified by drl_core/faults.py. A job gets `Settings.transient_retry_budget`
retries, apart from its attempts (which count dead workers): retry n waits
`transient_backoff_s * 2**(n - 1)`, at most `transient_backoff_max_s`, so a 20-second
database outage costs a few short waits and an hour-long one ends in a failure that says
what was down. A retry keeps the job's attempt and resumes from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from drl_core.faults import Fault, classify
from drl_core.settings import Settings


@dataclass(frozen=True)
class Retry:
    fault: Fault
    number: int          # 1 for the first retry
    budget: int
    delay_s: float

    def not_before(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay_s)

    def log_line(self, attempt: int) -> str:
        return (f"attempt {attempt}: stopped by a transient fault ({self.fault.describe()}); "
                f"retry {self.number} of {self.budget} in {self.delay_s:.0f} s, from the last "
                "checkpoint")


def backoff_s(settings: Settings, number: int) -> float:
    """How long retry `number` (1-based) waits."""
    return min(settings.transient_backoff_max_s, settings.transient_backoff_s * 2 ** (number - 1))


def plan_retry(exc: BaseException, retries_done: int,
               settings: Settings) -> tuple[Fault | None, Retry | None]:
    """(the fault behind `exc` or None, the retry to make or None once the budget is spent)."""
    fault = classify(exc)
    if fault is None or retries_done >= settings.transient_retry_budget:
        return fault, None
    number = retries_done + 1
    return fault, Retry(fault, number, settings.transient_retry_budget, backoff_s(settings, number))


def give_up_error(fault: Fault, retries_done: int) -> str:
    """The failed job's error once its retries are spent."""
    tried = f"; gave up after {retries_done} retries" if retries_done else ""
    return f"{fault.describe()}{tried}"
