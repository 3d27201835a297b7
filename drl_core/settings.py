"""Settings: one class, env prefix `DRL_` (e.g. DRL_DATABASE_URL, DRL_ARTIFACT_BACKEND).

The defaults are the embedded mode: everything under `DRL_HOME` (default ~/.drl) with SQLite,
a local artifact directory and a filesystem Celery transport, so `drl serve` needs nothing but
pip. docker compose overrides them to Postgres, Redis and MinIO.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".drl")

    # Database; None = SQLite file under `home`.
    database_url: str | None = None

    # Celery broker; None = filesystem transport under `home` (embedded mode).
    broker_url: str | None = None

    # Artifact store.
    artifact_backend: Literal["local", "s3"] = "local"
    artifact_dir: Path | None = None      # local backend; None = `home`/artifacts
    s3_endpoint: str = "127.0.0.1:9000"   # host:port, as the minio client takes it
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_bucket: str = "drl"
    s3_secure: bool = False
    s3_region: str | None = None

    # Datasets (the engine also reads DRL_DATA_DIR itself).
    data_dir: Path | None = None
    # POST /experiments checks the files a spec's dataset names (headers only) where the API
    # sees the workers' data folder (drl_core/data_paths.py); false: never (an API whose
    # data folder is not the workers').
    check_datasets_at_submit: bool = True

    # API.
    auth_enabled: bool = False
    # How many requests the API serves at once with a database session, each on a thread of
    # its own: the worker threads and the connection pool are both sized from it (a few
    # more of each), so that no request ever waits for a connection while holding a thread
    # another request needs (api/db_sessions.py). Requests beyond it queue without a thread.
    api_threads: int = Field(default=16, ge=1, le=512)
    # How long a request waits for a session (or a pooled connection) before it is answered
    # 503 with Retry-After instead of queueing behind a saturated database.
    db_pool_timeout_s: float = Field(default=15.0, gt=0)

    # Job supervision.
    heartbeat_timeout_s: float = 120.0    # a running job silent this long is lost
    max_attempts: int = 3                 # lost jobs are re-queued until this many attempts
    # A job stopped by a transient fault (database, broker or store outage, disk full:
    # drl_core/faults.py) is re-queued this many times before it fails, waiting
    # transient_backoff_s, then twice that, ... up to transient_backoff_max_s between tries.
    transient_retry_budget: int = Field(default=5, ge=0)
    transient_backoff_s: float = Field(default=5.0, ge=0)
    transient_backoff_max_s: float = Field(default=300.0, ge=0)
    # How long a finishing job keeps trying to record its outcome while the database is
    # unreachable, before it leaves the job to the reaper.
    finish_patience_s: float = Field(default=60.0, ge=0)
    # A ready queued job whose message never went out (the sender died, the broker was down)
    # is re-sent after `unsent_grace_s`; one sent over `resend_after_s` ago and still not
    # started is re-sent too (the safety net for a message lost where `stranded_after_s`
    # cannot see: another transport, a dead worker's unacknowledged message that the broker
    # holds until its visibility timeout). Duplicates are harmless.
    unsent_grace_s: float = 60.0
    resend_after_s: float = 3600.0
    # A ready queued job whose message was sent over `stranded_after_s` ago but is in
    # neither the broker's queue nor a worker's unacknowledged messages (a Redis restarted
    # without its data) is re-sent at the next reaper pass (drl_core/broker_messages.py): so
    # such a job runs within stranded_after_s + reaper_interval_s of the loss, under a
    # minute. The grace lets a message just sent land before it is looked for. Brokers that
    # cannot be looked into (or are down) are left to `resend_after_s`.
    stranded_after_s: float = Field(default=20.0, gt=0)

    # Sharing the workers (drl_core/fair_queue.py, drl_core/job_limits.py); 0 = no limit.
    # Jobs of one user running at once on one queue (gpu, cpu): the dispatcher starts no
    # more; the rest wait, whatever is free.
    max_running_jobs_per_user: int = Field(default=0, ge=0)
    # Jobs of one user queued at once: a request that would queue more (a new experiment,
    # samples, encodings, a resume) is refused with 429, naming this limit.
    max_queued_jobs_per_user: int = Field(default=0, ge=0)

    # Worker (added with the job system, issue 3).
    # Key prefix for everything Celery keeps in Redis, so several deployments (or test runs)
    # can share one Redis without taking each other's tasks.
    broker_key_prefix: str | None = None
    # How often a running job heartbeats; the same DB read tells it a cancel was requested,
    # so this is also how quickly a cancel is noticed. Must be well below heartbeat_timeout_s.
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    # How often each worker process looks for jobs whose heartbeat stopped.
    reaper_interval_s: float = Field(default=30.0, gt=0)
    # torch intra-op threads in a worker process; None = torch's default (all cores).
    torch_threads: int | None = Field(default=None, ge=1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'drl.db'}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.home / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
