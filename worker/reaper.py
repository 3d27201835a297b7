"""The reaper: jobs whose worker stopped heartbeating are lost; re-queue them or settle them.
It also re-sends ready queued jobs whose "run job N" message never went out
(`resend_unsent_jobs`), so a sender that died, or a broker that was down, loses no work; and
those whose message went out but is no longer in the broker (`resend_stranded_jobs`).

A held job (running or cancelling) whose `heartbeat_at` is older than
`heartbeat_timeout_s` goes through `job_states.reap`: running -> lost -> queued with attempt
+ 1 (and is enqueued again; the train runner resumes from its last stored checkpoint), or
-> failed once `max_attempts` are used up; cancelling -> cancelled. A job that ends failed or
cancelled settles its queued downstream jobs. The reap is a compare-and-set on the heartbeat
time judged stale: a heartbeat that was held up (a row lock, a slow database) and lands
between the judgement and the reap keeps its job.

Stranded messages: a Redis restarted without its data has lost the messages of every queued
job. Each pass asks the broker which jobs it holds a message for, waiting in a queue or
delivered to a worker and not yet acknowledged (drl_core/broker_messages.py), and re-sends
the ready queued jobs sent over `stranded_after_s` ago that are not among them: such a job
runs within stranded_after_s + reaper_interval_s of the loss. A message starts whichever
job's turn it is (drl_core/fair_queue.py), so a job can lose its message to another's start
while that other's message still waits: such a spare message counts for one job without its
own, which is not re-sent. A job waiting behind a backlog has a message, so it gets no
copy; a re-sent job has its message again at the next pass, so it gets one copy per loss. The broker is read before the database, so a message sent
after the read belongs to a job whose `enqueued_at` is too recent to be a candidate. Where
the broker cannot be looked into (a transport other than Redis or the filesystem) or read
(down), the pass sends nothing and `resend_unsent_jobs` re-sends what was sent over
`resend_after_s` ago, as before.

Every worker process runs one (`start_reaper`); several reapers racing on one job are
harmless, each step is a compare-and-set and the losers skip the job.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from drl_core.broker_messages import BrokerMessages, BrokerUnreadable, read_broker_messages
from drl_core.dispatch import enqueue_job, is_ready, retry_due, settle_downstream
from drl_core.fair_queue import held_back
from drl_core.job_states import (
    HELD_BY_WORKER,
    IllegalTransition,
    JobStatus,
    StaleTransition,
    last_sign_of_life,
    reap,
    utc_now,
)
from drl_core.models import Job
from drl_core.queue import default_celery
from drl_core.settings import get_settings

logger = logging.getLogger("drl.reaper")


def stale_jobs(session: Session, cutoff: datetime) -> list[Job]:
    """Held jobs whose last heartbeat (or, lacking one, last update) is before `cutoff`, as
    they are now (what `reap` compares against), not as the session may have cached them."""
    return list(session.scalars(
        sa.select(Job).where(Job.status.in_(sorted(s.value for s in HELD_BY_WORKER)),
                             last_sign_of_life(Job) < cutoff)
        .order_by(Job.id).execution_options(populate_existing=True)))


def reap_stale_jobs(session: Session, now: datetime | None = None, *,
                    timeout_s: float | None = None,
                    celery_app: Celery | None = None) -> list[int]:
    """Reap every held job silent for more than `timeout_s` (default: the settings'
    heartbeat_timeout_s) before `now`; commits each one, enqueues the re-queued ones, and
    returns the ids reaped."""
    timeout_s = get_settings().heartbeat_timeout_s if timeout_s is None else timeout_s
    cutoff = (now or utc_now()) - timedelta(seconds=timeout_s)
    reaped = []
    for job in stale_jobs(session, cutoff):
        worker = job.worker
        try:
            status = reap(session, job, error=None)
            if status in (JobStatus.FAILED, JobStatus.CANCELLED):
                settle_downstream(session, job)
            session.commit()
        except (StaleTransition, IllegalTransition):
            session.rollback()   # it heartbeated, finished, or another reaper got it first
            continue
        logger.warning("job %s (%s) lost its worker %s: now %s (attempt %s of %s)", job.id,
                       job.kind, worker or "?", status, job.attempt, job.max_attempts)
        reaped.append(job.id)
        if status == JobStatus.QUEUED:
            enqueue_job(job, celery_app)
    return reaped


def unsent_jobs(session: Session, now: datetime, grace_s: float, resend_after_s: float) -> list[Job]:
    """Ready queued jobs, due to run, whose message never went out (`enqueued_at` NULL, made
    ready more than `grace_s` ago, so a sender still between its commit and its send is left
    alone) or went out more than `resend_after_s` ago without the job starting."""
    long_ago = now - timedelta(seconds=resend_after_s)
    candidates = session.scalars(sa.select(Job).where(
        Job.status == JobStatus.QUEUED.value, retry_due(now),
        Job.enqueued_at.is_(None) | (Job.enqueued_at < long_ago)).order_by(Job.id))
    return [job for job in candidates if is_ready(job) and (
        job.enqueued_at is not None or ready_since(job) < now - timedelta(seconds=grace_s))]


def ready_since(job: Job) -> datetime:
    """When a ready job became ready: its last change, or its dependency's finishing."""
    finished = job.depends_on.finished_at if job.depends_on is not None else None
    return max(job.updated_at, finished) if finished is not None else job.updated_at


def resend_unsent_jobs(session: Session, now: datetime | None = None, *,
                       grace_s: float | None = None, resend_after_s: float | None = None,
                       celery_app: Celery | None = None) -> list[int]:
    """Enqueue the `unsent_jobs` again; their ids. A duplicate delivery is harmless: a worker
    starts a job only through the queued -> running compare-and-set."""
    settings = get_settings()
    grace_s = settings.unsent_grace_s if grace_s is None else grace_s
    resend_after_s = settings.resend_after_s if resend_after_s is None else resend_after_s
    jobs = unsent_jobs(session, now or utc_now(), grace_s, resend_after_s)
    for job in jobs:
        logger.warning("job %s (%s) is ready but its message %s: sending it again", job.id,
                       job.kind, "was never sent" if job.enqueued_at is None else "is old")
        enqueue_job(job, celery_app)
    return [job.id for job in jobs]


def stranded_jobs(session: Session, now: datetime, stranded_after_s: float,
                  messages: BrokerMessages, max_running: int = 0) -> list[Job]:
    """Ready queued jobs, due to run, whose message went out more than `stranded_after_s`
    before `now`, that no message in the broker (`messages`, read before this query) will
    start, as they are now: their own message is not there, and their queue has no spare
    nudge left for them (`spare_nudges`). Jobs `max_running` holds back are not stranded:
    their owner's next job gets a nudge when a running one stops
    (fair_queue.nudge_after_slot_freed)."""
    sent_before = now - timedelta(seconds=stranded_after_s)
    candidates = session.scalars(sa.select(Job).where(
        Job.status == JobStatus.QUEUED.value, Job.enqueued_at < sent_before, retry_due(now))
        .order_by(Job.id).execution_options(populate_existing=True))
    in_broker = messages.job_ids
    missing = [job for job in candidates if job.id not in in_broker and is_ready(job)]
    stranded = []
    for queue in sorted({job.queue for job in missing}):
        held = held_back(session, queue, max_running)
        lacking = [job for job in missing
                   if job.queue == queue and job.experiment.owner_id not in held]
        stranded += lacking[spare_nudges(session, messages.waiting.get(queue, [])):]
    return sorted(stranded, key=lambda job: job.id)


def spare_nudges(session: Session, waiting: list[int]) -> int:
    """How many of a queue's waiting messages (their job ids) are not some queued job's
    own: those whose job started (another job's message started it: fair_queue), finished
    or is gone, and second copies. Each starts the next job in turn when delivered."""
    queued = set(session.scalars(sa.select(Job.id).where(
        Job.id.in_(set(waiting)), Job.status == JobStatus.QUEUED.value)))
    return len(waiting) - len(set(waiting) & queued)


def claim_resend(session: Session, job: Job) -> bool:
    """Compare-and-set on the `enqueued_at` that made `job` stranded (committed): of several
    reapers that found it in the same moment, one re-sends it; whether this one does. The
    winner's send records `enqueued_at` again; if the send fails, the job is stranded again
    `stranded_after_s` later."""
    claimed = session.execute(sa.update(Job).where(
        Job.id == job.id, Job.status == JobStatus.QUEUED.value,
        Job.enqueued_at == job.enqueued_at).values(enqueued_at=utc_now()))
    session.commit()
    return claimed.rowcount == 1


def resend_stranded_jobs(session: Session, now: datetime | None = None, *,
                         stranded_after_s: float | None = None,
                         celery_app: Celery | None = None) -> list[int] | None:
    """Enqueue the `stranded_jobs` again (default `stranded_after_s`: the settings'); their
    ids. None when the broker cannot be looked into or read: nothing is sent (a failure is
    logged), and `resend_unsent_jobs`'s `resend_after_s` is what re-sends lost messages."""
    app = celery_app or default_celery()
    stranded_after_s = (get_settings().stranded_after_s if stranded_after_s is None
                        else stranded_after_s)
    now = now or utc_now()   # before the broker is read: see the module docstring
    try:
        messages = read_broker_messages(app)
    except BrokerUnreadable as error:
        logger.warning("cannot read the broker to find stranded jobs (%s); messages lost in "
                       "it are re-sent after resend_after_s", error)
        return None
    if messages is None:
        return None
    resent = []
    max_running = get_settings().max_running_jobs_per_user
    for job in stranded_jobs(session, now, stranded_after_s, messages, max_running):
        if not claim_resend(session, job):
            continue   # started, re-sent or settled since the query
        logger.warning("job %s (%s) is queued but its message is no longer in the broker: "
                       "sending it again", job.id, job.kind)
        enqueue_job(job, app)
        resent.append(job.id)
    return resent


class Reaper:
    """Runs `reap_stale_jobs` and the resend passes every `interval_s` on a daemon thread."""

    def __init__(self, sessions: sessionmaker[Session], interval_s: float, timeout_s: float,
                 celery_app: Celery | None = None) -> None:
        self.sessions, self.interval_s, self.timeout_s = sessions, interval_s, timeout_s
        self.celery_app = celery_app
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drl-reaper", daemon=True)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                with self.sessions() as session:
                    reap_stale_jobs(session, timeout_s=self.timeout_s, celery_app=self.celery_app)
                    resend_unsent_jobs(session, celery_app=self.celery_app)
                    resend_stranded_jobs(session, celery_app=self.celery_app)
            except Exception:  # a database or broker outage must not end the reaper
                logger.exception("reaper pass failed; retrying in %.0f s", self.interval_s)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
