"""Dispatching jobs: sending "run job N" to its queue, and moving the job graph along.

An experiment's jobs form a graph through `depends_on` (train -> encode -> probe -> sample;
extra encode and sample jobs hang off train). A job is *ready* when it is queued and its
dependency (if any) has succeeded; only ready jobs are enqueued. When a job succeeds its
queued dependents are enqueued; when it fails or is cancelled every queued job downstream of
it can never run, and is settled with it (failed, naming the step, or cancelled).

Enqueue only after the job row is committed: the worker reads the row the message names.
Once a request has committed work, sending it is best effort (`send_or_leave_to_reaper`): the
row is the promise, and the reaper sends what was never sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, object_session
from sqlalchemy.orm.attributes import set_committed_value

from drl_core.job_states import IllegalTransition, JobStatus, StaleTransition, transition, utc_now
from drl_core.models import Job
from drl_core.queue import TASK_RUN_JOB, default_celery

logger = logging.getLogger("drl.dispatch")


def enqueue_job(job: Job, celery_app: Celery | None = None, countdown: float | None = None) -> None:
    """Send `drl.run_job(job.id)` to `job.queue` (the row must already be committed), then
    record `enqueued_at` (committed). If the process dies between the commit that made the
    job ready and this send, `enqueued_at` stays NULL and the reaper re-sends the job
    (`resend_unsent_jobs`): the database, not the broker, is what must not lose work.
    `countdown`: deliver it no sooner than this many seconds from now (a retry's backoff)."""
    app = celery_app or default_celery()
    app.send_task(TASK_RUN_JOB, args=[job.id], queue=job.queue, routing_key=job.queue,
                  countdown=countdown)
    session = object_session(job)
    if session is not None:
        sent_at = utc_now()
        session.execute(sa.update(Job).where(Job.id == job.id).values(enqueued_at=sent_at))
        session.commit()
        set_committed_value(job, "enqueued_at", sent_at)  # the bulk UPDATE does not touch `job`


def send_or_leave_to_reaper(job: Job, celery_app: Celery | None = None,
                            countdown: float | None = None) -> bool:
    """`enqueue_job` for work a request has already committed; whether it went out now.

    A broker that is down (or a database that fails while `enqueued_at` is recorded) is
    logged, not raised: the job stays queued with `enqueued_at` NULL and the reaper's
    `resend_unsent_jobs` sends it once the broker is back (after `unsent_grace_s`). So the
    request answers that it created the work, which is true, instead of an error that a
    client would retry into a duplicate."""
    try:
        enqueue_job(job, celery_app, countdown)
        return True
    except (BrokerError, OSError, SQLAlchemyError) as exc:
        session = object_session(job)
        if session is not None:
            session.rollback()
        logger.warning("job %s (%s) is saved but its message did not go out (the reaper will "
                       "send it): %s: %s", job.id, job.kind, type(exc).__name__, exc)
        return False


def enqueue_jobs(jobs: Iterable[Job], celery_app: Celery | None = None) -> list[int]:
    ids = []
    for job in jobs:
        enqueue_job(job, celery_app)
        ids.append(job.id)
    return ids


def is_ready(job: Job) -> bool:
    """Queued, and its dependency (if any) has succeeded."""
    if job.status != JobStatus.QUEUED:
        return False
    return job.depends_on is None or job.depends_on.status == JobStatus.SUCCEEDED


def retry_due(now: datetime) -> sa.ColumnElement[bool]:
    """A job waiting out a transient fault's backoff must not run, nor be sent, before its
    `retry_at`."""
    return Job.retry_at.is_(None) | (Job.retry_at <= now)


def runnable_now(statement: sa.Select, now: datetime) -> sa.Select:
    """`statement` (selecting from jobs) narrowed to the jobs a worker may start at `now`:
    ready (`is_ready`, as SQL: queued, and its dependency, if any, succeeded) and due
    (`retry_due`)."""
    upstream = aliased(Job)
    return (statement.outerjoin(upstream, Job.depends_on_id == upstream.id)
            .where(Job.status == JobStatus.QUEUED.value, retry_due(now),
                   Job.depends_on_id.is_(None) | (upstream.status == JobStatus.SUCCEEDED.value)))


def direct_dependents(session: Session, job: Job) -> list[Job]:
    return list(session.scalars(sa.select(Job).where(Job.depends_on_id == job.id).order_by(Job.id)))


def downstream_jobs(session: Session, job: Job) -> list[Job]:
    """Every job that depends on `job`, directly or through others, in id order."""
    found: dict[int, Job] = {}
    frontier = [job]
    while frontier:
        current = frontier.pop()
        for dependent in direct_dependents(session, current):
            if dependent.id not in found:
                found[dependent.id] = dependent
                frontier.append(dependent)
    return [found[i] for i in sorted(found)]


def release_dependents(session: Session, job: Job, celery_app: Celery | None = None) -> list[int]:
    """After `job` succeeded (committed): enqueue its queued direct dependents; their ids."""
    return enqueue_jobs((d for d in direct_dependents(session, job) if is_ready(d)), celery_app)


def settle_downstream(session: Session, job: Job) -> list[int]:
    """After `job` failed or was cancelled: its queued downstream jobs can never run.

    A failed upstream fails them with "upstream <kind> job <id> failed" (so the experiment
    names the step that broke); a cancelled one cancels them. Returns the ids settled; does
    not commit. Jobs another process moved meanwhile are left to that process.
    """
    if job.status == JobStatus.FAILED:
        target, fields = JobStatus.FAILED, {"error": f"upstream {job.kind} job {job.id} failed"}
    elif job.status == JobStatus.CANCELLED:
        target, fields = JobStatus.CANCELLED, {}
    else:
        raise ValueError(f"job {job.id} is {job.status}: only a failed or cancelled job settles "
                         "its downstream jobs")
    settled = []
    for dependent in downstream_jobs(session, job):
        if dependent.status != JobStatus.QUEUED:
            continue
        try:
            transition(session, dependent, target, **fields)
        except (StaleTransition, IllegalTransition):
            continue
        settled.append(dependent.id)
    return settled
