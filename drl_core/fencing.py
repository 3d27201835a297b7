"""Fencing: a job's writes commit only while the job is held at the attempt that made them.

A worker presumed dead (its heartbeat thread died, or its heartbeats were held up) may keep
running after the reaper re-queued its job and another worker started the next attempt. Its
writes must then be refused by the database, not by a flag in its own memory: two copies of
one training once wrote for a minute, leaving duplicate metric points. The job's `attempt` is
the fencing token. Status writes carry it in their compare-and-set (job_states); every other
write a job makes (artifact rows, artifact deletion, metric points) goes through a session
from `fenced_session`, whose every commit first runs `hold` in the same transaction:

    SELECT id FROM jobs WHERE id = :job AND attempt = :attempt
                          AND status IN ('running', 'cancelling') FOR SHARE

No row: the job is no longer this attempt's, StaleTransition is raised and the transaction's
writes are rolled back. A row: it stays share-locked until the commit, so a reaper or a
cancel that wants to change it waits for the commit; the writes land strictly before the job
changes hands, never after. (SQLite has no row locks and needs none: it has one writer at a
time, and the writes before the check already hold its write lock.)

What the database cannot fence is the artifact store: a file is uploaded before its row is
recorded, so a stale attempt that passes `is_held` just before it loses the job can still
overwrite a file at a key the new attempt writes too (the same key: the same computation),
though its row is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from drl_core.job_states import HELD_BY_WORKER, StaleTransition, current_state
from drl_core.models import Job

_HELD = sorted(s.value for s in HELD_BY_WORKER)


def _held_row(job_id: int, attempt: int) -> sa.Select[tuple[int]]:
    return sa.select(Job.id).where(Job.id == job_id, Job.attempt == attempt,
                                   Job.status.in_(_HELD))


def is_held(session: Session, job_id: int, attempt: int) -> bool:
    """Whether the job is still held at `attempt`, read without a lock (a cheap check before
    slow work, e.g. an upload; the commit's `hold` is what decides)."""
    return session.scalar(_held_row(job_id, attempt)) is not None


def hold(session: Session, job_id: int, attempt: int) -> None:
    """Share-lock the job's row if it is held at `attempt` (until the transaction ends);
    StaleTransition if it is not (re-queued, finished, cancelled, deleted)."""
    if session.scalar(_held_row(job_id, attempt).with_for_update(read=True)) is None:
        raise StaleTransition(job_id, " or ".join(_HELD), attempt,
                              current_state(session, Job, job_id))


@contextmanager
def fenced_session(sessions: sessionmaker[Session], job_id: int, attempt: int) -> Iterator[Session]:
    """A session whose every commit is fenced by `hold` (see the module docstring); closed
    (uncommitted work rolled back) when the block ends."""
    session = sessions()

    @event.listens_for(session, "before_commit")
    def _fence(fenced: Session) -> None:
        # Writes first: on SQLite they take the write lock, so nothing changes the job row
        # between the check and the commit (on PostgreSQL the row lock does that).
        fenced.flush()
        hold(fenced, job_id, attempt)

    try:
        yield session
    finally:
        session.close()
