"""users: is_admin (an admin may change any experiment)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Every write on an experiment (cancel, resume, delete, new sample or encoding jobs) is its
owner's or an admin's (api/auth.py `require_owner`). `drl token create NAME --admin` makes a
user an admin, `--no-admin` makes them an ordinary user again. Existing users are not admins.

Runs unchanged on PostgreSQL and SQLite (a defaulted column needs no batch mode to be added).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("is_admin", sa.Boolean(), nullable=False,
                                     server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_admin")
