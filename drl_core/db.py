"""Engines, sessions and migrations, for PostgreSQL (docker compose) and SQLite (embedded).

The schema is created and changed only by Alembic (`upgrade_database`); the application never
calls `create_all`, so a database is always at a known migration revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from drl_core.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"

# How long an SQLite writer waits for another process's write lock before failing (ms): the
# API and the worker are separate processes writing the same file.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """An engine for `url`; extra keyword arguments go to `sqlalchemy.create_engine`.

    SQLite: usable from several threads, WAL journal (readers do not block the writer),
    foreign keys enforced (SQLite ignores them, ON DELETE CASCADE included, unless asked on
    every connection) and a busy timeout; the database file's folder is created.
    Other backends (PostgreSQL): connections are checked before use, so a restarted server
    does not fail the first request.
    """
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)

    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = sa.create_engine(url, connect_args=connect_args | kwargs.pop("connect_args", {}), **kwargs)
    sa.event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Durable at every checkpoint; the usual pairing with WAL.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after the commit (e.g. to build a response).
    return sessionmaker(bind=engine, expire_on_commit=False)


@lru_cache
def default_session_factory() -> sessionmaker[Session]:
    """The process-wide session factory for `Settings().resolved_database_url`."""
    return session_factory(make_engine(get_settings().resolved_database_url))


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """A session that commits when the block ends, rolls back if it raises, and is closed.

    `factory` defaults to `default_session_factory()` (the settings' database).
    """
    session = (factory or default_session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | sa.URL) -> Config:
    """An Alembic config for `url` that needs no alembic.ini (so it does not touch logging)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%'; percent-encoded passwords must survive it.
    rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade_database(url: str | sa.URL, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (creating the schema if it is empty)."""
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str | sa.URL, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ('base' drops every table)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | sa.URL) -> str | None:
    """The revision the database is at (None if it was never migrated): for readiness checks."""
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest migration's revision: a database is up to date when it is at this one."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head
