"""jobs: transient_retries and retry_at (transient faults are retried, not fatal)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A job stopped by a transient fault (database, broker or artifact store outage, a full disk)
goes back to the queue and resumes from its last checkpoint. `transient_retries` counts
those retries against a budget of their own (a dead worker counts `attempt`); `retry_at` is
when the next try may start (exponential backoff), which the reaper respects when it
re-sends a message. Existing jobs start at 0 retries.

Runs unchanged on PostgreSQL and SQLite (adding nullable or defaulted columns needs no batch
mode).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("transient_retries", sa.Integer(), nullable=False,
                                    server_default="0"))
    op.add_column("jobs", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("transient_retries")
