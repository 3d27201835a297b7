"""Alembic environment: the migrations run the same way on PostgreSQL and SQLite.

The database URL is the config's `sqlalchemy.url` when one is set (drl_core.db.upgrade_database
sets it), else the settings' (DRL_DATABASE_URL, or the SQLite file under DRL_HOME). A caller
may also hand over an open connection as `config.attributes["connection"]`.
"""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from drl_core.db import make_engine
from drl_core.models import Base
from drl_core.settings import Settings

config = context.config
if config.config_file_name is not None:  # the `alembic` command line; never the application
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=sa.make_url(url).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: sa.Connection, own_sqlite_engine: bool = False) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    options = {}
    if own_sqlite_engine:
        # migration_engine makes SQLite's DDL transactional: all pending migrations run in
        # one transaction, so a failure leaves the database at the revision it started from.
        options["transactional_ddl"] = True
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters a table by copying it into a new one; batch mode writes that copy.
        render_as_batch=is_sqlite,
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
        if own_sqlite_engine:
            # Foreign keys are off while migrating (see migration_engine); make sure the
            # migrations left none dangling before committing.
            dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if dangling:
                raise RuntimeError(f"migration left rows with dangling foreign keys: {dangling}")


def migration_engine(url: str) -> sa.Engine:
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name != "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # pysqlite opens transactions only before INSERT/UPDATE/DELETE, so DDL would commit
        # statement by statement; with the driver in autocommit mode and BEGIN issued below, a
        # failing migration rolls back whole (SQLite's DDL is transactional).
        dbapi_connection.isolation_level = None
        # A batch migration drops and recreates tables; with foreign keys on, dropping a
        # parent would cascade-delete its children's rows.
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN")

    return engine


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_migrations(given)
        return
    engine = migration_engine(database_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection, own_sqlite_engine=engine.dialect.name == "sqlite")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
