"""experiments: priority (low, normal, high) for the fair dispatcher

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

When a worker is free the database picks its next job (drl_core/fair_queue.py): round-robin
across owners, then the experiment's priority, then age. `high` is for admins only (the
API checks it). Existing experiments are `normal`.

SQLite gets the column and its check constraint in one ALTER TABLE ... ADD COLUMN: batch
mode would copy the table, and the copy loses its AUTOINCREMENT (`NEVER_REUSE_IDS`, which
keeps a deleted experiment's id from being given to a new one). Its downgrade drops the
column in place (SQLite 3.35 or newer) for the same reason.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "priority IN ('low', 'normal', 'high')"


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("ALTER TABLE experiments ADD COLUMN priority VARCHAR(8) DEFAULT 'normal' "
                   f"NOT NULL CONSTRAINT ck_experiments_priority CHECK ({CHECK})")
        return
    op.add_column("experiments", sa.Column("priority", sa.String(8), nullable=False,
                                           server_default="normal"))
    op.create_check_constraint(op.f("ck_experiments_priority"), "experiments", CHECK)


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_experiments_priority"), "experiments", type_="check")
    op.drop_column("experiments", "priority")
