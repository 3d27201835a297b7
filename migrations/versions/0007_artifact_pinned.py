"""artifacts: pinned (a checkpoint kept past retention)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

The store keeps a training's newest checkpoints and the ones a user pinned
(POST /experiments/{id}/checkpoints/{step}/pin; drl_core/checkpoints.py). A column, not a key
in `meta`: the train job's retention deletes a row only while it is unpinned, in one statement
that PostgreSQL and SQLite evaluate alike. Existing checkpoints are not pinned.

Runs unchanged on PostgreSQL and SQLite (a defaulted column needs no batch mode to be added).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("pinned", sa.Boolean(), nullable=False,
                                         server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("pinned")
