"""Per-user limits on queued work: a request that would queue more jobs than a user may have
waiting is refused (the API answers 429 problem+json naming the limit).

`max_queued_jobs_per_user` (Settings; 0 = no limit) counts a user's queued jobs, those
waiting for their upstream step included: a new experiment queues its whole pipeline (up to
four jobs), a sample or encoding request one, a resume every job it re-opens. The running
limit is the dispatcher's (drl_core/fair_queue.py): running jobs are not requested, they
are started, and beyond that limit a user's jobs simply wait.

The count and the insert that follows it are one transaction; on PostgreSQL an advisory
lock on the owner (held to the commit) keeps two concurrent requests of one user from both
passing the check. Owner None (auth off) is one user, like everyone else.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.job_states import JobStatus
from drl_core.models import Experiment, Job
from drl_core.settings import get_settings

QUEUED_LIMIT = "max_queued_jobs_per_user"


class LimitExceeded(Exception):
    """A request would take a user beyond one of their limits (`limit`, a Settings name)."""

    def __init__(self, limit: str, value: int, current: int, adding: int, owner_id: int | None):
        self.limit, self.value, self.current, self.adding = limit, value, current, adding
        self.owner_id = owner_id
        super().__init__(
            f"{current} queued job{'s' if current != 1 else ''} already; this request would "
            f"queue {adding} more, beyond the limit {limit} = {value} (a setting of the "
            f"service, DRL_{limit.upper()}): wait for some to start, or cancel some")


def queued_jobs(session: Session, owner_id: int | None) -> int:
    owner = Experiment.owner_id.is_(None) if owner_id is None else Experiment.owner_id == owner_id
    return session.scalar(
        sa.select(sa.func.count(Job.id)).join(Experiment, Job.experiment_id == Experiment.id)
        .where(owner, Job.status == JobStatus.QUEUED.value)) or 0


def check_queued_limit(session: Session, owner_id: int | None, adding: int,
                       limit: int | None = None) -> None:
    """Raise LimitExceeded if `owner_id`'s queued jobs plus `adding` would pass `limit`
    (default: the settings'; 0 = none), after rolling the session back. Call it in the
    transaction that then queues them: on PostgreSQL it takes the owner's lock to the
    commit (module docstring)."""
    limit = get_settings().max_queued_jobs_per_user if limit is None else limit
    if not limit or adding <= 0:
        return
    with session.no_autoflush:   # (the jobs being added, not yet flushed, are `adding`)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(
                sa.func.hashtext(f"drl.job_limits:{owner_id}"))))
        current = queued_jobs(session, owner_id)
    if current + adding > limit:
        session.rollback()   # (ends the transaction: the lock goes with it)
        raise LimitExceeded(QUEUED_LIMIT, limit, current, adding, owner_id)
