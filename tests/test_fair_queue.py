"""The fair dispatcher (drl_core/fair_queue.py): whose turn it is, and the claim that starts
that job in one transaction, on real PostgreSQL and SQLite; racing claims never take one job
twice, and take exactly what claims one after the other would.

The worker end to end (a real Celery worker taking turns) is in tests/test_fair_dispatch.py.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from drl_core.db import session_factory
from drl_core.fair_queue import (Candidate, OwnerTurn, claim_next_job, held_back, next_in_turn,
                                 nudge_after_slot_freed, owner_turns)
from drl_core.job_states import JobStatus, transition, utc_now
from drl_core.models import Experiment, Job, User
from drl_core.priority import Priority

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import filesystem_celery, queued_job_ids  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- the rule ----------------------------------------------------------------------------


def play(candidates: list[Candidate], turns: dict | None = None, max_running: int = 0) -> list[str]:
    """Pick, start and finish one at a time (one worker), as `claim_next_job` would; the
    owners in the order their jobs ran."""
    turns, order, waiting, clock = dict(turns or {}), [], list(candidates), 1000
    while (picked := next_in_turn(waiting, turns, max_running)) is not None:
        waiting.remove(picked)
        order.append(picked.owner_id)
        clock += 1
        turns[picked.owner_id] = OwnerTurn(0, at(clock))
    return order


def test_two_owners_alternate_and_a_newcomer_goes_third() -> None:
    jobs = [Candidate(i, owner, "normal", at(i)) for i, owner in
            enumerate(["A", "A", "A", "B", "B", "B", "C"])]
    assert play(jobs) == ["A", "B", "C", "A", "B", "A", "B"]
    assert play(jobs[:6]) == ["A", "B", "A", "B", "A", "B"]


def test_fewest_running_goes_first_then_the_oldest_last_start() -> None:
    jobs = [Candidate(1, "A", "normal", at(1)), Candidate(2, "B", "normal", at(2))]
    # A started last long ago but still runs one; B ran more recently and is idle.
    turns = {"A": OwnerTurn(1, at(0)), "B": OwnerTurn(0, at(50))}
    assert next_in_turn(jobs, turns).owner_id == "B"
    turns = {"A": OwnerTurn(0, at(0)), "B": OwnerTurn(0, at(50))}
    assert next_in_turn(jobs, turns).owner_id == "A"
    # Never started beats any last start; among the never-started, the oldest job.
    assert next_in_turn(jobs, {"A": OwnerTurn(0, at(-10**6))}).owner_id == "B"
    assert next_in_turn(jobs, {}).job_id == 1


def test_priority_orders_an_owners_jobs_and_breaks_ties_between_owners() -> None:
    mine = [Candidate(1, "A", "low", at(1)), Candidate(2, "A", "normal", at(2)),
            Candidate(3, "A", "high", at(3)), Candidate(4, "A", "normal", at(4))]
    assert [next_in_turn(mine[i:] + mine[:i], {}).job_id for i in range(4)] == [3] * 4
    order = []
    waiting = list(mine)
    while (picked := next_in_turn(waiting, {})) is not None:
        waiting.remove(picked)
        order.append(picked.job_id)
    assert order == [3, 2, 4, 1]
    # It never overtakes another owner's turn: B's high job waits for A's turn to pass.
    jobs = [Candidate(1, "A", "low", at(1)), Candidate(2, "B", "high", at(2))]
    assert next_in_turn(jobs, {"B": OwnerTurn(0, at(10)), "A": OwnerTurn(0, at(5))}).owner_id == "A"
    # Equal turns (neither ever started): the higher priority, though younger.
    assert next_in_turn(jobs, {}).owner_id == "B"


def test_an_owner_at_the_running_limit_has_no_turn() -> None:
    jobs = [Candidate(1, "A", "high", at(1)), Candidate(2, "B", "normal", at(2))]
    turns = {"A": OwnerTurn(2, at(0))}
    assert next_in_turn(jobs, turns, max_running=2).owner_id == "B"
    assert next_in_turn(jobs[:1], turns, max_running=2) is None
    assert next_in_turn(jobs[:1], turns, max_running=3).owner_id == "A"
    assert next_in_turn(jobs[:1], turns).owner_id == "A"   # 0: no limit


# --- the claim, on a real database -------------------------------------------------------


@pytest.fixture
def sessions(db_engine: sa.Engine) -> sessionmaker[Session]:
    """Sessions on real PostgreSQL, then on SQLite (db_fixtures' `db_engine`)."""
    return session_factory(db_engine)


def add_user(session: Session, name: str) -> int:
    user = User(name=name)
    session.add(user)
    session.flush()
    return user.id


def add_training(session: Session, owner_id: int | None, priority: str = "normal",
                 queue: str = "gpu", **job_fields) -> int:
    """An experiment with one queued train job (what the dispatcher looks at); its id."""
    experiment = Experiment(name="e", owner_id=owner_id, spec={}, priority=priority)
    job = Job(experiment=experiment, kind="train", queue=queue, **job_fields)
    session.add_all([experiment, job])
    session.commit()
    return job.id


def owner_of(session: Session, job_id: int) -> int | None:
    return session.get(Job, job_id).experiment.owner_id


def finish(session: Session, job: Job) -> None:
    transition(session, job, JobStatus.SUCCEEDED)
    session.commit()


def test_claims_take_turns_in_the_database(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        a, b, c = (add_user(session, name) for name in ("alice", "bob", "carol"))
        for owner in (a, a, a, b, b, b, c):
            add_training(session, owner)
        order = []
        while (job := claim_next_job(session, "gpu", "w:1")) is not None:
            assert (job.status, job.worker, job.attempt) == ("running", "w:1", 1)
            assert job.started_at is not None and job.heartbeat_at is not None
            order.append(owner_of(session, job.id))
            finish(session, job)
        assert order == [a, b, c, a, b, a, b]
        assert claim_next_job(session, "cpu", "w:1") is None


def test_only_jobs_that_may_start_now_are_claimed(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        owner = add_user(session, "alice")
        later = add_training(session, owner, retry_at=utc_now() + timedelta(hours=1))
        cancelled = session.get(Job, add_training(session, owner))
        transition(session, cancelled, JobStatus.CANCELLED)
        elsewhere = add_training(session, owner, queue="cpu")
        train = session.get(Job, add_training(session, owner))
        encode = Job(experiment_id=train.experiment_id, kind="encode", queue="gpu",
                     depends_on=train)
        session.add(encode)
        session.commit()
        encode_id = encode.id

        assert claim_next_job(session, "gpu", "w").id == train.id   # not `later`, nor encode
        assert claim_next_job(session, "gpu", "w") is None          # encode waits for train
        finish(session, session.get(Job, train.id))
        assert claim_next_job(session, "gpu", "w").id == encode_id
        assert claim_next_job(session, "gpu", "w", now=utc_now() + timedelta(hours=2)).id == later
        assert claim_next_job(session, "cpu", "w").id == elsewhere


def test_the_running_limit_holds_an_owner_back(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        a, b = add_user(session, "alice"), add_user(session, "bob")
        first, second = add_training(session, a), add_training(session, a)
        bobs = add_training(session, b)
        assert claim_next_job(session, "gpu", "w", max_running=1).id == first
        assert held_back(session, "gpu", 1) == {a}
        assert claim_next_job(session, "gpu", "w", max_running=1).id == bobs
        assert claim_next_job(session, "gpu", "w", max_running=1) is None   # alice runs one
        finish(session, session.get(Job, first))
        assert held_back(session, "gpu", 1) == {b}
        assert claim_next_job(session, "gpu", "w", max_running=1).id == second
        turns = owner_turns(session, "gpu")
        assert (turns[a].running, turns[b].running) == (1, 1)


def test_a_freed_slot_nudges_the_owners_next_job_under_a_running_limit(
        sessions: sessionmaker[Session], tmp_path) -> None:
    """A nudge that found only jobs the limit holds back was dropped: when the owner's
    running job stops, their next job gets one (and nothing is sent without a limit)."""
    fs_app, fs_settings = filesystem_celery(tmp_path)   # nobody consumes it: messages counted
    with sessions() as session:
        owner, idle = add_user(session, "alice"), add_user(session, "bob")
        first, second = add_training(session, owner), add_training(session, owner)
        finish(session, claim_next_job(session, "gpu", "w", max_running=1))
        assert nudge_after_slot_freed(session, "gpu", owner, 0, fs_app) is None
        assert queued_job_ids(fs_settings, "gpu") == []
        assert nudge_after_slot_freed(session, "gpu", owner, 1, fs_app) == second != first
        assert queued_job_ids(fs_settings, "gpu") == [second]
        assert session.get(Job, second).enqueued_at is not None
        assert nudge_after_slot_freed(session, "gpu", idle, 1, fs_app) is None


def test_jobs_without_an_owner_are_one_owners(sessions: sessionmaker[Session]) -> None:
    """Auth off: every experiment is nobody's; nobody and a user still take turns."""
    with sessions() as session:
        alice = add_user(session, "alice")
        for owner in (None, None, alice, alice):
            add_training(session, owner)
        order = []
        while (job := claim_next_job(session, "gpu", "w")) is not None:
            order.append(owner_of(session, job.id))
            finish(session, job)
        assert order == [None, alice, None, alice]


def test_priority_orders_an_owners_jobs_in_the_database(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        owner = add_user(session, "root")
        low, normal, high = (add_training(session, owner, p.value) for p in
                             (Priority.LOW, Priority.NORMAL, Priority.HIGH))
        order = []
        while (job := claim_next_job(session, "gpu", "w")) is not None:
            order.append(job.id)
            finish(session, job)
        assert order == [high, normal, low]


def race(sessions: sessionmaker[Session], claimers: int) -> list[int | None]:
    """`claimers` threads, each with a session of its own, claim at the same moment; the
    job ids they got."""
    barrier = threading.Barrier(claimers)
    got: list[int | None] = [None] * claimers
    errors: list[BaseException] = []

    def claim(index: int) -> None:
        try:
            with sessions() as session:
                barrier.wait()
                job = claim_next_job(session, "gpu", f"w:{index}")
                got[index] = None if job is None else job.id
        except BaseException as error:   # (reported by the test, not lost in the thread)
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return got


@pytest.mark.parametrize("trial", range(20))
def test_racing_claims_never_take_one_job_twice_postgresql(pg_engine: sa.Engine, trial: int) -> None:
    """Eight workers (on as many connections) claim at once from 3 users' 9 queued jobs, 20
    trials: every claim gets a job of its own, each job is started once, and they are the
    very jobs eight claims one after the other take (the claims take turns on the queue's
    lock, so fairness holds across machines too)."""
    sessions = session_factory(pg_engine)
    with sessions() as session:
        owners = [add_user(session, f"user{i}-{trial}") for i in range(3)]
        for owner in owners * 3:
            add_training(session, owner)
    got = race(sessions, 8)
    assert None not in got and len(set(got)) == 8, got
    with sessions() as session:
        started = session.scalars(sa.select(Job).where(Job.status == JobStatus.RUNNING.value)
                                  .order_by(Job.started_at, Job.id)).all()
        assert sorted(j.id for j in started) == sorted(got)
        assert all(j.attempt == 1 and j.worker.startswith("w:") for j in started)
        # In the order they started: each owner's first three, then their second three,...
        by_start = [j.experiment.owner_id for j in started]
        assert sorted(by_start[:3]) == sorted(by_start[3:6]) == sorted(owners)
        assert set(by_start[6:]) < set(owners) and len(set(by_start[6:])) == 2
        (left_over,) = [owner for owner in owners if owner not in by_start[6:]]
        # The ninth job, claimed alone now, is the one owner's who ran only twice.
        assert owner_of(session, claim_next_job(session, "gpu", "w").id) == left_over


@pytest.mark.parametrize("trial", range(5))
def test_racing_claims_never_take_one_job_twice_sqlite(sqlite_engine: sa.Engine, trial: int) -> None:
    sessions = session_factory(sqlite_engine)
    with sessions() as session:
        owners = [add_user(session, f"user{i}") for i in range(2)]
        for owner in owners * 3:
            add_training(session, owner)
    got = race(sessions, 4)
    taken = [job_id for job_id in got if job_id is not None]
    assert len(taken) == len(set(taken)) >= 1, got
    with sessions() as session:
        running = session.scalars(sa.select(Job.id).where(Job.status == JobStatus.RUNNING.value)).all()
        assert sorted(running) == sorted(taken)
