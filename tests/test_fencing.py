"""Two copies of one job (issue 13 item 3), on real PostgreSQL and SQLite: the attempt is a
fencing token the database checks.

- a stale attempt's writes (artifact rows, artifact deletion, metric points) are refused by
  the database even when its heartbeat thread never noticed (it is not running here at all);
- on PostgreSQL a write waits for a reaper that is moving the job, then is refused;
- the reaper's compare-and-set includes the heartbeat time it judged stale: a heartbeat that
  lands after the judgement (held up by a row lock, as in the issue) keeps the job;
- metric points are one per (job, key, step);
- a job's whole log adds each run to the earlier runs' and stops once its attempt is lost;
- Heartbeat.stop() returns after its timeout when a beat hangs in the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.artifact_keys import ArtifactKind, log_key
from drl_core.artifacts import StoredArtifact
from drl_core.db import session_factory
from drl_core.fencing import fenced_session
from drl_core.job_states import JobStatus, heartbeat, reap, transition, utc_now
from drl_core.models import Artifact, Experiment, Job, MetricPoint
from drl_core.settings import Settings
from worker import reaper
from worker.context import Heartbeat, JobContext, JobLost, WorkerResources, upsert_artifact
from worker.job_log import JobLog

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import tiny_spec  # noqa: E402

pytest_plugins = ["worker_fixtures"]


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def running_job(session: Session) -> Job:
    experiment = Experiment(name="e", spec=tiny_spec().model_dump(mode="json"))
    job = Job(experiment=experiment, kind="train", queue="gpu")
    session.add_all([experiment, job])
    session.commit()
    transition(session, job, JobStatus.RUNNING, worker="first:1")
    session.commit()
    return job


def hand_over(session: Session, job: Job) -> None:
    """What happens to a job whose worker looks dead: reaped (lost -> queued, attempt + 1)
    and started by another worker."""
    session.refresh(job)
    assert reap(session, job) == JobStatus.QUEUED
    transition(session, job, JobStatus.RUNNING, worker="second:1")
    session.commit()


@pytest.fixture
def contexts(db_engine: sa.Engine, tmp_path: Path) -> Iterator[Callable[[Job, int], JobContext]]:
    """Builds the JobContext a runner of `job` at `attempt` gets (a fenced session, the
    store), with a Heartbeat that is never started: a worker whose heartbeat thread died."""
    settings = Settings(home=tmp_path, database_url=url_of(db_engine), artifact_dir=tmp_path / "artifacts")
    resources = WorkerResources(settings)
    opened = []

    def make(job: Job, attempt: int) -> JobContext:
        fenced = fenced_session(resources.sessions, job.id, attempt)
        opened.append(fenced)
        return JobContext(job_id=job.id, experiment_id=job.experiment_id, kind=job.kind,
                          attempt=attempt, params={}, spec=tiny_spec(), session=fenced.__enter__(),
                          resources=resources, heartbeat=Heartbeat(resources.sessions, job.id, attempt, 1.0),
                          workdir=tmp_path)

    yield make
    for fenced in opened:
        fenced.__exit__(None, None, None)
    resources.dispose()


def points(session: Session, job: Job) -> list[tuple[str, int, float]]:
    job_id = job.id
    session.expire_all()
    return [tuple(p) for p in session.execute(
        sa.select(MetricPoint.key, MetricPoint.step, MetricPoint.value)
        .where(MetricPoint.job_id == job_id).order_by(MetricPoint.key, MetricPoint.step))]


def artifact_keys(session: Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(sa.select(Artifact.key).order_by(Artifact.key)))


# --- fenced writes -----------------------------------------------------------------------


def test_a_stale_attempts_writes_are_refused_by_the_database(db_session: Session, contexts) -> None:
    job = running_job(db_session)
    first = contexts(job, 1)
    first.record_metrics(10, {"loss": 0.5})
    kept = first.store_bytes(f"experiments/{job.experiment_id}/checkpoints/step=10.pt", b"ckpt",
                             ArtifactKind.CHECKPOINT, {"step": 10})

    hand_over(db_session, job)
    assert not first.should_stop()   # its heartbeat never told it: only the database knows

    with pytest.raises(JobLost):
        first.record_metrics(20, {"loss": 0.4})
    assert first.should_stop()       # and now the runner stops too
    first.heartbeat.lost.clear()     # (each write below must be refused on its own)

    # An upload is not even started once the job row says it is gone...
    with pytest.raises(JobLost):
        first.store_bytes(f"experiments/{job.experiment_id}/checkpoints/step=20.pt", b"late",
                          ArtifactKind.CHECKPOINT, {"step": 20})
    assert not first.store.exists(f"experiments/{job.experiment_id}/checkpoints/step=20.pt")
    first.heartbeat.lost.clear()
    # ... and a row written after that check is refused at the commit.
    late = StoredArtifact(key=f"experiments/{job.experiment_id}/samples/late.png", size=1, sha256="0" * 64)
    upsert_artifact(first.session, job.experiment_id, job.id, ArtifactKind.SAMPLE, late, {})
    with pytest.raises(JobLost):
        first.commit()
    first.heartbeat.lost.clear()
    # Deleting the checkpoint the new attempt resumes from: refused, row and file stay.
    row = first.artifacts(ArtifactKind.CHECKPOINT)[0]
    with pytest.raises(JobLost):
        first.delete_artifact(row)
    assert first.store.exists(kept.key)

    assert points(db_session, job) == [("loss", 10, 0.5)]
    assert artifact_keys(db_session) == [kept.key]

    second = contexts(job, 2)   # the attempt that holds the job writes as usual
    second.record_metrics(20, {"loss": 0.3})
    second.delete_artifact(second.artifacts(ArtifactKind.CHECKPOINT)[0])
    assert points(db_session, job) == [("loss", 10, 0.5), ("loss", 20, 0.3)]
    assert artifact_keys(db_session) == [] and not second.store.exists(kept.key)


def test_a_job_log_adds_to_earlier_runs_and_stops_once_the_job_is_lost(
        db_session: Session, contexts) -> None:
    job = running_job(db_session)
    resources = contexts(job, 1).resources
    key = log_key(job.experiment_id, job.id)
    first = JobLog(resources, job.experiment_id, job.id, 1, interval_s=60)
    first.write("=== attempt 1 ===")
    first.write("step 10")
    assert first.upload() and not first.upload()   # nothing new: nothing uploaded

    hand_over(db_session, job)
    first.write("a late line")
    assert not first.upload(always=True) and first.lost.is_set()
    assert resources.store.get_bytes(key) == b"=== attempt 1 ===\nstep 10\n"

    second = JobLog(resources, job.experiment_id, job.id, 2, interval_s=60)
    second.write("=== attempt 2 ===")
    assert second.stop()   # never started: the final upload alone
    whole = b"=== attempt 1 ===\nstep 10\n=== attempt 2 ===\n"
    assert resources.store.get_bytes(key) == whole
    db_session.expire_all()
    row = db_session.scalars(sa.select(Artifact)).one()
    assert (row.key, row.kind, row.job_id, row.size) == (key, "log", job.id, len(whole))
    assert row.meta == {"job_id": job.id, "lines": 3}


def test_a_finished_or_deleted_job_refuses_writes_too(db_session: Session, contexts) -> None:
    job = running_job(db_session)
    ctx = contexts(job, 1)
    transition(db_session, job, JobStatus.SUCCEEDED)
    db_session.commit()
    with pytest.raises(JobLost):
        ctx.record_metrics(1, {"loss": 1.0})
    db_session.execute(sa.delete(Experiment).where(Experiment.id == job.experiment_id))
    db_session.commit()
    ctx.heartbeat.lost.clear()
    # (a point of a deleted job breaks its foreign key before the fence is asked)
    with pytest.raises((JobLost, sa.exc.IntegrityError)):
        ctx.record_metrics(1, {"loss": 1.0})
    ctx.session.rollback()
    assert db_session.scalar(sa.select(sa.func.count()).select_from(MetricPoint)) == 0


def test_a_step_recorded_twice_is_one_point_per_key(db_session: Session, contexts) -> None:
    job = running_job(db_session)
    ctx = contexts(job, 1)
    ctx.record_metrics(5, {"loss": 0.9, "grad_norm": 2.0})
    ctx.record_metrics(5, {"loss": 0.7})   # a resumed attempt recording the step again
    ctx.record_metrics(6, {"loss": 0.6})
    assert points(db_session, job) == [("grad_norm", 5, 2.0), ("loss", 5, 0.7), ("loss", 6, 0.6)]


def test_on_postgres_a_write_waits_for_a_reaper_moving_the_job_then_is_refused(
        pg_engine: sa.Engine, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=url_of(pg_engine), artifact_dir=tmp_path / "a")
    resources = WorkerResources(settings)
    with session_factory(pg_engine)() as session, \
            session_factory(pg_engine)() as reaping, \
            fenced_session(resources.sessions, running_job(session).id, 1) as fenced:
        job = session.scalars(sa.select(Job)).one()
        ctx = JobContext(job_id=job.id, experiment_id=job.experiment_id, kind="train", attempt=1,
                         params={}, spec=tiny_spec(), session=fenced, resources=resources,
                         heartbeat=Heartbeat(resources.sessions, job.id, 1, 1.0), workdir=tmp_path)
        reaped = reaping.get(Job, job.id)
        transition(reaping, reaped, JobStatus.LOST)      # uncommitted: the row is locked
        outcome: list[BaseException | None] = []

        def write() -> None:
            try:
                ctx.record_metrics(1, {"loss": 1.0})
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(1.0)
        assert writer.is_alive()          # the fence waits for the reaper's transaction
        reaping.commit()
        writer.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], JobLost)
        assert points(session, job) == []
    resources.dispose()


# --- the reaper's compare-and-set --------------------------------------------------------


def silence(session: Session, job: Job, seconds: float) -> None:
    """Make the job's last heartbeat `seconds` old."""
    session.execute(sa.update(Job).where(Job.id == job.id)
                    .values(heartbeat_at=utc_now() - timedelta(seconds=seconds)))
    session.commit()


def test_the_reaper_keeps_a_job_whose_heartbeat_landed_after_it_was_judged_stale(
        db_session: Session, make_sessions, monkeypatch) -> None:
    job = running_job(db_session)
    silence(db_session, job, 600)
    worker_session = make_sessions()
    judged = []

    def stale_then_a_heartbeat_lands(session: Session, cutoff):
        found = real_stale_jobs(session, cutoff)
        judged.extend(j.id for j in found)
        heartbeat(worker_session, worker_session.get(Job, job.id), step=7)   # the live worker
        worker_session.commit()
        return found

    real_stale_jobs = reaper.stale_jobs
    monkeypatch.setattr(reaper, "stale_jobs", stale_then_a_heartbeat_lands)
    with make_sessions() as reaper_session:
        assert reaper.reap_stale_jobs(reaper_session, timeout_s=120) == []
    assert judged == [job.id]
    db_session.refresh(job)
    assert (job.status, job.attempt, job.step) == ("running", 1, 7)

    # Silent for real this time: reaped.
    monkeypatch.setattr(reaper, "stale_jobs", real_stale_jobs)
    silence(db_session, job, 600)
    with make_sessions() as reaper_session:
        assert reaper.reap_stale_jobs(reaper_session, timeout_s=120,
                                      celery_app=_NoBroker()) == [job.id]
    db_session.refresh(job)
    assert (job.status, job.attempt) == ("queued", 2)


class _NoBroker:
    """A Celery stand-in for re-queued jobs: records the sends."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_task(self, name: str, args: list[int], **_: object) -> None:
        self.sent.extend(args)


# How the two UPDATEs look in pg_stat_activity (the reaper's names heartbeat_at in its WHERE).
HEARTBEAT_UPDATE = "UPDATE jobs SET %heartbeat_at=%"
REAP_UPDATE = "UPDATE jobs SET status=%"


def waiting_on_a_lock(engine: sa.Engine, like: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE :like"), {"like": like}).scalar()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_on_postgres_a_heartbeat_held_up_by_a_row_lock_still_saves_its_job(
        pg_engine: sa.Engine) -> None:
    """The issue's sequence: a long row lock holds up a live job's heartbeat; meanwhile the
    reaper judges the job stale and queues its UPDATE behind the same lock. The lock goes,
    the heartbeat lands first, and the reaper's compare-and-set (which names the heartbeat
    it judged) no longer matches: the job keeps running."""
    sessions = session_factory(pg_engine)
    with sessions() as setup:
        job = running_job(setup)
        silence(setup, job, 600)
    beat = Heartbeat(sessions, job.id, 1, interval_s=1.0)
    reaped: list[int] = []
    with sessions() as locker:
        locker.execute(sa.select(Job).where(Job.id == job.id).with_for_update())   # held up
        beating = threading.Thread(target=beat.beat)
        beating.start()
        wait_until(lambda: waiting_on_a_lock(pg_engine, HEARTBEAT_UPDATE) == 1,
                   "the heartbeat to wait on the lock")

        def reap_pass() -> None:
            with sessions() as session:
                reaped.extend(reaper.reap_stale_jobs(session, timeout_s=120, celery_app=_NoBroker()))

        reaping = threading.Thread(target=reap_pass)
        reaping.start()
        wait_until(lambda: waiting_on_a_lock(pg_engine, REAP_UPDATE) == 1,
                   "the reaper to wait on the lock")
        locker.rollback()
    beating.join(10)
    reaping.join(10)
    assert reaped == [] and not beat.lost.is_set()
    with sessions() as check:
        assert check.get(Job, job.id).status == "running"


# --- Heartbeat.stop ----------------------------------------------------------------------


def test_heartbeat_stop_gives_up_on_a_beat_that_hangs(pg_engine: sa.Engine) -> None:
    sessions = session_factory(pg_engine)
    with sessions() as setup:
        job = running_job(setup)
    beat = Heartbeat(sessions, job.id, 1, interval_s=0.05, stop_timeout_s=0.5).start()
    beat.report(step=3)
    with sessions() as locker:
        locker.execute(sa.select(Job).where(Job.id == job.id).with_for_update())
        wait_until(lambda: waiting_on_a_lock(pg_engine, HEARTBEAT_UPDATE) == 1,
                   "a beat to hang on the lock")
        started = time.monotonic()
        assert beat.stop() is False
        assert time.monotonic() - started < 2.0
        locker.rollback()

    normal = Heartbeat(sessions, job.id, 1, interval_s=0.05, stop_timeout_s=5).start()
    normal.report(step=4)
    assert normal.stop() is True   # and its final beat wrote the last progress
    with sessions() as check:
        assert check.get(Job, job.id).step == 4
