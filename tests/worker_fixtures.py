"""Service fixtures: a real Celery worker process on real PostgreSQL and Redis.

Use from a test module with `pytest_plugins = ["worker_fixtures"]` (db_fixtures is loaded by
conftest). What a module gets:

- `broker_prefix`: a Redis key prefix of this module's own (`drl-test-<hex>:`), so test runs
  sharing the Redis at $DRL_TEST_REDIS_URL (default redis://127.0.0.1:6379/0) never take
  each other's tasks; its keys are deleted at the end. Redis unreachable -> the tests FAIL.
- `service_settings`: Settings for the module's PostgreSQL database (`pg_url`), that Redis
  prefix, a local artifact store under a temporary folder, and short supervision times
  (heartbeat every 0.3 s, lost after 5 s, reaper every 1 s).
- `service`: a `ServiceHarness` on those settings: sessions, the store, the producer's
  Celery app, and `service.worker`, a worker subprocess started on first use and shared by
  the module's tests (`kill_worker()` SIGKILLs it; the next `service.worker` starts a new
  one; `terminate_worker()` SIGTERMs it, Celery's warm shutdown). Its log:
  `service.worker.log_text()`.

The worker command is the contract's: `celery -A worker.celery_app:celery_app worker -Q
gpu,cpu --concurrency 1 --prefetch-multiplier 1 --pool prefork`, configured by DRL_*
environment variables (`settings_env`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from drl_core.artifacts import ArtifactStore, build_store
from drl_core.broker_messages import run_job_id
from drl_core.db import make_engine, session_factory
from drl_core.job_states import TERMINAL, derive_experiment_status
from drl_core.models import Experiment, Job
from drl_core.queue import filesystem_queue_dir, make_celery
from drl_core.settings import Settings
from drl_engine.spec import ExperimentSpec, parse_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("DRL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The contract's tiny training: seconds on 2 CPU cores, every stage exercised.
TINY_SPEC: dict[str, Any] = {
    "dataset": {"name": "digits", "train_limit": 300, "test_limit": 100},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [], "latent_dim": 4},
    "train": {"iterations": 30, "batch_size": 16, "warmup": 10, "checkpoint_every": 20,
              "log_every": 10, "device": "cpu"},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 200},
    "sample": {"sampler": "pc", "steps": 10, "count": 4},
}

T = TypeVar("T")


def tiny_spec(**sections: dict[str, Any]) -> ExperimentSpec:
    """TINY_SPEC with the given sections' fields overridden, e.g. train={"iterations": 60}."""
    spec = json.loads(json.dumps(TINY_SPEC))
    for name, values in sections.items():
        spec.setdefault(name, {}).update(values)
    return parse_spec(spec)


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


# --- settings and the worker process ----------------------------------------------------


def service_settings_for(database_url: str, home: Path, broker_prefix: str | None,
                         broker_url: str | None = REDIS_URL, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home, "database_url": database_url, "broker_url": broker_url,
        "broker_key_prefix": broker_prefix, "artifact_backend": "local",
        "artifact_dir": home / "artifacts", "heartbeat_interval_s": 0.3,
        "heartbeat_timeout_s": 5.0, "reaper_interval_s": 1.0, "max_attempts": 3,
        "torch_threads": 1,
    }
    return Settings(**(values | overrides))


def settings_env(settings: Settings) -> dict[str, str]:
    """The DRL_* environment that makes a subprocess's Settings() equal `settings`."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"DRL_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """A `celery ... worker` subprocess in its own process group (so SIGKILL reaches the
    pool process running the job too), logging to `log_path`."""

    def __init__(self, settings: Settings, log_path: Path, queues: str = "gpu,cpu") -> None:
        self.settings, self.log_path, self.queues = settings, log_path, queues
        self.name = f"drl-test-{uuid.uuid4().hex[:8]}@%h"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DRL_")}
        env |= settings_env(self.settings)
        if "DRL_DATA_DIR" in os.environ:
            env["DRL_DATA_DIR"] = os.environ["DRL_DATA_DIR"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                   "-Q", self.queues, "--concurrency", "1", "--prefetch-multiplier", "1",
                   "--pool", "prefork", "--hostname", self.name, "--loglevel", "INFO",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self._ready_or_dead(), timeout, f"the worker to start (log: {self.log_path})")
        if not self.alive:
            pytest.fail(f"the worker exited at start:\n{self.log_text()[-3000:]}", pytrace=False)
        return self

    def _ready_or_dead(self) -> bool:
        return not self.alive or " ready." in self.log_text()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool process at once: a machine that died."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM to the worker's main process alone, as `docker compose stop` sends it (Celery's
        warm shutdown); waits for it to exit and returns how long that took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the worker did not stop within {timeout:.0f} s of SIGTERM:\n"
                        f"{self.log_text()[-3000:]}", pytrace=False)
        return time.monotonic() - started

    def stop(self, timeout: float = 15.0) -> None:
        """Cold shutdown (SIGQUIT: running jobs are not waited for), SIGKILL if it hangs."""
        if not self.alive:
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGQUIT)
            self.process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()


class ServiceHarness:
    """The database, store and broker of one test module, and its worker process(es)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.engine = make_engine(settings.resolved_database_url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.store: ArtifactStore = build_store(settings)
        self.celery_app: Celery = make_celery(settings)
        self._worker: WorkerProcess | None = None
        self._started: list[WorkerProcess] = []

    @property
    def worker(self) -> WorkerProcess:
        """The module's worker, started if there is none alive."""
        if self._worker is None or not self._worker.alive:
            self._worker = self.start_worker()
        return self._worker

    def start_worker(self, queues: str = "gpu,cpu") -> WorkerProcess:
        index = len(self._started)
        worker = WorkerProcess(self.settings, self.log_dir / f"worker-{index}.log", queues)
        self._started.append(worker)
        return worker.start()

    def kill_worker(self) -> WorkerProcess:
        """SIGKILL the current worker; the next `worker` access starts a new one."""
        worker = self.worker
        worker.kill()
        self._worker = None
        return worker

    def terminate_worker(self) -> WorkerProcess:
        """SIGTERM the current worker and wait for it; the next `worker` access starts a new one."""
        worker = self.worker
        worker.terminate()
        self._worker = None
        return worker

    def close(self) -> None:
        for worker in self._started:
            worker.stop()
        self.celery_app.close()
        self.engine.dispose()

    # -- reading state ---------------------------------------------------------------------

    def jobs(self, experiment_id: int) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(
                sa.select(Job).where(Job.experiment_id == experiment_id).order_by(Job.id)))

    def job(self, job_id: int) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None, f"job {job_id} does not exist"
            return job

    def experiment_status(self, experiment_id: int) -> str:
        return derive_experiment_status(j.status for j in self.jobs(experiment_id)).value

    def wait_until_finished(self, experiment_id: int, timeout: float = 120.0) -> list[Job]:
        """Wait until every job of the experiment is terminal; returns the jobs."""
        self.worker  # noqa: B018 - make sure someone is working on it

        def finished() -> list[Job] | None:
            jobs = self.jobs(experiment_id)
            return jobs if jobs and all(j.status in TERMINAL for j in jobs) else None

        try:
            return wait_for(finished, timeout, f"experiment {experiment_id} to finish")
        except pytest.fail.Exception:
            states = [(j.id, j.kind, j.status, j.step, j.error) for j in self.jobs(experiment_id)]
            tail = self._worker.log_text()[-4000:] if self._worker else ""
            pytest.fail(f"experiment {experiment_id} did not finish: {states}\nworker log:\n{tail}",
                        pytrace=False)

    def experiment(self, experiment_id: int) -> Experiment:
        with self.sessions() as session:
            experiment = session.get(Experiment, experiment_id)
            assert experiment is not None
            return experiment


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({error}); start it (e.g. "
                    "`redis-server --daemonize yes`) or set DRL_TEST_REDIS_URL", pytrace=False)
    return REDIS_URL


@pytest.fixture(scope="module")
def broker_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"drl-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def service_settings(pg_url: str, broker_prefix: str, redis_url: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("drl_home")
    return service_settings_for(pg_url, home, broker_prefix, broker_url=redis_url)


@pytest.fixture(scope="module")
def service(service_settings: Settings,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHarness]:
    harness = ServiceHarness(service_settings, tmp_path_factory.mktemp("worker_logs"))
    yield harness
    harness.close()


# --- the embedded (filesystem) queue, for tests that only look at what was enqueued -----


def filesystem_celery(home: Path) -> tuple[Celery, Settings]:
    """A Celery app on the embedded filesystem transport under `home` (no worker reads it)."""
    settings = Settings(home=home, broker_url=None)
    return make_celery(settings), settings


def queued_job_ids(settings: Settings, queue: str) -> list[int]:
    """The job ids of the `drl.run_job` messages waiting in `queue` of the filesystem
    transport, sorted (the transport orders files by millisecond, so messages sent within
    one millisecond have no reliable order)."""
    folder = filesystem_queue_dir(settings)
    ids = []
    for path in sorted(folder.glob(f"*.{queue}.msg")):
        job_id = run_job_id(json.loads(path.read_text()))
        assert job_id is not None, f"{path.name} is not a drl.run_job message"
        ids.append(job_id)
    return sorted(ids)
