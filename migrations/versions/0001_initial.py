"""initial schema: users, api_tokens, experiments, jobs, artifacts, metric_points

Revision ID: 0001
Revises:
Create Date: 2025-11-21

Written out in full (no imports from drl_core: a migration is a frozen snapshot, it must not
change when the models do). Timestamps are `DateTime(timezone=True)`, the column type under
drl_core.models.UTCDateTime. Runs unchanged on PostgreSQL and SQLite.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"], unique=False)

    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_experiments_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint(
            "owner_id", "idempotency_key", name=op.f("uq_experiments_owner_id_idempotency_key")
        ),
        # Ids are never reused on SQLite either: a late worker of a deleted experiment
        # must not write into a new experiment that got the same id.
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_experiments_owner_id"), "experiments", ["owner_id"], unique=False)
    # NULLs are distinct in the unique constraint above: without an owner, the key alone is unique.
    op.create_index(
        "uq_experiments_idempotency_key_without_owner",
        "experiments",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("owner_id IS NULL"),
        sqlite_where=sa.text("owner_id IS NULL"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("images_per_s", sa.Double(), nullable=True),
        _timestamp("heartbeat_at", nullable=True),
        _timestamp("enqueued_at", nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("log_tail", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.CheckConstraint("kind IN ('train', 'encode', 'probe', 'sample')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'cancelling', 'lost', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_jobs_status"),
        ),
        sa.CheckConstraint("attempt >= 1 AND attempt <= max_attempts", name=op.f("ck_jobs_attempt")),
        sa.ForeignKeyConstraint(
            ["depends_on_id"], ["jobs.id"], name=op.f("fk_jobs_depends_on_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"],
            name=op.f("fk_jobs_experiment_id_experiments"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        # Ids are never reused on SQLite either: a late worker of a deleted experiment
        # must not write into a new experiment that got the same id.
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_jobs_experiment_id"), "jobs", ["experiment_id"], unique=False)
    op.create_index(op.f("ix_jobs_status"), "jobs", ["status"], unique=False)

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"],
            name=op.f("fk_artifacts_experiment_id_experiments"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("key", name=op.f("uq_artifacts_key")),
    )
    op.create_index(op.f("ix_artifacts_experiment_id"), "artifacts", ["experiment_id"], unique=False)
    op.create_index(op.f("ix_artifacts_job_id"), "artifacts", ["job_id"], unique=False)

    op.create_table(
        "metric_points",
        # BIGINT on PostgreSQL; SQLite auto-increments only an INTEGER primary key.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"],
            name=op.f("fk_metric_points_experiment_id_experiments"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_metric_points_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_points")),
    )
    op.create_index(
        op.f("ix_metric_points_experiment_id_key_step"),
        "metric_points",
        ["experiment_id", "key", "step"],
        unique=False,
    )
    op.create_index(op.f("ix_metric_points_job_id"), "metric_points", ["job_id"], unique=False)


def downgrade() -> None:
    # Children before parents; each table's indexes go with it.
    op.drop_index(op.f("ix_metric_points_job_id"), table_name="metric_points")
    op.drop_index(op.f("ix_metric_points_experiment_id_key_step"), table_name="metric_points")
    op.drop_table("metric_points")

    op.drop_index(op.f("ix_artifacts_job_id"), table_name="artifacts")
    op.drop_index(op.f("ix_artifacts_experiment_id"), table_name="artifacts")
    op.drop_table("artifacts")

    op.drop_index(op.f("ix_jobs_status"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_experiment_id"), table_name="jobs")
    op.drop_table("jobs")

    op.drop_index("uq_experiments_idempotency_key_without_owner", table_name="experiments")
    op.drop_index(op.f("ix_experiments_owner_id"), table_name="experiments")
    op.drop_table("experiments")

    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")

    op.drop_table("users")
