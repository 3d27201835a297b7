"""Stranded jobs: queued, their message sent, and the message gone from the broker (a Redis
restarted without its data). The reaper's `resend_stranded_jobs` asks the broker which jobs it
holds a message for (drl_core/broker_messages.py) and re-sends each missing one once; a
backlog whose messages are there gets nothing, however long it waits.

Real PostgreSQL; the real Redis (a key prefix of each test's own) or the filesystem transport
in a temporary folder; and, end to end, a redis-server of the test's own, restarted empty
under a real worker process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from drl_core.broker_messages import read_broker_messages, run_job_id, run_job_ids_in_broker
from drl_core.db import session_factory
from drl_core.experiments import create_experiment
from drl_core.job_states import JobStatus, transition, utc_now
from drl_core.models import Job
from drl_core.queue import make_celery
from drl_core.settings import Settings
from worker.reaper import claim_resend, resend_stranded_jobs, stranded_jobs

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import (  # noqa: E402
    ServiceHarness,
    filesystem_celery,
    queued_job_ids,
    service_settings_for,
    tiny_spec,
    wait_for,
)

pytest_plugins = ["worker_fixtures"]

STRANDED_AFTER_S = 20.0
# Late enough that every job sent in the test is past the grace.
LATER = timedelta(seconds=STRANDED_AFTER_S + 1)


def create_training(session: Session, celery_app: Celery) -> Job:
    """A new experiment's training job, queued with its message sent."""
    experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=celery_app)
    train = experiment.jobs[0]
    assert train.status == JobStatus.QUEUED and train.enqueued_at is not None
    return train


def resend(session: Session, celery_app: Celery, after: timedelta = LATER) -> list[int] | None:
    return resend_stranded_jobs(session, utc_now() + after, stranded_after_s=STRANDED_AFTER_S,
                                celery_app=celery_app)


# --- Redis -------------------------------------------------------------------------------


class PrefixedRedisQueue:
    """A producer on the shared Redis under a key prefix of one test's own."""

    def __init__(self, redis_url: str, home: Path) -> None:
        self.prefix = f"drl-test-{uuid.uuid4().hex[:12]}:"
        self.settings = Settings(home=home, broker_url=redis_url, broker_key_prefix=self.prefix)
        self.celery_app = make_celery(self.settings)
        self.client = redis.Redis.from_url(redis_url)

    def keys(self) -> list[bytes]:
        return list(self.client.scan_iter(match=f"{self.prefix}*", count=500))

    def lose_everything(self) -> None:
        """What a Redis restarted without its data looks like to this prefix."""
        if keys := self.keys():
            self.client.delete(*keys)

    def waiting(self, queue: str) -> int:
        return self.client.llen(self.prefix + queue)

    def close(self) -> None:
        self.lose_everything()
        self.celery_app.close()
        self.client.close()


@pytest.fixture
def redis_queue(redis_url: str, tmp_path: Path) -> Iterator[PrefixedRedisQueue]:
    queue = PrefixedRedisQueue(redis_url, tmp_path / "home")
    yield queue
    queue.close()


def test_redis_a_lost_message_is_sent_again_once(pg_session: Session,
                                                 redis_queue: PrefixedRedisQueue) -> None:
    app = redis_queue.celery_app
    train = create_training(pg_session, app)
    # Messages that are not ours, or not messages, stand for no job.
    redis_queue.client.lpush(redis_queue.prefix + "cpu", b"not json", b'{"headers": {}}')
    assert run_job_ids_in_broker(app) == {train.id}
    assert resend(pg_session, app) == []                   # its message is there

    redis_queue.lose_everything()
    assert run_job_ids_in_broker(app) == set()
    assert resend(pg_session, app, after=timedelta(0)) == []   # just sent: within the grace
    assert resend(pg_session, app) == [train.id]
    assert run_job_ids_in_broker(app) == {train.id} and redis_queue.waiting("gpu") == 1
    # The pass right after (and any later one) finds the new message: no second copy.
    assert resend(pg_session, app) == []
    assert resend(pg_session, app, after=timedelta(hours=5)) == []
    assert redis_queue.waiting("gpu") == 1


def test_redis_a_message_a_worker_holds_unacknowledged_is_present(
        pg_session: Session, redis_queue: PrefixedRedisQueue) -> None:
    """With acks_late a reserved (or running) job's message sits in kombu's `unacked` hash,
    out of the queue's list: it is not lost."""
    app = redis_queue.celery_app
    train = create_training(pg_session, app)
    with app.connection_for_read() as connection:
        message = connection.default_channel.basic_get("gpu", no_ack=False)
        assert message is not None and redis_queue.waiting("gpu") == 0
        assert run_job_ids_in_broker(app) == {train.id}
        assert resend(pg_session, app) == []
        message.ack()
    assert run_job_ids_in_broker(app) == set()    # acknowledged: gone, and the job ...
    assert resend(pg_session, app) == [train.id]  # ... still queued: its message was lost


def test_redis_a_backlog_whose_messages_are_there_is_never_resent(
        pg_session: Session, redis_queue: PrefixedRedisQueue) -> None:
    """Jobs waiting for a free worker for hours keep their one message each."""
    app = redis_queue.celery_app
    backlog = sorted(create_training(pg_session, app).id for _ in range(3))
    assert run_job_ids_in_broker(app) == set(backlog)
    for hours in (1, 2, 10):
        assert resend(pg_session, app, after=timedelta(hours=hours)) == []
    assert redis_queue.waiting("gpu") == 3


def test_a_message_that_started_another_job_stands_for_the_job_it_named(
        pg_session: Session, redis_queue: PrefixedRedisQueue) -> None:
    """A message starts whichever job's turn it is (drl_core/fair_queue.py): the first job's
    message started the second, whose own message still waits. The first has no message of
    its own, but the waiting one will start it: nothing is re-sent, until that one is lost."""
    app = redis_queue.celery_app
    first, second = create_training(pg_session, app), create_training(pg_session, app)
    with app.connection_for_read() as connection:
        message = connection.default_channel.basic_get("gpu", no_ack=False)
        transition(pg_session, second, JobStatus.RUNNING, worker="w:1")
        pg_session.commit()
        message.ack()
    messages = read_broker_messages(app)
    assert messages is not None
    assert (messages.waiting, messages.held) == ({"gpu": [second.id], "cpu": []}, [])
    assert resend(pg_session, app, after=timedelta(hours=2)) == []
    redis_queue.lose_everything()
    assert resend(pg_session, app) == [first.id]
    assert resend(pg_session, app) == []


def test_jobs_the_running_limit_holds_back_are_not_stranded(
        pg_session: Session, redis_queue: PrefixedRedisQueue) -> None:
    """Their owner runs as many jobs as `max_running_jobs_per_user` allows: a message for
    them found nothing to start and was dropped. They get a nudge when a running one stops
    (fair_queue.nudge_after_slot_freed), not one every reaper pass."""
    app = redis_queue.celery_app
    running, waiting = create_training(pg_session, app), create_training(pg_session, app)
    transition(pg_session, running, JobStatus.RUNNING, worker="w:1")
    pg_session.commit()
    redis_queue.lose_everything()
    messages = read_broker_messages(app)
    later = utc_now() + LATER
    for max_running, stranded in ((1, []), (2, [waiting.id]), (0, [waiting.id])):
        found = stranded_jobs(pg_session, later, STRANDED_AFTER_S, messages, max_running)
        assert [job.id for job in found] == stranded, max_running


def test_jobs_that_are_not_ready_or_wait_for_a_retry_are_not_resent(
        pg_session: Session, redis_queue: PrefixedRedisQueue) -> None:
    """Encode waits for training (never sent: `resend_unsent_jobs`'s case, not this pass's);
    a job re-queued after a transient fault waits for its `retry_at`."""
    app = redis_queue.celery_app
    train = create_training(pg_session, app)
    redis_queue.lose_everything()
    in_an_hour = utc_now() + timedelta(hours=1)
    pg_session.execute(sa.update(Job).where(Job.id == train.id).values(retry_at=in_an_hour))
    pg_session.commit()
    assert resend(pg_session, app) == []
    assert resend(pg_session, app, after=timedelta(hours=1, seconds=1)) == [train.id]


def test_of_two_reapers_that_find_one_stranded_job_one_sends_it(
        pg_engine: sa.Engine, redis_queue: PrefixedRedisQueue) -> None:
    sessions = session_factory(pg_engine)
    with sessions() as first, sessions() as second:
        train_id = create_training(first, redis_queue.celery_app).id
        seen_by_first, seen_by_second = first.get(Job, train_id), second.get(Job, train_id)
        assert claim_resend(first, seen_by_first)
        assert not claim_resend(second, seen_by_second)


def test_a_broker_that_cannot_be_read_gets_nothing_sent(
        pg_session: Session, redis_queue: PrefixedRedisQueue, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis down: the pass logs once and sends nothing (`resend_after_s` is the fallback);
    the reaper goes on."""
    create_training(pg_session, redis_queue.celery_app)
    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = make_celery(Settings(home=tmp_path / "down",
                                broker_url=f"redis://127.0.0.1:{closed_port}/0"))
    with caplog.at_level(logging.WARNING, logger="drl.reaper"):
        assert resend(pg_session, down) is None
    assert sum("cannot read the broker" in r.getMessage() for r in caplog.records) == 1
    # A transport nobody looks into: nothing sent, nothing logged.
    caplog.clear()
    other = make_celery(Settings(home=tmp_path / "other", broker_url="memory://localhost/"))
    assert resend(pg_session, other) is None and not caplog.records


# --- the filesystem transport (embedded mode) --------------------------------------------


def test_filesystem_a_lost_message_is_sent_again_once_and_a_backlog_never(
        pg_session: Session, tmp_path: Path) -> None:
    app, settings = filesystem_celery(tmp_path / "home")
    lost, waiting = create_training(pg_session, app), create_training(pg_session, app)
    assert run_job_ids_in_broker(app) == {lost.id, waiting.id}
    assert resend(pg_session, app, after=timedelta(hours=2)) == []

    (message_file,) = [path for path in (tmp_path / "home" / "queue").glob("*.gpu.msg")
                       if run_job_id(json.loads(path.read_bytes())) == lost.id]
    message_file.unlink()    # a worker took it and died before starting the job
    assert run_job_ids_in_broker(app) == {waiting.id}
    assert resend(pg_session, app) == [lost.id]
    assert resend(pg_session, app) == []
    assert queued_job_ids(settings, "gpu") == sorted([lost.id, waiting.id])


# --- end to end: a redis-server restarted empty under a worker ---------------------------


class RedisServer:
    """A redis-server subprocess of the test's own, keeping nothing on disk, so that a restart
    loses every key as a broker without persistence does."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 20, f"redis-server on port {self.port}", interval=0.05)

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (this test starts and restarts its own)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = RedisServer(binary, tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.usefixtures("pg_engine")   # (its tables are emptied afterwards)
def test_after_a_broker_restart_a_queued_job_runs_within_a_minute(
        pg_url: str, tmp_path: Path, throwaway_redis: RedisServer) -> None:
    """The issue's case: an idle worker, a queued job whose message is in Redis, Redis
    restarted without its data. The worker reconnects and its reaper re-sends the job once."""
    settings = service_settings_for(pg_url, tmp_path / "home", None,
                                    broker_url=throwaway_redis.url, reaper_interval_s=2.0,
                                    stranded_after_s=5.0)
    harness = ServiceHarness(settings, tmp_path)
    try:
        worker = harness.worker
        assert worker.process is not None
        # Frozen, the worker takes no message: its last BRPOP (1 s) ends unanswered.
        os.killpg(worker.process.pid, signal.SIGSTOP)
        time.sleep(2.5)
        with harness.sessions() as session:
            train_id = create_training(session, harness.celery_app).id
        assert run_job_ids_in_broker(harness.celery_app) == {train_id}

        throwaway_redis.restart_empty()
        restarted = time.monotonic()
        assert run_job_ids_in_broker(harness.celery_app) == set()
        os.killpg(worker.process.pid, signal.SIGCONT)

        started = {JobStatus.RUNNING, JobStatus.SUCCEEDED}
        wait_for(lambda: harness.job(train_id).status in started, 60,
                 f"job {train_id} to run after the restart (worker log: {worker.log_path})")
        took = time.monotonic() - restarted
        print(f"broker restart -> job {train_id} running: {took:.1f} s")
        job = harness.job(train_id)
        assert job.attempt == 1 and job.worker
        resent = f"job {train_id} (train) is queued but its message is no longer in the broker"
        assert worker.log_text().count(resent) == 1, worker.log_text()[-3000:]
    finally:
        harness.close()
