"""The database layer on real PostgreSQL and SQLite: migrations up and down, the migrated
schema equal to the models, cascades, uniqueness (artifact keys, idempotency keys), engines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from drl_core.db import (
    alembic_config,
    current_revision,
    downgrade_database,
    head_revision,
    make_engine,
    session_factory,
    session_scope,
    upgrade_database,
)
from drl_core.models import Artifact, Base, Experiment, Job, MetricPoint, User

pytest_plugins = ["db_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {"users", "api_tokens", "experiments", "jobs", "artifacts", "metric_points"}


def table_names(url: str) -> set[str]:
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def make_experiment(session: Session, key: str | None = None, owner: User | None = None) -> Experiment:
    experiment = Experiment(
        name="mnist-drl", spec={"dataset": {"name": "mnist"}}, idempotency_key=key, owner=owner
    )
    session.add(experiment)
    session.flush()
    return experiment


# --- migrations ------------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'drl.db'}"  # the folder does not exist yet either
    return request.getfixturevalue("empty_pg_url")


def test_migrations_upgrade_to_head_and_downgrade_to_base(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None

    upgrade_database(empty_database_url)
    assert table_names(empty_database_url) == TABLES | {"alembic_version"}
    assert current_revision(empty_database_url) == head_revision() == "0007"

    downgrade_database(empty_database_url, "base")
    assert table_names(empty_database_url) == {"alembic_version"}
    assert current_revision(empty_database_url) is None

    # Everything was really dropped (indexes included): the schema can be created again.
    upgrade_database(empty_database_url)
    assert table_names(empty_database_url) == TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models_on_postgres(pg_url: str) -> None:
    assert schema_differences(pg_url) == []


def test_migrated_schema_matches_the_models_on_sqlite(sqlite_url: str) -> None:
    assert schema_differences(sqlite_url) == []


def test_schema_comparison_notices_a_missing_index(sqlite_url: str) -> None:
    """The comparison above is live: a schema that drifted from the models is reported."""
    engine = make_engine(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX uq_experiments_idempotency_key_without_owner")
    engine.dispose()
    differences = schema_differences(sqlite_url)
    assert [(d[0], d[1].name) for d in differences] == [
        ("add_index", "uq_experiments_idempotency_key_without_owner")
    ]


def test_a_failing_sqlite_migration_rolls_back_entirely(tmp_path: Path) -> None:
    """SQLite's DDL is transactional once env.py takes over pysqlite's transactions: a second
    migration that fails takes the first one (already executed) down with it."""
    scripts = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "broken.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n'
        f'revision, down_revision, branch_labels, depends_on = "broken", "{head_revision()}", None, None\n'
        'def upgrade():\n'
        '    op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True))\n'
        '    op.execute("INSERT INTO no_such_table VALUES (1)")\n'
        'def downgrade():\n    pass\n'
    )
    url = f"sqlite:///{tmp_path / 'drl.db'}"
    config = alembic_config(url)
    config.set_main_option("script_location", str(scripts))

    with pytest.raises(sa.exc.OperationalError, match="no_such_table"):
        command.upgrade(config, "head")
    assert table_names(url) == set()
    assert current_revision(url) is None


def test_alembic_command_line_uses_the_settings_database(tmp_path: Path) -> None:
    """`alembic upgrade head` from the repository root migrates the DRL_HOME SQLite file."""
    env = {"DRL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert current_revision(f"sqlite:///{tmp_path / 'home' / 'drl.db'}") == head_revision()


# --- cascades and uniqueness, on both backends -------------------------------------------------


def test_deleting_an_experiment_deletes_its_jobs_artifacts_and_metrics(db_session: Session) -> None:
    kept, doomed = make_experiment(db_session), make_experiment(db_session)
    for experiment in (kept, doomed):
        train = Job(experiment=experiment, kind="train")
        encode = Job(experiment=experiment, kind="encode", depends_on=train)
        db_session.add_all([train, encode])
        db_session.flush()
        db_session.add_all([
            Artifact(experiment=experiment, job=train, kind="checkpoint",
                     key=f"experiments/{experiment.id}/checkpoints/last.pt", size=10, sha256="0" * 64),
            MetricPoint(experiment_id=experiment.id, job_id=train.id, key="loss", step=1, value=0.5),
        ])
    db_session.commit()

    # A plain SQL DELETE, so it is the database's ON DELETE CASCADE that acts, not the ORM
    # (on SQLite this needs the foreign_keys pragma of make_engine).
    db_session.execute(sa.delete(Experiment).where(Experiment.id == doomed.id))
    db_session.commit()

    for model in (Job, Artifact, MetricPoint):
        rows = db_session.scalars(sa.select(model.experiment_id)).all()
        assert rows and set(rows) == {kept.id}, model.__tablename__


def test_deleting_a_job_keeps_its_artifacts(db_session: Session) -> None:
    experiment = make_experiment(db_session)
    job = Job(experiment=experiment, kind="sample")
    db_session.add(job)
    db_session.flush()
    artifact = Artifact(experiment=experiment, job=job, kind="sample", key="s.png", size=1, sha256="a" * 64)
    db_session.add(artifact)
    db_session.commit()

    db_session.execute(sa.delete(Job).where(Job.id == job.id))
    db_session.commit()
    db_session.refresh(artifact)
    assert artifact.job_id is None


def test_an_artifact_key_is_recorded_once(db_session: Session) -> None:
    experiment = make_experiment(db_session)
    key = f"experiments/{experiment.id}/embeddings/test/t=0.500.npy"
    db_session.add(Artifact(experiment=experiment, kind="embedding", key=key, size=8, sha256="b" * 64,
                            meta={"split": "test", "t": 0.5}))
    db_session.commit()
    db_session.add(Artifact(experiment=experiment, kind="embedding", key=key, size=8, sha256="b" * 64))
    with pytest.raises(IntegrityError, match="uq_artifacts_key|UNIQUE constraint failed: artifacts.key"):
        db_session.commit()


def test_a_metric_point_is_recorded_once_per_job_key_and_step(db_session: Session) -> None:
    experiment = make_experiment(db_session)
    train = Job(experiment=experiment, kind="train")
    db_session.add(train)
    db_session.flush()

    def point(key: str, step: int) -> MetricPoint:
        return MetricPoint(experiment_id=experiment.id, job_id=train.id, key=key, step=step, value=1.0)

    db_session.add_all([point("loss", 1), point("loss", 2), point("grad_norm", 1)])
    db_session.commit()
    db_session.add(point("loss", 1))
    with pytest.raises(IntegrityError, match="uq_metric_points_job_id_key_step|UNIQUE constraint failed"):
        db_session.commit()
    db_session.rollback()


def test_the_unique_metric_points_migration_keeps_the_newest_duplicate(empty_database_url: str) -> None:
    """0002 adds the unique (job, key, step) index to a database that already holds the
    duplicates two copies of a job left: the newest point of each survives."""
    upgrade_database(empty_database_url, "0001")
    engine = make_engine(empty_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            now = datetime.now(timezone.utc)
            # (the tables as 0001 made them: the models' later columns are not there yet)
            experiments_0001 = sa.table(
                "experiments", sa.column("id"), sa.column("name"), sa.column("spec", sa.JSON),
                sa.column("created_at", sa.DateTime(timezone=True)),
                sa.column("updated_at", sa.DateTime(timezone=True)))
            experiment = connection.execute(sa.insert(experiments_0001).values(
                name="e", spec={}, created_at=now, updated_at=now)
                .returning(experiments_0001.c.id)).scalar()
            jobs_0001 = sa.table(
                "jobs", sa.column("id"), sa.column("experiment_id"), sa.column("kind"),
                sa.column("status"), sa.column("attempt"), sa.column("max_attempts"),
                sa.column("params", sa.JSON), sa.column("queue"), sa.column("log_tail", sa.JSON),
                sa.column("created_at", sa.DateTime(timezone=True)),
                sa.column("updated_at", sa.DateTime(timezone=True)))
            job = connection.execute(sa.insert(jobs_0001).values(
                experiment_id=experiment, kind="train", status="running", attempt=1, max_attempts=3,
                params={}, queue="gpu", log_tail=[], created_at=now, updated_at=now)
                .returning(jobs_0001.c.id)).scalar()
            for key, step, value in (("loss", 1, 0.9), ("loss", 1, 0.8), ("loss", 2, 0.7),
                                     ("loss", 2, 0.6), ("loss", 2, 0.5), ("lr", 1, 0.1)):
                connection.execute(sa.insert(MetricPoint).values(
                    experiment_id=experiment, job_id=job, key=key, step=step, value=value,
                    created_at=now))
        upgrade_database(empty_database_url)
        with engine.connect() as connection:
            points = connection.execute(sa.select(MetricPoint.key, MetricPoint.step, MetricPoint.value)
                                        .order_by(MetricPoint.key, MetricPoint.step)).all()
        assert [tuple(p) for p in points] == [("loss", 1, 0.8), ("loss", 2, 0.5), ("lr", 1, 0.1)]
    finally:
        engine.dispose()


def test_idempotency_key_is_unique_per_owner(db_session: Session) -> None:
    alice, bob = User(name="alice"), User(name="bob")
    db_session.add_all([alice, bob])
    make_experiment(db_session, "k1", alice)
    make_experiment(db_session, "k1", bob)  # another owner may reuse the key
    make_experiment(db_session, "k1", None)  # so may the no-owner (auth off) namespace
    for _ in range(2):  # no key: no constraint
        make_experiment(db_session, None, alice)
        make_experiment(db_session, None, None)
    db_session.commit()

    with pytest.raises(IntegrityError):
        make_experiment(db_session, "k1", alice)
    db_session.rollback()


def test_idempotency_key_is_unique_without_owner(db_session: Session) -> None:
    make_experiment(db_session, "k1", None)
    db_session.commit()
    names = "uq_experiments_idempotency_key_without_owner|experiments.idempotency_key"
    with pytest.raises(IntegrityError, match=names):
        make_experiment(db_session, "k1", None)
    db_session.rollback()


def test_timestamps_come_back_as_aware_utc(db_session: Session) -> None:
    paris = timezone(timedelta(hours=1))
    started = datetime(2025, 1, 2, 13, 30, 15, 123456, tzinfo=paris)
    experiment = make_experiment(db_session)
    job = Job(experiment=experiment, kind="train", started_at=started)
    db_session.add(job)
    db_session.commit()
    job_id = job.id
    db_session.expunge_all()

    loaded = db_session.get(Job, job_id)
    assert loaded.started_at == started
    assert loaded.started_at.utcoffset() == timedelta(0)
    assert loaded.started_at.hour == 12
    assert loaded.created_at.tzinfo is not None
    assert loaded.params == {} and loaded.log_tail == [] and loaded.status == "queued"
    assert loaded.attempt == 1


def test_naive_datetimes_are_refused(db_session: Session) -> None:
    job = Job(experiment=make_experiment(db_session), kind="train", started_at=datetime(2025, 1, 2))
    db_session.add(job)
    with pytest.raises(StatementError, match="naive datetime"):
        db_session.flush()


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [({"kind": "paint"}, "ck_jobs_kind"), ({"status": "paused"}, "ck_jobs_status"),
     ({"attempt": 4, "max_attempts": 3}, "ck_jobs_attempt")],
)
def test_job_columns_are_checked_by_the_database(db_session: Session, fields: dict, constraint: str) -> None:
    db_session.add(Job(experiment=make_experiment(db_session), **{"kind": "train"} | fields))
    with pytest.raises(IntegrityError, match=constraint):
        db_session.flush()


# --- engines and sessions ----------------------------------------------------------------------


def test_sqlite_engine_pragmas(sqlite_engine: sa.Engine) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_session_scope_commits_or_rolls_back(db_engine: sa.Engine) -> None:
    factory = session_factory(db_engine)
    with session_scope(factory) as session:
        session.add(User(name="kept"))
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        session.add(User(name="discarded"))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(factory) as session:
        assert session.scalars(sa.select(User.name)).all() == ["kept"]


def test_sqlite_never_reuses_a_deleted_experiments_id(sqlite_session):
    """A late worker of a deleted experiment must not write into a new one with the same id."""
    first = Experiment(name="a", spec={})
    sqlite_session.add(first)
    sqlite_session.commit()
    old_id = first.id
    sqlite_session.delete(first)
    sqlite_session.commit()
    second = Experiment(name="b", spec={})
    sqlite_session.add(second)
    sqlite_session.commit()
    assert second.id > old_id
