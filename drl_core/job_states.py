"""The job state machine: one transition table, and the one function that writes a status.

Every status change of a job goes through `transition`, which checks `TRANSITIONS` and then
writes the new status as a compare-and-set:

    UPDATE jobs SET status = :new, ... WHERE id = :id AND status = :old AND attempt = :attempt

If another process (a second worker, the reaper, a cancel request) changed the row after this
process read it, no row matches and `StaleTransition` is raised, so of two racing writers
exactly one wins. The attempt number is part of the condition so that a worker presumed dead
(running -> lost -> queued, attempt + 1) and then picked up again by another worker cannot
finish the new attempt in its place: `running` at attempt 2 is not the `running` it read.
The attempt is the job's fencing token: the worker's other writes are conditioned on it too
(drl_core/fencing.py). The reaper's compare-and-set also names the heartbeat it judged stale
(`reap`), so a heartbeat that lands after that judgement keeps the job alive.

Decisions the table encodes (the ones that are not obvious):

- queued -> cancelled directly. No worker holds a queued job, so there is nobody to finish a
  `cancelling`; the compare-and-set already settles the race with a worker starting it (the
  loser sees StaleTransition: the canceller then asks running -> cancelling, the worker drops
  the job).
- queued -> failed: a job whose upstream step failed can never run; it fails with the reason.
- cancelling -> succeeded | failed: a job may finish, or crash, between the cancel request and
  the moment its worker checks the flag. Its outcome is real (a succeeded job has recorded its
  artifacts), so it is reported as what it was rather than hidden as `cancelled`.
- cancelling has no `lost`: if its worker dies, the reaper moves it straight to `cancelled`;
  the user asked for it to stop, re-queueing it would be wrong.
- lost -> queued only while attempts remain (`attempt < max_attempts`); `transition` bumps
  `attempt`. Otherwise lost -> failed. lost -> cancelled lets a cancel request win over a
  re-queue.
- running -> queued: the job's worker is shutting down (SIGTERM, Ctrl-C) and hands the job
  back after saving its checkpoint (worker/shutdown.py), or the job was stopped by a transient
  fault (a database, broker or store outage, a full disk: drl_core/faults.py) and is retried
  after a backoff, counted in `transient_retries`. Neither is the job's failure, so the
  attempt is not counted: it keeps its number, unlike lost -> queued. That is safe although the attempt is
  the fencing token, because the hand-back is its worker's last write for the job (its runner
  has returned and its heartbeat has stopped), so nothing of the old run can land in the next.
  `worker`, `heartbeat_at` and `enqueued_at` are cleared: the message that started it is
  spent, and a new one goes out (or the reaper sends it, `resend_unsent_jobs`).
  cancelling has no such move: a job being cancelled that is stopped is cancelled.
- succeeded, failed and cancelled are terminal: no worker or reaper moves them on. Only a
  user's resume (`POST /experiments/{id}/resume`) re-opens failed or cancelled -> queued, as
  a new attempt (attempt + 1, so nothing of an old run can write into it) with a fresh
  budget of attempts and transient retries; the train job resumes from its last checkpoint.
  succeeded is final.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session


class JobKind(StrEnum):
    """The steps of an experiment, declared in pipeline order (each depends on the previous)."""

    TRAIN = "train"
    ENCODE = "encode"
    PROBE = "probe"
    SAMPLE = "sample"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    LOST = "lost"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus

# The single authority: from-status -> the statuses it may move to.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLING, S.LOST, S.QUEUED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.FAILED}),
    S.LOST: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),       # resumed by its user
    S.CANCELLED: frozenset({S.QUEUED}),    # resumed by its user
}

# Finished: no worker or reaper moves these on (a user may resume failed or cancelled).
TERMINAL: frozenset[JobStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
RESUMABLE: frozenset[JobStatus] = frozenset({S.FAILED, S.CANCELLED})
ACTIVE: frozenset[JobStatus] = frozenset(TRANSITIONS) - TERMINAL
# Statuses in which a worker holds the job and must keep its heartbeat fresh.
HELD_BY_WORKER: frozenset[JobStatus] = frozenset({S.RUNNING, S.CANCELLING})

# Columns a status write manages itself; callers may not pass them as extra fields.
_MANAGED_FIELDS = frozenset({"id", "experiment_id", "kind", "status", "attempt", "created_at"})


class IllegalTransition(ValueError):
    """The transition table does not allow this move (a bug in the caller, not a race)."""

    def __init__(self, job_id: int | None, old: str, new: str, reason: str = "") -> None:
        self.job_id, self.old, self.new = job_id, JobStatus(old), JobStatus(new)
        allowed = ", ".join(sorted(TRANSITIONS[self.old])) or "nothing (terminal)"
        message = f"job {job_id}: illegal transition {self.old} -> {self.new}"
        message += f" ({reason})" if reason else f"; from {self.old} allowed: {allowed}"
        super().__init__(message)


class StaleTransition(RuntimeError):
    """Another process changed (or deleted) the job after it was read: this writer lost."""

    def __init__(self, job_id: int, expected: str, attempt: int, current: tuple[str, int] | None):
        self.job_id, self.expected, self.attempt, self.current = job_id, expected, attempt, current
        now = "it no longer exists" if current is None else f"it is {current[0]} at attempt {current[1]}"
        super().__init__(f"job {job_id}: expected {expected} at attempt {attempt}, but {now}")


def can_transition(old: str, new: str) -> bool:
    """Whether the table allows `old -> new` (raises ValueError for an unknown status)."""
    return JobStatus(new) in TRANSITIONS[JobStatus(old)]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def transition(session: Session, job: Any, new_status: str, *,
               only_if: sa.ColumnElement[bool] | None = None, **fields: Any) -> None:
    """Move `job` (a `drl_core.models.Job`) to `new_status` as one compare-and-set.

    Also writes `fields` (e.g. error=..., worker=...), `updated_at`, and the timestamps the
    status implies: `started_at` and a first `heartbeat_at` on running, `finished_at` on a
    terminal status; lost -> queued bumps `attempt` and clears `worker` and `heartbeat_at`;
    running -> queued (handed back, or a transient retry) keeps `attempt` and clears those
    and `enqueued_at`; failed | cancelled -> queued (a resume) bumps `attempt` and clears
    those, `error`, `finished_at`, `retry_at` and `transient_retries` (the caller raises
    `max_attempts` with it).
    `only_if` adds a condition on the row to the compare-and-set (the reaper's: the heartbeat
    it judged stale is still the last one). Raises IllegalTransition if the table forbids the
    move (or lost -> queued with no attempts left) and StaleTransition if the row changed
    since `job` was read (or `only_if` does not hold). Does not commit; on success `job` is
    refreshed from the row.
    """
    old, new = JobStatus(job.status), JobStatus(new_status)
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(job.id, old, new)
    if old is S.LOST and new is S.QUEUED and job.attempt >= job.max_attempts:
        raise IllegalTransition(
            job.id, old, new, f"attempt {job.attempt} of {job.max_attempts}: none left, fail it instead"
        )
    _check_fields(job, fields, "transition")
    job_cls = type(job)
    now = utc_now()
    values: dict[str, Any] = {"status": new.value, "updated_at": now}
    if new is S.RUNNING:
        values |= {"started_at": now, "heartbeat_at": now}
    if new in TERMINAL:
        values["finished_at"] = now
    if old is S.LOST and new is S.QUEUED:
        values |= {"attempt": job_cls.attempt + 1, "worker": None, "heartbeat_at": None}
    if old is S.RUNNING and new is S.QUEUED:
        values |= {"worker": None, "heartbeat_at": None, "enqueued_at": None}
    if old in RESUMABLE and new is S.QUEUED:
        values |= {"attempt": job_cls.attempt + 1, "worker": None, "heartbeat_at": None,
                   "enqueued_at": None, "error": None, "finished_at": None, "retry_at": None,
                   "transient_retries": 0,
                   # (at least room for the new attempt; the caller passes a fresh budget)
                   "max_attempts": max(job.max_attempts, job.attempt + 1)}
    values |= fields
    _compare_and_set(session, job, {old}, values, only_if)


def heartbeat(session: Session, job: Any, **progress: Any) -> JobStatus:
    """Refresh `heartbeat_at` (and progress fields: step, total, loss, images_per_s, log_tail)
    of a job this worker holds, and return its status: `cancelling` tells the worker to stop.

    A compare-and-set like `transition`, on (status in running|cancelling, attempt): raises
    StaleTransition if the job is no longer this worker's (reaped, re-queued, deleted).
    """
    _check_fields(job, progress, "heartbeat")
    now = utc_now()
    _compare_and_set(session, job, HELD_BY_WORKER, {"heartbeat_at": now, "updated_at": now} | progress)
    return JobStatus(job.status)


def last_sign_of_life(job_cls: Any) -> sa.ColumnElement[Any]:
    """When a held job last showed it was alive: its heartbeat, or lacking one its last
    update. What the reaper judges staleness by."""
    return sa.func.coalesce(job_cls.heartbeat_at, job_cls.updated_at)


def reap(session: Session, job: Any, error: str | None = None) -> JobStatus:
    """What the reaper does with a held job whose heartbeat stopped; returns the new status.

    running -> lost -> queued (attempt + 1) while attempts remain, else -> failed;
    cancelling -> cancelled (its worker died while stopping: the user wanted it stopped).

    `job` must be as it was read when judged stale: the first compare-and-set requires its
    last sign of life (heartbeat) to be unchanged since. A live job whose heartbeat was only
    delayed (a row lock, a slow database) and lands meanwhile is not reaped (StaleTransition).
    """
    judged = job.heartbeat_at if job.heartbeat_at is not None else job.updated_at
    still_silent = last_sign_of_life(type(job)) == judged
    status = JobStatus(job.status)
    if status is S.CANCELLING:
        transition(session, job, S.CANCELLED, only_if=still_silent)
        return S.CANCELLED
    transition(session, job, S.LOST, only_if=still_silent)
    if job.attempt < job.max_attempts:
        transition(session, job, S.QUEUED)
        return S.QUEUED
    transition(
        session, job, S.FAILED,
        error=error or f"worker lost on attempt {job.attempt} of {job.max_attempts}; no attempts left",
    )
    return S.FAILED


def _check_fields(job: Any, fields: Mapping[str, Any], caller: str) -> None:
    columns = set(type(job).__table__.columns.keys())
    unknown = sorted(set(fields) - columns)
    managed = sorted(set(fields) & _MANAGED_FIELDS)
    if unknown:
        raise ValueError(f"{caller}() of job {job.id}: {unknown} are not columns of jobs")
    if managed:
        raise ValueError(f"{caller}() of job {job.id}: {managed} are set by the state machine, not callers")


def _compare_and_set(
    session: Session, job: Any, expected: Collection[JobStatus], values: dict[str, Any],
    only_if: sa.ColumnElement[bool] | None = None,
) -> None:
    """UPDATE the job's row with `values` only if it is still in one of the `expected`
    statuses at the attempt `job` was read at (and `only_if` holds); refresh `job`."""
    job_cls = type(job)
    statement = (
        sa.update(job_cls)
        .where(
            job_cls.id == job.id,
            job_cls.status.in_(sorted(s.value for s in expected)),
            job_cls.attempt == job.attempt,
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if only_if is not None:
        statement = statement.where(only_if)
    if session.execute(statement).rowcount != 1:
        expected_text = " or ".join(sorted(s.value for s in expected))
        raise StaleTransition(job.id, expected_text, job.attempt,
                              current_state(session, job_cls, job.id))
    session.refresh(job)


def current_state(session: Session, job_cls: Any, job_id: int) -> tuple[str, int] | None:
    """(status, attempt) of the job's row now; None if it no longer exists."""
    row = session.execute(
        sa.select(job_cls.status, job_cls.attempt).where(job_cls.id == job_id)
    ).one_or_none()
    return None if row is None else (row.status, row.attempt)


# --- experiment status, derived from its jobs (never stored, so it cannot disagree) ---------


class ExperimentStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def derive_experiment_status(job_statuses: Iterable[str]) -> ExperimentStatus:
    """The experiment's status from its jobs' statuses.

    While anything is active the experiment is in progress: `cancelling` if any job is being
    cancelled, `queued` if every job is still queued (nothing started yet), else `running`
    (a `lost` job is being recovered, so it counts as running). Once every job is terminal:
    `failed` if any failed, else `cancelled` if any was cancelled, else `succeeded`.
    An experiment with no jobs is `queued`.
    """
    statuses = {JobStatus(s) for s in job_statuses}
    if statuses & ACTIVE:
        if S.CANCELLING in statuses:
            return ExperimentStatus.CANCELLING
        return ExperimentStatus.QUEUED if statuses == {S.QUEUED} else ExperimentStatus.RUNNING
    if S.FAILED in statuses:
        return ExperimentStatus.FAILED
    if S.CANCELLED in statuses:
        return ExperimentStatus.CANCELLED
    return ExperimentStatus.SUCCEEDED if statuses else ExperimentStatus.QUEUED


class _JobLike(Protocol):
    id: Any
    kind: Any
    status: Any


def pipeline_jobs(jobs: Iterable[_JobLike]) -> list[_JobLike]:
    """The jobs created with the experiment (train -> encode -> probe -> sample): the first of
    each kind. Encodings and samples requested later have higher ids; their outcome is theirs
    and does not change the experiment's status (a cancelled extra sample job must not turn a
    finished experiment into a cancelled one)."""
    first: dict[str, _JobLike] = {}
    for job in sorted(jobs, key=lambda j: j.id or 0):
        first.setdefault(str(job.kind), job)
    return list(first.values())


def experiment_status(jobs: Iterable[_JobLike]) -> ExperimentStatus:
    """The experiment's status: `derive_experiment_status` of its pipeline jobs."""
    return derive_experiment_status(j.status for j in pipeline_jobs(jobs))


def failed_job(jobs: Iterable[_JobLike]) -> _JobLike | None:
    """The step that failed: the first failed pipeline job in pipeline order (train, encode,
    probe, sample), or None. Its `kind` names the step and its `error` says why."""
    failed = [j for j in pipeline_jobs(jobs) if JobStatus(j.status) is S.FAILED]
    order = {kind.value: i for i, kind in enumerate(JobKind)}
    return min(failed, key=lambda j: (order.get(str(j.kind), len(order)), j.id or 0), default=None)
