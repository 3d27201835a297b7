"""experiments: provenance (what code, software, machine and data trained it)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

The train job records, when it starts, the drl version, the git commit of the worker's code,
Python, torch, CUDA and cuDNN versions, the device model, the worker's host and the dataset
files' fingerprint (drl_engine/provenance.py); GET /experiments/{id} and `drl status ID` show
it. NULL until a train job has started (and for experiments trained before this revision).

Runs unchanged on PostgreSQL and SQLite (a nullable column needs no batch mode to be added).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("experiments", sa.Column("provenance", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("provenance")
