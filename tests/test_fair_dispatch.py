"""Fair dispatch end to end: a real Celery worker process on real PostgreSQL and Redis takes
the jobs the database picks (drl_core/fair_queue.py), not the broker's order.

The issue's case: two users submit three experiments each, then a third user one, while no
worker runs; one worker (concurrency 1) then trains them A, B, C, A, B, A, B, whatever
order their messages are in. Each experiment is a tiny training alone (its other steps are
cancelled), so the train jobs' start times are the order.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from drl_core.experiments import create_experiment
from drl_core.job_states import JobStatus, transition
from drl_core.models import Job, User
from worker.context import WorkerResources
from worker.tasks import run_next_job

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import ServiceHarness, filesystem_celery, tiny_spec, wait_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]

TRAIN_ONLY = {"iterations": 2, "log_every": 1, "checkpoint_every": 2, "warmup": 1}


def add_users(service: ServiceHarness, *names: str) -> dict[str, int]:
    with service.sessions() as session:
        users = {name: User(name=name) for name in names}
        session.add_all(users.values())
        session.commit()
        return {name: user.id for name, user in users.items()}


def submit_training(service: ServiceHarness, owner_id: int) -> int:
    """A new experiment of `owner_id` whose only job is its training; the train job's id.
    Its message goes to the broker now."""
    with service.sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(train=TRAIN_ONLY), owner_id, None,
                                          celery_app=service.celery_app)
        for later_step in experiment.jobs[1:]:
            transition(session, later_step, JobStatus.CANCELLED)
        session.commit()
        return experiment.jobs[0].id


def test_two_users_take_turns_and_a_third_users_job_runs_third(service: ServiceHarness) -> None:
    owner = add_users(service, "alice", "bob", "carol")
    name_of = {user_id: name for name, user_id in owner.items()}
    # Submitted alice x3, bob x3, carol: the broker holds the messages in that order.
    trains = [submit_training(service, owner[name])
              for name in ("alice",) * 3 + ("bob",) * 3 + ("carol",)]

    worker = service.worker   # the first worker of this module: nothing ran before
    ids = sa.select(Job).where(Job.id.in_(trains))

    def all_trained() -> list[Job] | None:
        with service.sessions() as session:
            jobs = session.scalars(ids).all()
        assert all(j.status in ("queued", "running", "succeeded") for j in jobs), \
            [(j.id, j.status, j.error) for j in jobs]
        return jobs if all(j.status == "succeeded" for j in jobs) else None

    jobs = wait_for(all_trained, 300, "the seven trainings")
    by_start = sorted(jobs, key=lambda j: j.started_at)
    with service.sessions() as session:
        owners = [name_of[session.get(Job, j.id).experiment.owner_id] for j in by_start]
    assert owners == ["alice", "bob", "carol", "alice", "bob", "alice", "bob"]
    # One at a time, each after the previous one ended.
    assert all(earlier.finished_at <= later.started_at
               for earlier, later in zip(by_start, by_start[1:]))
    log = worker.log_text()
    assert log.count("'s turn") >= 4   # messages that started another job than their own
    # Every message started one job: none was left over, none had to be sent again.
    assert "no job may start" not in log
    assert "no longer in the broker" not in log and "sending it again" not in log


def test_a_message_runs_the_job_whose_turn_it_is_not_the_one_it_names(
        service: ServiceHarness, tmp_path) -> None:
    """What the worker's task does with a message (`run_next_job`), in this process: erin's
    message starts dave's older job, dave's message then erin's; a third finds nothing to
    start. (Trainings on a missing dataset: they fail at once.)"""
    fs_app, _ = filesystem_celery(tmp_path)   # nobody consumes it: run_next_job is called here
    owner = add_users(service, "dave", "erin")
    spec = tiny_spec(dataset={"name": "npz", "path": str(tmp_path / "missing.npz")})
    trains = {}
    with service.sessions() as session:
        for name in ("dave", "erin"):
            experiment, _ = create_experiment(session, spec, owner[name], None, celery_app=fs_app)
            trains[name] = experiment.jobs[0].id
    resources = WorkerResources(service.settings)
    try:
        assert run_next_job("gpu", resources, fs_app, nudged_by=trains["erin"]) == "failed"
        assert (service.job(trains["dave"]).status, service.job(trains["erin"]).status) == (
            "failed", "queued")
        assert run_next_job(None, resources, fs_app, nudged_by=trains["dave"]) == "failed"
        assert service.job(trains["erin"]).status == "failed"
        assert run_next_job("gpu", resources, fs_app, nudged_by=trains["dave"]) == "idle"
        assert run_next_job(None, resources, fs_app, nudged_by=10**9) == "missing"
    finally:
        resources.dispose()
