"""metric points unique per (job, key, step)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Two copies of one training job (a worker presumed dead that kept running) once recorded the
same steps twice. A unique index on (job_id, key, step) makes that impossible; it also serves
every lookup by job_id, so the plain index on job_id goes. Existing duplicates are reduced to
the newest point of each (job, key, step) first, or the index could not be built.

Runs unchanged on PostgreSQL and SQLite (indexes need no batch mode).
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM metric_points WHERE id NOT IN "
        "(SELECT max(id) FROM metric_points GROUP BY job_id, key, step)"
    )
    op.create_index("uq_metric_points_job_id_key_step", "metric_points",
                    ["job_id", "key", "step"], unique=True)
    op.drop_index(op.f("ix_metric_points_job_id"), table_name="metric_points")


def downgrade() -> None:
    op.create_index(op.f("ix_metric_points_job_id"), "metric_points", ["job_id"], unique=False)
    op.drop_index("uq_metric_points_job_id_key_step", table_name="metric_points")
