"""The job state machine: the whole transition table against a real database (every pair of
statuses), compare-and-set races between sessions, timestamps and attempts, the reaper's
moves, and the experiment status derived from job statuses."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.db import session_factory
from drl_core.job_states import (
    ACTIVE,
    HELD_BY_WORKER,
    RESUMABLE,
    TERMINAL,
    TRANSITIONS,
    ExperimentStatus,
    IllegalTransition,
    JobStatus,
    StaleTransition,
    can_transition,
    derive_experiment_status,
    experiment_status,
    failed_job,
    heartbeat,
    reap,
    transition,
)
from drl_core.models import LOG_TAIL_LINES, Experiment, Job

pytest_plugins = ["db_fixtures"]

S = JobStatus
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


def add_job(session: Session, status: JobStatus = S.QUEUED, **fields) -> Job:
    """A committed job already in `status` (written directly: this is test setup)."""
    experiment = Experiment(name="e", spec={})
    job = Job(experiment=experiment, kind="train", status=status.value, **fields)
    session.add(job)
    session.commit()
    return job


def status_in_database(session_maker: Callable[[], Session], job_id: int) -> tuple[str, int]:
    with session_maker() as other:
        row = other.execute(sa.select(Job.status, Job.attempt).where(Job.id == job_id)).one()
    return row.status, row.attempt


# --- the table ---------------------------------------------------------------------------------


def test_table_partitions_statuses_into_active_and_terminal() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    assert TERMINAL == {S.SUCCEEDED, S.FAILED, S.CANCELLED}
    assert ACTIVE == {S.QUEUED, S.RUNNING, S.CANCELLING, S.LOST}
    assert HELD_BY_WORKER <= ACTIVE
    # Nothing leaves a terminal status but a user's resume of a failed or cancelled job.
    assert RESUMABLE == {S.FAILED, S.CANCELLED} and not TRANSITIONS[S.SUCCEEDED]
    assert all(TRANSITIONS[s] == {S.QUEUED} for s in RESUMABLE)
    # Every active status can reach a terminal one, and every status is reachable from queued.
    reachable, frontier = {S.QUEUED}, [S.QUEUED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()] - reachable:
            reachable.add(target)
            frontier.append(target)
    assert reachable == set(JobStatus)


def test_decisions_the_table_encodes() -> None:
    assert can_transition("queued", "cancelled")  # nobody holds it: no `cancelling` needed
    assert not can_transition("queued", "cancelling")
    assert can_transition("cancelling", "succeeded")  # it finished before seeing the flag
    assert not can_transition("cancelling", "lost")  # the reaper cancels it instead
    assert can_transition("lost", "queued") and can_transition("lost", "failed")
    assert not can_transition("lost", "running")  # only through the queue again
    assert can_transition("running", "queued")  # handed back by a worker that is stopping
    assert not can_transition("cancelling", "queued")  # being cancelled: it is cancelled instead
    with pytest.raises(ValueError, match="'paused' is not a valid JobStatus"):
        can_transition("queued", "paused")


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_of_statuses_against_the_table(
    db_session: Session, make_sessions: Callable[[], Session], old: JobStatus, new: JobStatus
) -> None:
    job = add_job(db_session, old, worker="w1" if old in HELD_BY_WORKER else None)

    if new in TRANSITIONS[old]:
        transition(db_session, job, new, error="x" if new is S.FAILED else None)
        db_session.commit()
        assert job.status == new
        new_attempt = new is S.QUEUED and (old is S.LOST or old in RESUMABLE)
        expected_attempt = 2 if new_attempt else 1
        assert status_in_database(make_sessions, job.id) == (new.value, expected_attempt)
    else:
        with pytest.raises(IllegalTransition) as raised:
            transition(db_session, job, new)
        message = str(raised.value)
        assert f"job {job.id}" in message and f"{old} -> {new}" in message
        assert isinstance(raised.value, ValueError)
        assert status_in_database(make_sessions, job.id) == (old.value, 1)


def test_illegal_transition_message_lists_what_is_allowed(db_session: Session) -> None:
    job = add_job(db_session, S.SUCCEEDED)
    terminal = r"succeeded -> running; from succeeded allowed: nothing \(terminal\)"
    with pytest.raises(IllegalTransition, match=terminal):
        transition(db_session, job, "running")
    queued = add_job(db_session, S.QUEUED)
    with pytest.raises(IllegalTransition, match="allowed: cancelled, failed, running"):
        transition(db_session, queued, "lost")


def test_a_lost_job_with_no_attempts_left_cannot_be_requeued(db_session: Session) -> None:
    job = add_job(db_session, S.LOST, attempt=3, max_attempts=3)
    exhausted = f"job {job.id}: illegal transition lost -> queued .*attempt 3 of 3"
    with pytest.raises(IllegalTransition, match=exhausted):
        transition(db_session, job, S.QUEUED)
    transition(db_session, job, S.FAILED, error="lost 3 times")
    assert (job.status, job.attempt, job.error) == ("failed", 3, "lost 3 times")


# --- compare-and-set ---------------------------------------------------------------------------


def test_two_workers_racing_to_start_a_job_exactly_one_wins(db_engine: sa.Engine) -> None:
    factory = session_factory(db_engine)
    with factory() as setup:
        job_ids = [add_job(setup).id for _ in range(5)]

    for job_id in job_ids:
        both_loaded = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def start(worker: str) -> None:
            with factory() as session:
                job = session.get(Job, job_id)
                both_loaded.wait(timeout=30)  # both read `queued` before either writes
                try:
                    transition(session, job, S.RUNNING, worker=worker)
                    session.commit()
                    outcomes[worker] = "won"
                except StaleTransition as stale:
                    session.rollback()
                    outcomes[worker] = str(stale)

        threads = [threading.Thread(target=start, args=(name,)) for name in ("w1", "w2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        winners = [w for w, outcome in outcomes.items() if outcome == "won"]
        assert len(outcomes) == 2 and len(winners) == 1, outcomes
        loser = ({"w1", "w2"} - set(winners)).pop()
        assert outcomes[loser] == (
            f"job {job_id}: expected queued at attempt 1, but it is running at attempt 1"
        )
        with factory() as check:
            assert check.get(Job, job_id).worker == winners[0]


def test_a_writer_holding_an_old_read_loses(
    db_session: Session, make_sessions: Callable[[], Session]
) -> None:
    job = add_job(db_session, S.QUEUED)
    with make_sessions() as api:  # a cancel request arrives after the worker read the job
        transition(api, api.get(Job, job.id), S.CANCELLED)
        api.commit()
    with pytest.raises(StaleTransition, match="expected queued at attempt 1, but it is cancelled"):
        transition(db_session, job, S.RUNNING)


def test_a_presumed_dead_worker_cannot_finish_the_next_attempt(
    db_session: Session, make_sessions: Callable[[], Session]
) -> None:
    """running (attempt 1) -> lost -> queued -> running (attempt 2, another worker): the first
    worker's view also says `running`, but of attempt 1, so its write must fail."""
    first_worker_view = add_job(db_session, S.QUEUED)
    transition(db_session, first_worker_view, S.RUNNING, worker="w1")
    db_session.commit()
    db_session.expunge(first_worker_view)  # keep its attempt-1 state, as w1's memory would

    with make_sessions() as other:
        job = other.get(Job, first_worker_view.id)
        assert reap(other, job) == S.QUEUED
        transition(other, job, S.RUNNING, worker="w2")
        other.commit()
        assert (job.status, job.attempt) == ("running", 2)

    db_session.add(first_worker_view)
    overtaken = "expected running at attempt 1, but it is running at attempt 2"
    with pytest.raises(StaleTransition, match=overtaken):
        transition(db_session, first_worker_view, S.SUCCEEDED)
    with pytest.raises(StaleTransition):
        heartbeat(db_session, first_worker_view, step=10)


def test_a_deleted_job_is_stale(db_session: Session, make_sessions: Callable[[], Session]) -> None:
    job = add_job(db_session, S.RUNNING)
    with make_sessions() as api:
        api.execute(sa.delete(Experiment).where(Experiment.id == job.experiment_id))
        api.commit()
    with pytest.raises(StaleTransition, match=f"job {job.id}: .*it no longer exists"):
        transition(db_session, job, S.SUCCEEDED)


# --- what a transition writes besides the status -----------------------------------------------


def test_timestamps_attempt_and_worker_follow_the_status(db_session: Session) -> None:
    job = add_job(db_session, S.QUEUED)
    created = job.updated_at
    assert job.started_at is None and job.finished_at is None and job.heartbeat_at is None

    transition(db_session, job, S.RUNNING, worker="gpu0@box")
    assert job.started_at is not None and job.heartbeat_at == job.started_at
    assert job.updated_at >= created and job.finished_at is None and job.worker == "gpu0@box"
    first_start = job.started_at

    transition(db_session, job, S.LOST)
    transition(db_session, job, S.QUEUED)
    assert job.attempt == 2 and job.worker is None and job.heartbeat_at is None
    assert job.finished_at is None

    transition(db_session, job, S.RUNNING, worker="gpu1@box")
    assert job.started_at >= first_start
    transition(db_session, job, S.SUCCEEDED, step=100, loss=0.25)
    assert job.finished_at >= job.started_at
    assert (job.step, job.loss, job.attempt) == (100, 0.25, 2)
    db_session.commit()


def test_a_job_handed_back_keeps_its_attempt_and_needs_a_new_message(db_session: Session) -> None:
    """running -> queued: its worker is shutting down and stopped it at a checkpoint. No
    attempt is spent (a lost job's is); worker, heartbeat and the spent message are cleared."""
    job = add_job(db_session, S.QUEUED, attempt=2, max_attempts=3)
    db_session.execute(sa.update(Job).where(Job.id == job.id).values(enqueued_at=job.created_at))
    transition(db_session, job, S.RUNNING, worker="gpu0@box")
    heartbeat(db_session, job, step=40, total=100)
    transition(db_session, job, S.QUEUED)
    db_session.commit()
    assert (job.status, job.attempt, job.worker, job.heartbeat_at, job.enqueued_at) == (
        "queued", 2, None, None, None)
    assert (job.step, job.finished_at) == (40, None)   # its progress stays until it runs again
    transition(db_session, job, S.RUNNING, worker="gpu1@box")
    assert (job.status, job.attempt) == ("running", 2)


def test_cancelling_a_running_job_finishes_when_the_worker_stops(db_session: Session) -> None:
    job = add_job(db_session, S.RUNNING, worker="w1")
    transition(db_session, job, S.CANCELLING)
    assert job.finished_at is None
    transition(db_session, job, S.CANCELLED)
    assert job.finished_at is not None


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"colour": "red"}, r"\['colour'\] are not columns of jobs"),
     ({"attempt": 5}, r"\['attempt'\] are set by the state machine"),
     ({"status": "failed"}, r"\['status'\] are set by the state machine")],
)
def test_transition_refuses_fields_it_must_not_write(
    db_session: Session, fields: dict, message: str
) -> None:
    job = add_job(db_session, S.QUEUED)
    with pytest.raises(ValueError, match=rf"transition\(\) of job {job.id}: {message}"):
        transition(db_session, job, S.RUNNING, **fields)
    assert job.status == "queued"


# --- heartbeat and reaper ----------------------------------------------------------------------


def test_heartbeat_writes_progress_and_reports_a_cancel(
    db_session: Session, make_sessions: Callable[[], Session]
) -> None:
    job = add_job(db_session, S.QUEUED)
    transition(db_session, job, S.RUNNING, worker="w1")
    db_session.commit()
    first_beat = job.heartbeat_at

    lines = [f"step {i}" for i in range(LOG_TAIL_LINES + 5)]
    assert heartbeat(db_session, job, step=5, total=100, loss=1.5, images_per_s=320.0,
                     log_tail=job.tail_with(lines)) == S.RUNNING
    db_session.commit()
    assert job.heartbeat_at >= first_beat and (job.step, job.total, job.loss) == (5, 100, 1.5)
    assert job.log_tail == lines[-LOG_TAIL_LINES:]

    with make_sessions() as api:
        transition(api, api.get(Job, job.id), S.CANCELLING)
        api.commit()
    assert heartbeat(db_session, job, step=6) == S.CANCELLING

    with pytest.raises(ValueError, match=r"heartbeat\(\) of job .*\['status'\] are set by the state machine"):
        heartbeat(db_session, job, status="running")


def test_heartbeat_of_a_job_not_held_is_stale(db_session: Session) -> None:
    job = add_job(db_session, S.QUEUED)
    not_held = "expected cancelling or running at attempt 1, but it is queued"
    with pytest.raises(StaleTransition, match=not_held):
        heartbeat(db_session, job, step=1)


def test_reaper_requeues_then_fails_and_cancels_what_was_being_cancelled(db_session: Session) -> None:
    job = add_job(db_session, S.RUNNING, attempt=2, max_attempts=3)
    assert reap(db_session, job) == S.QUEUED and job.attempt == 3

    transition(db_session, job, S.RUNNING)
    assert reap(db_session, job) == S.FAILED
    assert job.attempt == 3 and "no attempts left" in job.error and job.finished_at is not None

    stopping = add_job(db_session, S.CANCELLING)
    assert reap(db_session, stopping) == S.CANCELLED and stopping.attempt == 1


# --- experiment status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "queued"),
        (["queued", "queued", "queued", "queued"], "queued"),
        (["running", "queued", "queued", "queued"], "running"),
        (["succeeded", "queued", "queued", "queued"], "running"),  # between steps
        (["succeeded", "lost", "queued"], "running"),  # being recovered
        (["succeeded", "succeeded", "running", "failed"], "running"),  # still going
        (["succeeded", "cancelling", "queued"], "cancelling"),
        (["succeeded", "succeeded", "succeeded", "succeeded"], "succeeded"),
        (["succeeded", "failed", "cancelled", "cancelled"], "failed"),
        (["failed", "failed", "failed", "failed"], "failed"),
        (["succeeded", "cancelled", "cancelled"], "cancelled"),
        (["cancelled"], "cancelled"),
    ],
)
def test_derive_experiment_status(statuses: list[str], expected: str) -> None:
    status = derive_experiment_status(statuses)
    assert status == expected and isinstance(status, ExperimentStatus)


def test_derive_experiment_status_rejects_unknown_statuses() -> None:
    with pytest.raises(ValueError, match="'done' is not a valid JobStatus"):
        derive_experiment_status(["succeeded", "done"])


def test_failed_job_is_the_first_failed_step_in_pipeline_order() -> None:
    def job(id_: int, kind: str, status: str) -> SimpleNamespace:
        return SimpleNamespace(id=id_, kind=kind, status=status)

    jobs = [job(4, "sample", "failed"), job(2, "encode", "failed"), job(3, "probe", "succeeded"),
            job(1, "train", "succeeded"), job(5, "encode", "failed")]
    assert failed_job(jobs).id == 2
    assert failed_job([job(1, "train", "succeeded")]) is None


def test_jobs_requested_later_do_not_change_the_experiments_status():
    """Status and failed step come from the pipeline (the first job of each kind): a later
    sample job that was cancelled or failed is reported on itself, not on the experiment."""
    from types import SimpleNamespace as J

    pipeline = [J(id=1, kind="train", status="succeeded", error=None),
                J(id=2, kind="encode", status="succeeded", error=None),
                J(id=3, kind="probe", status="succeeded", error=None),
                J(id=4, kind="sample", status="succeeded", error=None)]
    extra = [J(id=5, kind="sample", status="cancelled", error=None),
             J(id=6, kind="encode", status="failed", error="boom")]
    assert experiment_status(pipeline + extra) is ExperimentStatus.SUCCEEDED
    assert failed_job(pipeline + extra) is None
    assert derive_experiment_status(j.status for j in pipeline + extra) is ExperimentStatus.FAILED

    broken = [J(id=1, kind="train", status="failed", error="no data"),
              J(id=2, kind="encode", status="failed", error="upstream")]
    assert experiment_status(broken) is ExperimentStatus.FAILED
    assert failed_job(broken).kind == "train"
