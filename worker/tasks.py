"""`drl.run_job(job_id)`: run the job whose turn it is on the message's queue, and move the
pipeline along.

    1. the message is a nudge for its queue: the database picks the job to start, by turn
       across owners, priority and age, and starts it (queued -> running, worker =
       host:pid) in one transaction (drl_core/fair_queue.py); usually another job than the
       message names. If no job may start the message is dropped: a duplicate delivery is
       therefore harmless, and a job cancelled while queued never runs. (`run_job(job_id)`
       runs one given job, out of turn: for tests and tools.)
    2. run the kind's runner with a heartbeat thread, a session fenced on the job's attempt
       (worker/context.py, drl_core/fencing.py) and the job's whole log, stored as it grows
       (worker/job_log.py);
    3. succeeded -> enqueue the queued jobs that depend on it;
       an exception from a transient fault (database, broker or store outage, disk full:
       drl_core/faults.py) -> queued again at the same attempt after a backoff, counted in
       `transient_retries` (worker/retries.py), resuming from the last checkpoint;
       any other exception, or one when the retries are spent -> failed, with a one-line
       error (a spent fault's says what was down, e.g. "disk full: ...") and the traceback's
       last lines in the log tail, and its queued downstream jobs failed with "upstream
       <kind> job N failed";
       a cancel -> cancelled (downstream jobs cancelled);
       the worker shutting down (worker/shutdown.py) -> handed back: queued at the same
       attempt (a training has saved and uploaded its checkpoint), its message sent again as
       the pool process exits (`send_handed_back`);
       the job taken away meanwhile (reaped, re-queued, deleted) -> write nothing more.

Per process: every pool process builds its own database engine and artifact store at
`worker_process_init` (never inherited across fork) and runs a reaper thread.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from drl_core.artifact_keys import experiment_prefix
from drl_core.dispatch import release_dependents, send_or_leave_to_reaper, settle_downstream
from drl_core.fair_queue import claim_next_job, nudge_after_slot_freed
from drl_core.fencing import fenced_session
from drl_core.job_states import (
    HELD_BY_WORKER,
    IllegalTransition,
    JobStatus,
    StaleTransition,
    transition,
    utc_now,
)
from drl_core.models import Experiment, Job
from drl_core.queue import QUEUES, TASK_RUN_JOB
from drl_core.settings import get_settings
from drl_engine.spec import ExperimentSpec
from worker.context import (Heartbeat, JobCancelled, JobContext, JobLost, WorkerResources,
                            WorkerStopping)
from worker.job_log import JobLog, run_header
from worker.jobs import runner_for
from worker.reaper import Reaper
from worker.retries import Retry, give_up_error, plan_retry
from worker.shutdown import stop_on_sigint

logger = logging.getLogger("drl.worker")

# Traceback lines kept in a failed job's log tail.
TRACEBACK_TAIL_LINES = 15
# Compare-and-set attempts for the final status before concluding the job is not ours.
_FINISH_RETRIES = 3

_resources: WorkerResources | None = None
_reaper: Reaper | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_resources() -> WorkerResources:
    """This process's resources (built on first use in a process without the signal)."""
    global _resources
    if _resources is None:
        _resources = WorkerResources(get_settings())
    return _resources


def one_line_error(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def traceback_lines(exc: BaseException) -> list[str]:
    return "".join(traceback.format_exception(exc)).rstrip("\n").splitlines()


def traceback_tail(exc: BaseException) -> list[str]:
    return traceback_lines(exc)[-TRACEBACK_TAIL_LINES:]


# --- the task ----------------------------------------------------------------------------


def run_next_job(queue: str | None, resources: WorkerResources | None = None,
                 celery_app: Celery | None = None, nudged_by: int | None = None) -> str:
    """What a worker does with a message (for job `nudged_by`) from `queue` (None: that job's
    queue): run the job whose turn it is there (drl_core/fair_queue.py). Returns what
    happened, as `run_job` does, or idle: no job may start (the message is dropped)."""
    resources = resources or process_resources()
    with resources.sessions() as session:
        if queue is None:
            nudging = session.get(Job, nudged_by) if nudged_by is not None else None
            if nudging is None:
                logger.warning("message for job %s: no such job and no queue; dropped", nudged_by)
                return "missing"
            queue = nudging.queue
        job = claim_next_job(session, queue, worker_name(),
                             max_running=resources.settings.max_running_jobs_per_user)
        if job is None:
            logger.info("message for job %s: no job may start on queue %s; dropped", nudged_by,
                        queue)
            return "idle"
        if job.id != nudged_by:
            logger.info("message for job %s on queue %s: job %s's turn", nudged_by, queue, job.id)
        return _run_held_job(session, job, resources, celery_app)


def run_job(job_id: int, resources: WorkerResources | None = None,
            celery_app: Celery | None = None) -> str:
    """Run job `job_id` if it is queued and ready, whoever's turn it is (tests and tools;
    workers take turns through `run_next_job`); returns what happened: succeeded, failed,
    cancelled, handed back (queued again: this worker is shutting down), retrying (queued
    again after a transient fault, its message delayed by the backoff), lost (taken away
    mid-run), skipped (not queued: nothing done), waiting (its dependency has not succeeded:
    left queued) or missing (no such job)."""
    resources = resources or process_resources()
    with resources.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            logger.warning("job %s: no such job (deleted?); message dropped", job_id)
            return "missing"
        if job.status != JobStatus.QUEUED:
            logger.info("job %s is %s, not queued; message dropped", job_id, job.status)
            return "skipped"
        if job.depends_on is not None and job.depends_on.status != JobStatus.SUCCEEDED:
            # Only ready jobs are enqueued; a stray message must not run a job early. Its
            # dependency's success enqueues it again.
            logger.info("job %s waits for job %s (%s); message dropped", job_id,
                        job.depends_on_id, job.depends_on.status)
            return "waiting"
        try:
            transition(session, job, JobStatus.RUNNING, worker=worker_name())
            session.commit()
        except (StaleTransition, IllegalTransition) as exc:
            session.rollback()
            logger.info("job %s: %s; message dropped", job_id, exc)
            return "skipped"
        return _run_held_job(session, job, resources, celery_app)


def _run_held_job(session: Session, job: Job, resources: WorkerResources,
                  celery_app: Celery | None) -> str:
    # The row may change or vanish under this worker (cancel, reaper, delete): keep what the
    # job *was* when this worker took it, never re-read it through the expired object.
    job_id, attempt, experiment_id, kind = job.id, job.attempt, job.experiment_id, job.kind
    retries_done, params, queue = job.transient_retries, dict(job.params or {}), job.queue
    owner_id = job.experiment.owner_id
    spec = ExperimentSpec.model_validate(job.experiment.spec)
    # End the read's transaction: this session must not sit idle in a transaction, holding
    # a connection and its snapshot, for as long as the job runs.
    session.rollback()
    heartbeat = Heartbeat(resources.sessions, job_id, attempt,
                          resources.settings.heartbeat_interval_s).start()
    job_log = JobLog(resources, experiment_id, job_id, attempt,
                     resources.settings.heartbeat_interval_s)
    job_log.write(run_header(attempt, worker_name(), utc_now()))
    job_log.start()
    logger.info("job %s (%s, experiment %s) attempt %s started", job_id, kind, experiment_id,
                attempt)
    fields: dict[str, Any] = {}
    log_lines: list[str] = []
    error: Exception | None = None
    retry: Retry | None = None
    try:
        # The runner's writes go through a session fenced on this attempt (drl_core/fencing.py);
        # this one keeps to the job's status, whose compare-and-sets carry the attempt.
        with tempfile.TemporaryDirectory(prefix=f"drl-job-{job_id}-") as workdir, \
                fenced_session(resources.sessions, job_id, attempt) as job_session:
            context = JobContext(
                job_id=job_id, experiment_id=experiment_id, kind=kind, attempt=attempt,
                params=params, spec=spec, session=job_session, resources=resources,
                heartbeat=heartbeat, workdir=Path(workdir), job_log=job_log)
            runner_for(kind)(context)
        outcome = JobStatus.SUCCEEDED
    except JobLost:
        outcome = None
    except JobCancelled:
        outcome = JobStatus.CANCELLED
    except WorkerStopping:
        outcome = JobStatus.QUEUED
        log_lines = [f"attempt {attempt}: the worker is shutting down; handed back to the queue "
                     "(the next worker resumes from the last checkpoint)"]
    except Exception as exc:
        fault, retry = plan_retry(exc, retries_done, resources.settings)
        if retry is not None:
            outcome = JobStatus.QUEUED
            log_lines = [retry.log_line(attempt)]
            fields = {"transient_retries": retry.number, "retry_at": retry.not_before(utc_now())}
            logger.warning("job %s: %s", job_id, log_lines[0])
        else:
            outcome, error = JobStatus.FAILED, exc
            fields["error"] = (one_line_error(exc) if fault is None
                               else give_up_error(fault, retries_done))
            log_lines = traceback_tail(exc)
    # Flush the last progress and log lines before the final status: the whole log (with the
    # whole traceback of a failure) is stored, and the tail written, before the job is seen
    # to end.
    for line in traceback_lines(error) if error is not None else log_lines:
        job_log.write(line)
    job_log.stop()
    heartbeat_stopped = heartbeat.stop()
    session.rollback()

    if outcome is JobStatus.QUEUED and not heartbeat_stopped:
        # The hand-back keeps the attempt, so it must be this run's last write: with a
        # heartbeat thread still hanging in the database it might not be. The reaper takes it.
        logger.warning("job %s: not handed back (its heartbeat thread is stuck); the reaper "
                       "re-queues it", job_id)
        return "lost"
    finished = None if outcome is None else _finish(
        session, job_id, attempt, outcome, log_lines, resources.settings.finish_patience_s,
        **fields)
    if finished is None:
        # (an exception then is a symptom, e.g. a foreign key to a deleted experiment)
        _forget_lost_job(session, job_id, attempt, experiment_id, resources)
        return "lost"
    if error is not None:
        logger.error("job %s (%s) failed: %s", job_id, kind, fields["error"], exc_info=error)
    if finished.status == JobStatus.QUEUED and retry is None:
        resources.handed_back.append(job_id)
        resources.stop_requested.clear()   # served: a stray SIGINT costs one hand-back, no more
        logger.info("job %s handed back at attempt %s (the worker is shutting down); its message "
                    "goes out as this process exits", job_id, attempt)
        return "handed back"
    if finished.status == JobStatus.QUEUED and retry is not None:
        # Sent now, delivered after the backoff; a broker that is down (perhaps the very
        # fault) leaves it to the reaper, which respects retry_at.
        send_or_leave_to_reaper(finished, celery_app, countdown=retry.delay_s)
        result = "retrying"
    elif finished.status == JobStatus.SUCCEEDED:
        released = release_dependents(session, finished, celery_app)
        logger.info("job %s succeeded; enqueued %s", job_id, released or "nothing")
        result = finished.status
    else:
        settled = settle_downstream(session, finished)
        session.commit()
        logger.info("job %s %s; downstream %s settled", job_id, finished.status,
                    settled or "none")
        result = finished.status
    # (not after a hand-back: this stopping worker would take the nudge itself)
    nudge_after_slot_freed(session, queue, owner_id,
                           resources.settings.max_running_jobs_per_user, celery_app)
    return result


def _finish(session: Session, job_id: int, attempt: int, outcome: JobStatus,
            log_lines: list[str], patience_s: float, **fields: Any) -> Job | None:
    """Move the job this worker holds (running or cancelling, at `attempt`) to `outcome`;
    None if it is no longer ours. A job being cancelled is not handed back: it is cancelled
    (the user asked it to stop; its checkpoint is stored all the same).

    A database that cannot be reached (the outage that may have stopped the job) is waited
    for, with backoff, for up to `patience_s`; then the job is left to the reaper, which
    re-queues it once its heartbeat is stale (a new attempt)."""
    deadline = time.monotonic() + patience_s
    wait_s = 0.5
    while True:
        try:
            return _finish_once(session, job_id, attempt, outcome, log_lines, **fields)
        except (OperationalError, InterfaceError, DisconnectionError) as exc:
            session.rollback()
            if time.monotonic() + wait_s > deadline:
                logger.error("job %s: could not record its outcome (%s), the database is "
                             "unreachable; left to the reaper", job_id, outcome)
                return None
            logger.warning("job %s: recording %s failed (%s); retrying in %.1f s", job_id,
                           outcome, str(exc).splitlines()[0], wait_s)
            time.sleep(wait_s)
            wait_s = min(wait_s * 2, 8.0)


def _finish_once(session: Session, job_id: int, attempt: int, outcome: JobStatus,
                 log_lines: list[str], **fields: Any) -> Job | None:
    for _ in range(_FINISH_RETRIES):
        job = session.get(Job, job_id, populate_existing=True)
        if job is None or job.attempt != attempt or job.status not in HELD_BY_WORKER:
            return None
        target, lines, extra = outcome, log_lines, dict(fields)
        if outcome is JobStatus.QUEUED and job.status == JobStatus.CANCELLING:
            # (the lines say it was handed back or retried; a retry's fields do not apply)
            target, lines, extra = JobStatus.CANCELLED, [], {}
        if lines:
            extra["log_tail"] = job.tail_with(lines)
        try:
            transition(session, job, target, **extra)
            session.commit()
            return job
        except StaleTransition:
            session.rollback()   # a heartbeat-free writer (a cancel) moved it: look again
    return None


def _forget_lost_job(session: Session, job_id: int, attempt: int, experiment_id: int,
                     resources: WorkerResources) -> None:
    """The job was taken away. If its whole experiment was deleted meanwhile, remove what
    this run may have uploaded after the deletion; otherwise another attempt owns the job's
    artifacts and nothing is touched."""
    logger.warning("job %s attempt %s is no longer held by this worker; stopped", job_id, attempt)
    try:
        if session.get(Experiment, experiment_id, populate_existing=True) is None:
            resources.store.delete_prefix(experiment_prefix(experiment_id))
    except Exception:
        logger.exception("job %s: cleaning up after a deleted experiment failed", job_id)


# --- Celery wiring -----------------------------------------------------------------------


def register(app: Celery) -> None:
    """Register `drl.run_job` on `app`."""

    @app.task(name=TASK_RUN_JOB, bind=True, ignore_result=True, acks_late=True,
              autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60,
              max_retries=10)
    def run_job_task(self, job_id: int) -> str:
        resources = process_resources()
        stop_on_sigint(resources.stop_requested)   # a stopping worker hands this job back
        # The queue the message came from (the one the job was sent to); the database
        # unreachable before a job started: retry later (a new message).
        queue = (self.request.delivery_info or {}).get("routing_key")
        return run_next_job(queue if queue in QUEUES else None, resources,
                            celery_app=self.app, nudged_by=job_id)


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    """In each pool process: fresh resources (never the parent's), and a reaper thread.
    Kept fast (Celery waits only a few seconds for a new process): nothing is imported or
    contacted here; the engine connects, and the store is built, on first use."""
    global _resources, _reaper
    _resources = WorkerResources(get_settings())
    from worker.celery_app import celery_app
    _reaper = Reaper(_resources.sessions, _resources.settings.reaper_interval_s,
                     _resources.settings.heartbeat_timeout_s, celery_app).start()


def send_handed_back(resources: WorkerResources, celery_app: Celery) -> list[int]:
    """Send again the messages of the jobs this process handed back (still queued); their ids.

    Not at the hand-back itself: the stopping worker still consumes messages until its event
    loop ends (up to a few seconds into its warm shutdown) and would take the job straight
    back. A pool process exits after that. Should it be killed first, the job stays queued
    without a message, and a reaper sends one (`resend_unsent_jobs`, after `unsent_grace_s`).
    """
    sent = []
    with resources.sessions() as session:
        for job_id in resources.handed_back:
            job = session.get(Job, job_id)
            if job is not None and job.status == JobStatus.QUEUED and job.enqueued_at is None:
                if send_or_leave_to_reaper(job, celery_app):
                    sent.append(job_id)
    resources.handed_back.clear()
    return sent


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()
    if _resources is not None:
        try:
            if _resources.handed_back:
                from worker.celery_app import celery_app
                logger.info("sent the messages of handed-back jobs %s again",
                            send_handed_back(_resources, celery_app))
            _resources.dispose()
        except SQLAlchemyError:
            logger.exception("handed-back jobs %s: left to the reaper", _resources.handed_back)
