"""Faults a shared box sees every week, injected into real jobs: each trial must end with the
experiment succeeded, exactly one set of artifacts and no duplicate metric points.

- PostgreSQL connections terminated mid-training (`pg_terminate_backend`, repeatedly);
- PostgreSQL unreachable for 20 s and S3 down for 15 s (the worker reaches each through a
  proxy the test cuts: tests/fault_proxy.py);
- a full disk when a checkpoint is stored (writes to /dev/full: the kernel's ENOSPC), once
  (retried, succeeds) and for good (fails, saying "disk full"), then resumed by the user;
- sessions never idle in a transaction while a job trains;
- a stalled heartbeat while training goes on: the reaper re-queues the job, the first
  attempt's later writes are refused.

Redis restarted empty is in tests/test_stranded_jobs.py.
`DRL_FAULT_TRIALS=10` repeats the connection-termination trial (default 1) to measure it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from sqlalchemy.exc import OperationalError

from api.main import create_app
from drl_core.artifacts import (ArtifactStoreError, LocalArtifactStore, S3ArtifactStore,
                                build_store)
from drl_core.experiments import create_experiment
from drl_core.faults import FaultKind, classify
from drl_core.job_states import TERMINAL
from drl_core.models import Artifact, Job, MetricPoint
from drl_core.settings import Settings
from worker.context import WorkerResources
from worker.retries import backoff_s, give_up_error, plan_retry
from worker.tasks import run_job

pytest.register_assert_rewrite("worker_fixtures", "fault_proxy")
from fault_proxy import CuttableProxy  # noqa: E402
from worker_fixtures import (  # noqa: E402
    ServiceHarness,
    WorkerProcess,
    service_settings_for,
    tiny_spec,
    wait_for,
)

pytest_plugins = ["worker_fixtures"]

TRIALS = int(os.environ.get("DRL_FAULT_TRIALS", "1"))
# Long enough that a fault lands mid-training, short enough for the suite.
SPEC = tiny_spec(train={"iterations": 80, "checkpoint_every": 20, "log_every": 10})
# Backoff shorter than production's (5 s doubling to 300 s), but its 5 retries still span
# the longest outage here (2 + 4 + 8 + 8 + 8 s > 15 s); a heartbeat timeout well above the
# outages (as production's 120 s), so the retry, not the reaper, recovers.
FAULT_SETTINGS = {"transient_backoff_s": 2.0, "transient_backoff_max_s": 8.0,
                  "heartbeat_timeout_s": 60.0, "finish_patience_s": 60.0}


# --- classification of real errors --------------------------------------------------------


def closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raised_by(action) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - what it raised is the point
        return exc
    pytest.fail("expected an exception")


def test_disk_full_is_recognised_however_it_surfaces() -> None:
    def python_write() -> None:
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 10_000)
            f.flush()

    state = {"w": torch.zeros(100_000)}
    for exc in (raised_by(python_write),
                raised_by(lambda: torch.save(state, "/dev/full")),     # torch's own writer
                raised_by(lambda: torch.save(state, open("/dev/full", "wb")))):
        fault = classify(exc)
        assert fault is not None and fault.kind is FaultKind.DISK_FULL, repr(exc)
        assert fault.describe().startswith("disk full: ")


def test_outages_are_transient_and_bugs_are_not(tmp_path: Path) -> None:
    port = closed_port()
    database = raised_by(lambda: sa.create_engine(
        f"postgresql+psycopg://x@127.0.0.1:{port}/x").connect())
    assert isinstance(database, OperationalError)
    broker = raised_by(lambda: redis.Redis(port=port, socket_connect_timeout=1).ping())
    s3 = raised_by(lambda: S3ArtifactStore(f"127.0.0.1:{port}", "k", "s", "bucket").get_bytes("a"))
    assert isinstance(s3, ArtifactStoreError) and s3.transient

    assert classify(database).kind is FaultKind.DATABASE
    assert classify(broker) is not None       # redis-py's ConnectionError
    assert classify(s3).kind is FaultKind.ARTIFACT_STORE
    # A wrapped one is found behind its wrapper.
    try:
        try:
            raise database
        except OperationalError as inner:
            raise RuntimeError("saving metrics failed") from inner
    except RuntimeError as outer:
        assert classify(outer).kind is FaultKind.DATABASE
    # A bug, bad data or a misconfigured store is not retried.
    assert classify(ValueError("shapes do not match")) is None
    assert classify(KeyError("t")) is None
    assert classify(ArtifactStoreError("bucket does not exist")) is None
    root = tmp_path / "file"
    root.write_text("")
    assert classify(raised_by(lambda: LocalArtifactStore(root / "sub").put_bytes("a", b""))) is None


def test_retries_back_off_and_run_out() -> None:
    settings = Settings(transient_retry_budget=3, transient_backoff_s=5, transient_backoff_max_s=12)
    assert [backoff_s(settings, n) for n in (1, 2, 3, 4)] == [5, 10, 12, 12]
    full = OSError(errno.ENOSPC, "No space left on device", "/data/ckpt.pt")
    fault, retry = plan_retry(full, 0, settings)
    assert retry is not None and (retry.number, retry.delay_s) == (1, 5)
    assert "retry 1 of 3 in 5 s" in retry.log_line(1) and "disk full" in retry.log_line(1)
    fault, retry = plan_retry(full, 3, settings)
    assert retry is None and fault is not None
    assert give_up_error(fault, 3).startswith("disk full: no space left on the device writing "
                                              "/data/ckpt.pt")
    assert plan_retry(ValueError("bug"), 0, settings) == (None, None)


# --- a full disk, in the job's process ----------------------------------------------------


class FillingStore(LocalArtifactStore):
    """A local store whose disk is full for its first `full_writes` checkpoint writes: they
    go to /dev/full, so the kernel itself answers ENOSPC."""

    def __init__(self, root: Path, full_writes: int) -> None:
        super().__init__(root)
        self.full_writes = full_writes

    def put_file(self, key, path, *args, **kwargs):
        if "checkpoints/" in key and self.full_writes > 0:
            self.full_writes -= 1
            with open(path, "rb") as source:
                data = source.read()
            try:
                with open("/dev/full", "wb") as full:
                    full.write(data)
                    full.flush()
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(self.root / key)) from exc
        return super().put_file(key, path, *args, **kwargs)


@pytest.fixture
def in_process(pg_url: str, tmp_path: Path, monkeypatch) -> Iterator[tuple[Settings, WorkerResources]]:
    """Settings and a job process's resources on the module's database and a local store,
    with the embedded filesystem queue (nothing consumes it: run_job is called here)."""
    settings = service_settings_for(pg_url, tmp_path / "home", None, broker_url=None,
                                    **FAULT_SETTINGS)
    for name, value in settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(f"DRL_{name.upper()}", str(value))
    from drl_core.settings import get_settings
    get_settings.cache_clear()
    resources = WorkerResources(settings)
    yield settings, resources
    resources.dispose()
    get_settings.cache_clear()


def run_until_settled(resources: WorkerResources, job_id: int, limit: int = 10) -> list[str]:
    """run_job again while the job is queued (a retry), as the delayed message would."""
    outcomes = []
    for _ in range(limit):
        outcomes.append(run_job(job_id, resources))
        with resources.sessions() as session:
            if session.get(Job, job_id).status != "queued":
                return outcomes
    return outcomes


def test_a_disk_full_once_is_retried_and_resumes(in_process) -> None:
    settings, resources = in_process
    resources._store = FillingStore(settings.resolved_artifact_dir, full_writes=1)
    with resources.sessions() as session:
        experiment, _ = create_experiment(session, SPEC, None, None)
        train_id = experiment.jobs[0].id

    assert run_until_settled(resources, train_id) == ["retrying", "succeeded"]
    with resources.sessions() as session:
        train = session.get(Job, train_id)
        assert (train.status, train.attempt, train.transient_retries) == ("succeeded", 1, 1)
        assert any("stopped by a transient fault (disk full: no space left on the device"
                   in line for line in train.log_tail), train.log_tail
        steps = session.scalars(sa.select(MetricPoint.step).where(
            MetricPoint.job_id == train_id, MetricPoint.key == "loss")).all()
    assert sorted(steps) == list(range(10, 81, 10))


def test_a_disk_that_stays_full_fails_saying_so_and_the_user_resumes(in_process) -> None:
    settings, resources = in_process
    budget = settings.transient_retry_budget
    store = resources._store = FillingStore(settings.resolved_artifact_dir, full_writes=10**6)
    with resources.sessions() as session:
        experiment, _ = create_experiment(session, SPEC, None, None)
        experiment_id, train_id = experiment.id, experiment.jobs[0].id

    outcomes = run_until_settled(resources, train_id, limit=budget + 2)
    assert outcomes == ["retrying"] * budget + ["failed"]
    with resources.sessions() as session:
        train = session.get(Job, train_id)
        assert train.error.startswith("disk full: no space left on the device writing ")
        assert train.error.endswith(f"gave up after {budget} retries")
        assert all(j.status == "failed" for j in session.get(Job, train_id).experiment.jobs)

    # Space is freed; the user resumes: a new attempt, from nothing stored (no checkpoint
    # got through), then the whole pipeline.
    store.full_writes = 0
    client = TestClient(create_app(settings))
    response = client.post(f"/experiments/{experiment_id}/resume")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and all(j["status"] == "queued" for j in body["jobs"])
    assert client.post(f"/experiments/{experiment_id}/resume").status_code == 409

    for job in body["jobs"]:
        assert run_until_settled(resources, job["id"]) == ["succeeded"]
    with resources.sessions() as session:
        train = session.get(Job, train_id)
        assert (train.attempt, train.transient_retries, train.error) == (2, 0, None)
    finished = client.get(f"/experiments/{experiment_id}").json()
    assert finished["status"] == "succeeded"


def test_a_stalled_heartbeat_while_training_goes_on(in_process, monkeypatch) -> None:
    """The first attempt's heartbeats stop landing (a hung heartbeat thread) while it keeps
    training; the reaper re-queues the job and a second attempt runs it. The first attempt's
    later writes are refused by the database, so the job ends with one set of artifacts and
    one point per step (was: two copies wrote for a minute, 150 duplicate points)."""
    import threading

    from worker.context import Heartbeat
    from worker.reaper import reap_stale_jobs

    settings, resources = in_process
    beat = Heartbeat.beat
    monkeypatch.setattr(Heartbeat, "beat", lambda self: None if self.attempt == 1 else beat(self))
    with resources.sessions() as session:
        experiment, _ = create_experiment(session, SPEC, None, None)
        experiment_id, train_id = experiment.id, experiment.jobs[0].id

    outcomes: dict[int, str] = {}
    first = threading.Thread(target=lambda: outcomes.update({1: run_job(train_id, resources)}))
    first.start()

    def logged_step() -> int:
        with resources.sessions() as session:
            return session.scalar(sa.select(sa.func.max(MetricPoint.step)).where(
                MetricPoint.job_id == train_id)) or 0

    wait_for(lambda: logged_step() >= 20, 90, "the first attempt to log step 20")
    with resources.sessions() as session:
        assert reap_stale_jobs(session, timeout_s=0.5) == [train_id]
    outcomes[2] = run_job(train_id, resources)
    first.join(60)
    assert outcomes == {1: "lost", 2: "succeeded"}

    with resources.sessions() as session:
        train = session.get(Job, train_id)
        assert (train.status, train.attempt) == ("succeeded", 2)
        steps = session.scalars(sa.select(MetricPoint.step).where(
            MetricPoint.job_id == train_id, MetricPoint.key == "loss")).all()
        keys = session.scalars(sa.select(Artifact.key).where(
            Artifact.experiment_id == experiment_id)).all()
    assert sorted(steps) == list(range(10, 81, 10))
    assert sorted(keys) == resources.store.list(f"experiments/{experiment_id}/")


# --- outages around a real worker ------------------------------------------------------------


@pytest.fixture
def harness(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[ServiceHarness]:
    """A harness on a broker prefix of this test's own (its own workers alone take its jobs)."""
    prefix = f"drl-test-{uuid.uuid4().hex[:12]}:"
    settings = service_settings_for(pg_url, tmp_path / "home", prefix, broker_url=redis_url,
                                    **FAULT_SETTINGS)
    service = ServiceHarness(settings, tmp_path)
    yield service
    service.close()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)


def start_worker(service: ServiceHarness, settings: Settings, name: str) -> WorkerProcess:
    worker = WorkerProcess(settings, service.log_dir / f"{name}.log")
    service._started.append(worker)   # stopped with the harness
    return worker.start()


def create(service: ServiceHarness) -> int:
    with service.sessions() as session:
        experiment, _ = create_experiment(session, SPEC, None, None, celery_app=service.celery_app)
        return experiment.id


def train_step(service: ServiceHarness, experiment_id: int) -> int:
    train = service.jobs(experiment_id)[0]
    assert train.status in ("queued", "running"), (train.status, train.error)
    return train.step or 0


def wait_finished(service: ServiceHarness, experiment_id: int, worker: WorkerProcess,
                  timeout: float = 180.0) -> list[Job]:
    def finished() -> list[Job] | None:
        jobs = service.jobs(experiment_id)
        return jobs if all(j.status in TERMINAL for j in jobs) else None
    try:
        return wait_for(finished, timeout, f"experiment {experiment_id} to finish")
    except pytest.fail.Exception:
        states = [(j.kind, j.status, j.step, j.error) for j in service.jobs(experiment_id)]
        pytest.fail(f"{states}\n{worker.log_text()[-4000:]}", pytrace=False)


def assert_whole_and_unique(service: ServiceHarness, experiment_id: int) -> list[Job]:
    """Every job succeeded; one row per artifact key and its file; one point per (job, key,
    step); the loss recorded at every logged step."""
    jobs = service.jobs(experiment_id)
    assert [j.status for j in jobs] == ["succeeded"] * 4, [(j.kind, j.error) for j in jobs]
    with service.sessions() as session:
        keys = session.scalars(sa.select(Artifact.key).where(
            Artifact.experiment_id == experiment_id)).all()
        duplicates = session.execute(
            sa.select(MetricPoint.job_id, MetricPoint.key, MetricPoint.step, sa.func.count())
            .where(MetricPoint.experiment_id == experiment_id)
            .group_by(MetricPoint.job_id, MetricPoint.key, MetricPoint.step)
            .having(sa.func.count() > 1)).all()
        losses = session.scalars(sa.select(MetricPoint.step).where(
            MetricPoint.job_id == jobs[0].id, MetricPoint.key == "loss")
            .order_by(MetricPoint.step)).all()
    assert len(keys) == len(set(keys)) and duplicates == []
    assert sorted(keys) == service.store.list(f"experiments/{experiment_id}/")
    assert list(losses) == list(range(10, 81, 10))
    return jobs


IDLE_IN_TRANSACTION = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND state = 'idle in transaction' AND now() - state_change > interval '2 seconds'")
TERMINATE_OTHERS = sa.text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_terminated_database_connections_mid_training(harness: ServiceHarness, trial: int) -> None:
    worker = start_worker(harness, harness.settings, "worker")
    experiment_id = create(harness)
    wait_for(lambda: train_step(harness, experiment_id) >= 20, 90, "training to pass step 20")

    # No session of the job sits idle in a transaction while it trains (a connection held,
    # and a snapshot that keeps PostgreSQL from vacuuming, for hours on a real run).
    with harness.engine.connect() as connection:
        for _ in range(5):
            assert connection.execute(IDLE_IN_TRANSACTION).scalar() == 0
            time.sleep(0.5)

    terminated = 0
    with harness.engine.connect() as connection:
        for _ in range(6):   # a few, so one lands inside a transaction of the job's
            terminated += connection.execute(TERMINATE_OTHERS).scalar()
            connection.commit()
            time.sleep(0.4)
    assert terminated > 0
    wait_finished(harness, experiment_id, worker)
    jobs = assert_whole_and_unique(harness, experiment_id)
    logging.getLogger(__name__).warning(
        "trial %s: %s connections terminated; train attempt %s, %s transient retries",
        trial, terminated, jobs[0].attempt, jobs[0].transient_retries)


def run_through_outage(harness: ServiceHarness, worker_settings: Settings,
                       proxy: CuttableProxy, seconds: float) -> list[Job]:
    """A worker on `worker_settings` (reaching a server through `proxy`) trains; once past
    step 20 (a checkpoint stored) the proxy is cut for `seconds`. Returns the jobs, checked
    by `assert_whole_and_unique`."""
    try:
        worker = start_worker(harness, worker_settings, "worker-via-proxy")
        experiment_id = create(harness)
        wait_for(lambda: train_step(harness, experiment_id) >= 20, 90, "training to pass step 20")
        with proxy.outage():
            time.sleep(seconds)
        wait_finished(harness, experiment_id, worker)
    finally:
        proxy.close()
    return assert_whole_and_unique(harness, experiment_id)


def test_database_unreachable_for_20_seconds(harness: ServiceHarness, pg_url: str) -> None:
    url = sa.make_url(pg_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = harness.settings.model_copy(update={
        "database_url": url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)})
    train = run_through_outage(harness, proxied, proxy, 20)[0]
    # Recovered by a retry of the same attempt (the reaper's heartbeat timeout is 60 s).
    assert train.attempt == 1 and train.transient_retries >= 1, train.log_tail
    assert any("transient fault (database" in line for line in train.log_tail), train.log_tail


@pytest.fixture
def moto_endpoint() -> Iterator[tuple[str, int]]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()
    server.stop()


def test_s3_down_for_15_seconds(harness: ServiceHarness, moto_endpoint: tuple[str, int]) -> None:
    host, port = moto_endpoint
    proxy = CuttableProxy(host, port)
    harness.settings = harness.settings.model_copy(update={
        "artifact_backend": "s3", "s3_endpoint": f"{host}:{port}", "s3_access_key": "testing",
        "s3_secret_key": "testing", "s3_bucket": f"drl-test-{uuid.uuid4().hex[:8]}",
        "s3_secure": False})
    harness.store = build_store(harness.settings)   # the test reads through no proxy
    proxied = harness.settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{proxy.port}"})
    train = run_through_outage(harness, proxied, proxy, 15)[0]
    assert train.attempt == 1, train.log_tail
