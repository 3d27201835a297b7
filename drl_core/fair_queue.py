"""Which job a free worker runs next: the database chooses, fairly, not the broker's order.

A "run job N" message is a nudge for its queue, not an order: the worker that receives it
starts the job `claim_next_job` picks for that queue, which may be another than N (N then
waits for the next nudge; every ready job was sent one, so there are as many nudges as
jobs that may start). The rule, written once here (`next_in_turn`; GET /queue replays it to
forecast the order, drl_core/queue_forecast.py):

1. whose turn: among the owners with a job that may start now, the one with the fewest jobs
   running on the queue, then the one whose last start on the queue is the oldest (an owner
   who never started one comes first). So two users with three jobs each run A, B, A, B, A,
   B on one worker, and a third user's job submitted after all six runs third: as soon as
   a worker is free, ahead of A's and B's second jobs. An owner who already has
   `max_running_jobs_per_user` jobs running on the queue has no turn.
2. of that owner's jobs, the highest priority (drl_core/priority.py);
3. then the oldest (created first; the smaller id on a tie).
Owners are users; with auth off every experiment is nobody's (owner None), one owner.

The choice and the start are one transaction. On PostgreSQL an advisory lock on the queue,
held to the commit, makes the claims on one queue take turns across processes and
machines: the second of two racing workers sees the first one's start, both the job taken
and whose turn is over. (SELECT ... FOR UPDATE SKIP LOCKED alone would keep them off one
job, but the second would choose without seeing the first's choice, and both could take
user A's jobs while B waits.) The lock is held for two reads and one UPDATE; a claim that
waits over `CLAIM_LOCK_TIMEOUT` for it fails with OperationalError, which the task retries.
The start itself is job_states' queued -> running compare-and-set: a cancel that lands
between the read and the start makes it fail, and the claim looks again. On SQLite (one
writer at a time) that compare-and-set alone decides between two racers; the loser looks
again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from drl_core.dispatch import runnable_now, send_or_leave_to_reaper
from drl_core.job_states import (HELD_BY_WORKER, IllegalTransition, JobStatus, StaleTransition,
                                 transition, utc_now)
from drl_core.models import Experiment, Job
from drl_core.priority import RANK

logger = logging.getLogger("drl.dispatch")

# A claim that loses its compare-and-set (a cancel, or on SQLite another worker) looks again
# this many times before it leaves the message unused.
CLAIM_TRIES = 5
CLAIM_LOCK_TIMEOUT = "10s"
_HELD = sorted(s.value for s in HELD_BY_WORKER)


@dataclass(frozen=True)
class Candidate:
    """A job that may start now, with what the rule orders it by."""

    job_id: int
    owner_id: int | None
    priority: str
    created_at: datetime


@dataclass(frozen=True)
class OwnerTurn:
    """An owner's standing on a queue: jobs running there now, and their last start there."""

    running: int = 0
    last_start: datetime | None = None


NO_TURN_YET = OwnerTurn()
_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)   # (compared only among owners who never started)


def turn_key(candidate: Candidate, turn: OwnerTurn) -> tuple:
    """What `next_in_turn` minimizes: fewest running, oldest last start (never first), highest
    priority, oldest job."""
    return (turn.running, turn.last_start is not None, turn.last_start or _NEVER,
            -RANK[candidate.priority], candidate.created_at, candidate.job_id)


def next_in_turn(candidates: Iterable[Candidate], turns: Mapping[int | None, OwnerTurn],
                 max_running: int = 0) -> Candidate | None:
    """The candidate the rule (module docstring) picks; None if there is none, or every
    candidate's owner has `max_running` (> 0) jobs running."""
    allowed = [c for c in candidates if not max_running
               or turns.get(c.owner_id, NO_TURN_YET).running < max_running]
    return min(allowed, key=lambda c: turn_key(c, turns.get(c.owner_id, NO_TURN_YET)),
               default=None)


# --- reading the database ----------------------------------------------------------------


def runnable_candidates(session: Session, queue: str, now: datetime) -> list[Candidate]:
    """The jobs of `queue` that may start at `now` (ready and due: dispatch.runnable_now)."""
    rows = session.execute(runnable_now(
        sa.select(Job.id, Experiment.owner_id, Experiment.priority, Job.created_at)
        .join(Experiment, Job.experiment_id == Experiment.id).where(Job.queue == queue), now))
    return [Candidate(*row) for row in rows]


def owner_turns(session: Session, queue: str) -> dict[int | None, OwnerTurn]:
    """Every owner who ever started a job on `queue`: running jobs there, last start there."""
    running = sa.func.sum(sa.case((Job.status.in_(_HELD), 1), else_=0))
    rows = session.execute(
        sa.select(Experiment.owner_id, running, sa.func.max(Job.started_at))
        .join(Experiment, Job.experiment_id == Experiment.id)
        .where(Job.queue == queue, Job.started_at.is_not(None))
        .group_by(Experiment.owner_id))
    return {owner: OwnerTurn(int(count or 0), last) for owner, count, last in rows}


# --- claiming ----------------------------------------------------------------------------


def lock_queue(session: Session, queue: str) -> None:
    """PostgreSQL: take the queue's advisory lock for the rest of the transaction (claims
    on a queue take turns). SQLite: nothing (one writer at a time already)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(sa.text(f"SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'"))
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(
        sa.func.hashtext(f"drl.fair_queue:{queue}"))))


def claim_next_job(session: Session, queue: str, worker: str, *, max_running: int = 0,
                   now: datetime | None = None) -> Job | None:
    """Start (queued -> running, `worker` recorded; committed) the job `next_in_turn` picks
    among `queue`'s jobs that may start now, and return it; None when there is none (or
    `max_running` holds back all there are). See the module docstring for the transaction."""
    for _ in range(CLAIM_TRIES):
        lock_queue(session, queue)
        picked = next_in_turn(runnable_candidates(session, queue, now or utc_now()),
                              owner_turns(session, queue), max_running)
        if picked is None:
            session.rollback()   # (ends the transaction: the lock goes with it)
            return None
        job = session.get(Job, picked.job_id, populate_existing=True)
        try:
            if job is None:
                raise StaleTransition(picked.job_id, JobStatus.QUEUED.value, 0, None)
            transition(session, job, JobStatus.RUNNING, worker=worker)
            session.commit()
            return job
        except (StaleTransition, IllegalTransition) as exc:
            session.rollback()   # cancelled, deleted, or (SQLite) taken meanwhile: look again
            logger.info("claim on queue %s: %s; looking again", queue, exc)
    return None


# --- the running limit -------------------------------------------------------------------


def held_back(session: Session, queue: str, max_running: int) -> set[int | None]:
    """The owners `max_running` (> 0) keeps from starting more jobs on `queue` now."""
    if not max_running:
        return set()
    return {owner for owner, turn in owner_turns(session, queue).items()
            if turn.running >= max_running}


def nudge_after_slot_freed(session: Session, queue: str, owner_id: int | None,
                           max_running: int, celery_app: Celery | None = None) -> int | None:
    """After a job of `owner_id` on `queue` stopped running: with a running limit, send a
    nudge for their oldest job that may start now, if any (its id). A nudge that found only
    jobs the limit held back was dropped, so without this the owner's next job would wait
    for the reaper. Without a limit nothing was held back: nothing is sent."""
    if not max_running:
        return None
    owner = (Experiment.owner_id.is_(None) if owner_id is None
             else Experiment.owner_id == owner_id)
    job = session.scalars(runnable_now(
        sa.select(Job).join(Experiment, Job.experiment_id == Experiment.id)
        .where(Job.queue == queue, owner), utc_now()).order_by(Job.id).limit(1)).first()
    if job is None:
        return None
    send_or_leave_to_reaper(job, celery_app)
    return job.id
