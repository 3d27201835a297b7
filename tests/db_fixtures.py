"""Database fixtures: a real PostgreSQL database per test module, an SQLite file per test.

Use them from a test module with `pytest_plugins = ["db_fixtures"]` (or load this plugin in
tests/conftest.py). Every database is migrated with Alembic, as the application does.

PostgreSQL: the server at $DRL_TEST_POSTGRES_URL (default the local one with trust auth,
database `test`) must be running; the tests FAIL, never skip, when it is not. Each test module
gets its own throwaway database (a unique name, so concurrent runs never collide), dropped
WITH (FORCE) at the end; tables are emptied after every test that used it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import Session

from drl_core.db import make_engine, session_factory, upgrade_database
from drl_core.models import Base

ADMIN_URL = os.environ.get("DRL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

HOW_TO_START = (
    "start PostgreSQL with trust auth and a `test` database, e.g. "
    "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`, "
    "or point DRL_TEST_POSTGRES_URL at a server where you may CREATE DATABASE"
)


def _libpq_url(url: str | sa.URL) -> str:
    """The SQLAlchemy URL as psycopg takes it (no `+psycopg` driver suffix)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_connection() -> psycopg.Connection:
    try:
        return psycopg.connect(_libpq_url(ADMIN_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {sa.make_url(ADMIN_URL)!r} ({error}); {HOW_TO_START}",
            pytrace=False,
        )


@contextmanager
def postgres_database(migrate: bool = True) -> Iterator[str]:
    """A new, uniquely named PostgreSQL database (migrated to head unless `migrate` is
    False) for as long as the block runs; yields its SQLAlchemy URL."""
    name = f"drl_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade_database(url)
        yield url
    finally:
        with _admin_connection() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def empty_tables(engine: sa.Engine) -> None:
    """Delete every row (children first), keeping the schema and alembic_version.

    DELETE rather than TRUNCATE: on the few rows a test writes it takes milliseconds, where
    TRUNCATE rewrites every table's files (a third of a second per test).
    """
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """URL of this module's migrated PostgreSQL database."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database of this test's own with no tables (not migrated)."""
    with postgres_database(migrate=False) as url:
        yield url


@pytest.fixture(scope="module")
def _pg_module_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(_pg_module_engine: sa.Engine) -> Iterator[sa.Engine]:
    """An engine on this module's PostgreSQL database; its tables are emptied after the test."""
    yield _pg_module_engine
    empty_tables(_pg_module_engine)


@pytest.fixture
def pg_session(pg_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(pg_engine)() as session:
        yield session
        session.rollback()


# --- SQLite ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per test session; each test gets a copy (faster than
    migrating again)."""
    path = tmp_path_factory.mktemp("sqlite_template") / "drl.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a migrated SQLite database file of this test's own."""
    path = tmp_path / "drl.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_session(sqlite_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(sqlite_engine)() as session:
        yield session
        session.rollback()


# --- either backend ----------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request: pytest.FixtureRequest) -> sa.Engine:
    """A migrated database engine, once per backend: tests using it run on both."""
    return request.getfixturevalue("pg_engine" if request.param == "postgresql" else "sqlite_engine")


@pytest.fixture
def db_session(db_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(db_engine)() as session:
        yield session
        session.rollback()


@pytest.fixture
def make_sessions(db_engine: sa.Engine) -> Iterator[Callable[[], Session]]:
    """Opens more sessions on `db_engine` (e.g. a second process's view); closes them after."""
    opened: list[Session] = []
    factory = session_factory(db_engine)

    def open_session() -> Session:
        opened.append(factory())
        return opened[-1]

    yield open_session
    for session in opened:
        session.close()
