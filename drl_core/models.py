"""The database tables, as SQLAlchemy 2 typed declarative models.

The schema only changes through Alembic (`migrations/`); `migrations/versions` must describe
exactly these models (tests/test_db.py compares them). Types are portable (JSON, String,
Text, timezone-aware DateTime) so the same migrations run on PostgreSQL and SQLite, and every
constraint is named by `NAMING_CONVENTION` so migrations and SQLite batch mode can refer to it.

Job status is written only through `drl_core.job_states.transition`; an experiment's status is
never stored, it is derived from its pipeline jobs (`job_states.experiment_status`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from drl_core.job_states import JobKind, JobStatus, utc_now
from drl_core.priority import Priority
from drl_core.settings import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lines of worker output kept on a job row (the full log is an artifact).
LOG_TAIL_LINES = 50


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones and would silently drop the
    offset, so values are converted to UTC before they are written and read back as UTC.
    Naive datetimes are refused: their zone is a guess.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one, e.g. datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    # Explicit, so the schema does not depend on the SQLAlchemy version's defaults.
    type_annotation_map = {
        int: sa.Integer(),
        float: sa.Double(),
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[str]: sa.JSON(),
    }


def _in(column: str, values: type[JobKind] | type[JobStatus] | type[Priority]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


# SQLite reuses the largest rowid after a delete unless told otherwise; a late worker of a
# deleted experiment must never write into a new experiment that got the same id.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    # May change any experiment, not only their own (api/auth.py require_owner).
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(Base):
    """A bearer token. Only its sha256 is stored; `prefix` (its first characters) lets a user
    tell their tokens apart in a listing."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")


class Experiment(Base):
    """One ExperimentSpec and the jobs that carry it out.

    `idempotency_key` makes creation idempotent per owner: the pair (owner_id,
    idempotency_key) is unique. SQL treats NULLs as distinct, so with auth off (no owner) a
    unique constraint alone would let the same key in twice; the partial unique index on the
    key WHERE owner_id IS NULL closes that gap on both PostgreSQL and SQLite.
    """

    __tablename__ = "experiments"
    __table_args__ = (
        sa.UniqueConstraint("owner_id", "idempotency_key"),
        sa.Index(
            "uq_experiments_idempotency_key_without_owner",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("owner_id IS NULL"),
            sqlite_where=sa.text("owner_id IS NULL"),
        ),
        sa.CheckConstraint(_in("priority", Priority), name="priority"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    spec: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))
    # Orders its jobs within its owner's turn (drl_core/priority.py, drl_core/fair_queue.py).
    priority: Mapped[str] = mapped_column(sa.String(8), default=Priority.NORMAL.value,
                                          server_default=Priority.NORMAL.value)
    # What trained it (drl_engine/provenance.py), written when its train job starts.
    provenance: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    owner: Mapped[User | None] = relationship()
    # passive_deletes: the database's ON DELETE CASCADE removes the children (and metric
    # points, which have no relationship here because there can be very many of them).
    jobs: Mapped[list[Job]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Job.id",
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Artifact.id",
    )


class Job(Base):
    """One step of an experiment (train, encode, probe or sample) and its whole state.

    `status` changes only through `drl_core.job_states.transition`. `attempt` counts runs
    (1 for the first); a lost job is re-queued with attempt + 1 until `max_attempts`. A job
    stopped by a transient fault is re-queued at the same attempt, counted in
    `transient_retries` instead.
    `depends_on_id` orders the pipeline train -> encode -> probe -> sample.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", JobKind), name="kind"),
        sa.CheckConstraint(_in("status", JobStatus), name="status"),
        sa.CheckConstraint("attempt >= 1 AND attempt <= max_attempts", name="attempt"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.QUEUED.value, index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    max_attempts: Mapped[int] = mapped_column(default=lambda: get_settings().max_attempts)
    # What to do, beyond the spec: e.g. {"t": [0.0, 0.5]} for encode, the sample request.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The Celery queue that carries "run job N" ("celery" is Celery's own default queue).
    queue: Mapped[str] = mapped_column(sa.String(64), default="celery")
    depends_on_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))

    # Progress, written by the worker's heartbeat.
    step: Mapped[int | None]
    total: Mapped[int | None]
    loss: Mapped[float | None]
    images_per_s: Mapped[float | None]
    heartbeat_at: Mapped[datetime | None]
    # When "run job N" was last sent; NULL: never (the reaper re-sends such ready jobs).
    enqueued_at: Mapped[datetime | None]
    # Retries after transient faults (drl_core/faults.py), a budget apart from `attempt`;
    # `retry_at`: not before then (backoff), NULL when not waiting for one.
    transient_retries: Mapped[int] = mapped_column(default=0, server_default="0")
    retry_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(sa.String(255))
    log_tail: Mapped[list[str]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(sa.Text)

    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    experiment: Mapped[Experiment] = relationship(back_populates="jobs")
    depends_on: Mapped[Job | None] = relationship(remote_side=[id])
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job", passive_deletes=True)

    def tail_with(self, lines: list[str]) -> list[str]:
        """`log_tail` extended by `lines`, cut to the last LOG_TAIL_LINES (pass it to heartbeat)."""
        return (list(self.log_tail or []) + list(lines))[-LOG_TAIL_LINES:]


class MetricPoint(Base):
    """One value of a series (e.g. key 'loss') at a training step. (job, key, step) is
    unique: a step recorded again (a resumed attempt, a second copy of a job) replaces its
    point instead of adding one (worker.context.upsert_metric_points)."""

    __tablename__ = "metric_points"
    __table_args__ = (
        sa.Index(None, "experiment_id", "key", "step"),
        # Also the index on job_id (its first column), e.g. for ON DELETE CASCADE from jobs.
        sa.Index("uq_metric_points_job_id_key_step", "job_id", "key", "step", unique=True),
    )

    # BIGINT on PostgreSQL (series grow long); SQLite only auto-increments INTEGER keys.
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(64))
    step: Mapped[int]
    value: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Artifact(Base):
    """A file in the artifact store. `key` is unique: a job that runs twice cannot record the
    same result twice (the second insert fails; update the existing row instead)."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    # Provenance only: the artifact belongs to the experiment and outlives the job row.
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))  # checkpoint, embedding, labels, probes, sample, ...
    key: Mapped[str] = mapped_column(sa.String(1024), unique=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. {"split": "test", "t": 0.5}
    # A checkpoint a user pinned: kept past retention until unpinned (drl_core/checkpoints.py).
    pinned: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    experiment: Mapped[Experiment] = relationship(back_populates="artifacts")
    job: Mapped[Job | None] = relationship(back_populates="artifacts")
