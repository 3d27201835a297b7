"""GET /queue's forecast (drl_core/queue_forecast.py): the dispatcher's rule played forward
on a snapshot; pure data, no database (the endpoint is in tests/test_queue_api.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drl_core.queue_forecast import QueueSnapshot, RunningJob, WaitingJob, forecast

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def waiting(job_id: int, owner: str, kind: str = "train", queue: str = "gpu", **fields) -> WaitingJob:
    values = {"experiment_id": job_id, "experiment_name": f"e{job_id}", "owner_id": owner,
              "owner": owner, "priority": "normal", "created_at": at(-1000 + job_id)} | fields
    return WaitingJob(job_id, queue, kind, **values)


def placed(snapshot: QueueSnapshot) -> list[tuple[str, int, int, float | None, bool]]:
    """(queue, position, job id, seconds from now to its estimated start, ready)."""
    return [(p.job.queue, p.position, p.job.job_id,
             None if p.estimated_start is None else (p.estimated_start - NOW).total_seconds(),
             p.ready) for p in forecast(snapshot)]


def test_owners_take_turns_on_one_worker_with_median_durations() -> None:
    jobs = [waiting(i, owner) for i, owner in enumerate("AAABBBC", start=1)]
    snapshot = QueueSnapshot(NOW, jobs, durations={"train": 100.0})
    assert [(job, start) for _q, _p, job, start, _r in placed(snapshot)] == [
        (1, 0), (4, 100), (7, 200), (2, 300), (5, 400), (3, 500), (6, 600)]
    assert [p for _q, p, *_ in placed(snapshot)] == list(range(1, 8))
    assert all(ready for *_, ready in placed(snapshot))


def test_running_jobs_end_as_their_progress_says_and_count_in_the_turns() -> None:
    """A's training is 3/4 done after 30 s: 10 s left. It keeps A's turn from coming first:
    A has one running and just started, so B goes next, and B's job starts when A's ends."""
    running = [RunningJob(99, "gpu", "train", "A", at(-30), step=30, total=40)]
    jobs = [waiting(1, "A"), waiting(2, "B")]
    snapshot = QueueSnapshot(NOW, jobs, running, last_starts={"gpu": {"A": at(-30)}},
                             durations={"train": 100.0})
    assert placed(snapshot) == [("gpu", 1, 2, 10.0, True), ("gpu", 2, 1, 110.0, True)]
    # Before its first progress report: the median of its kind, less what it ran.
    running = [RunningJob(99, "gpu", "train", "A", at(-30))]
    snapshot = QueueSnapshot(NOW, jobs, running, durations={"train": 100.0})
    assert [start for *_, start, _r in placed(snapshot)] == [70.0, 170.0]


def test_each_running_job_is_a_worker_of_its_queue() -> None:
    running = [RunningJob(98, "gpu", "train", "A", at(-50), 50, 100),    # 50 s left
               RunningJob(99, "gpu", "train", "B", at(-10), 10, 100)]   # 90 s left
    jobs = [waiting(i, owner) for i, owner in enumerate("ABAB", start=1)]
    snapshot = QueueSnapshot(NOW, jobs, running, durations={"train": 100.0})
    assert [(job, start) for _q, _p, job, start, _r in placed(snapshot)] == [
        (1, 50), (2, 90), (3, 150), (4, 190)]


def test_a_pipeline_crosses_queues_and_waits_for_its_upstream_steps() -> None:
    jobs = [waiting(1, "A"), waiting(2, "A", "encode", depends_on_id=1),
            waiting(3, "A", "probe", "cpu", depends_on_id=2),
            waiting(4, "A", "sample", depends_on_id=3), waiting(5, "B")]
    durations = {"train": 100.0, "encode": 20.0, "probe": 5.0, "sample": 10.0}
    snapshot = QueueSnapshot(NOW, jobs, durations=durations)
    assert placed(snapshot) == [
        ("gpu", 1, 1, 0.0, True), ("gpu", 2, 5, 100.0, True),   # B's turn before A's encode
        ("gpu", 3, 2, 200.0, False), ("gpu", 4, 4, 225.0, False),
        ("cpu", 1, 3, 220.0, False)]


def test_what_cannot_start_has_no_estimate_and_retries_wait_for_their_time() -> None:
    jobs = [waiting(1, "A", "encode", depends_on_id=50),   # its training failed: never
            waiting(2, "A", "encode", depends_on_id=51),   # its training succeeded: ready
            waiting(3, "B", retry_at=at(500))]
    snapshot = QueueSnapshot(NOW, jobs, succeeded={51}, durations={"encode": 10.0})
    assert placed(snapshot) == [("gpu", 1, 2, 0.0, True), ("gpu", 2, 3, 500.0, False),
                                ("gpu", 3, 1, None, False)]


def test_the_running_limit_holds_an_owner_back_in_the_forecast() -> None:
    running = [RunningJob(99, "gpu", "train", "A", at(-10), 10, 20)]   # 10 s left
    jobs = [waiting(1, "A"), waiting(2, "A")]
    snapshot = QueueSnapshot(NOW, jobs, running, durations={"train": 100.0}, max_running=1)
    # The second worker (B's finished job's) is not there: one running job, one worker.
    assert [start for *_, start, _r in placed(snapshot)] == [10.0, 110.0]
    two_workers = running + [RunningJob(98, "gpu", "train", "B", at(-1), 1, 2)]   # 1 s left
    snapshot = QueueSnapshot(NOW, jobs, two_workers, durations={"train": 100.0}, max_running=1)
    assert [start for *_, start, _r in placed(snapshot)] == [10.0, 110.0]   # A: one at a time
    snapshot.max_running = 0
    assert [start for *_, start, _r in placed(snapshot)] == [1.0, 10.0]


def test_kinds_that_never_ran_take_the_default_and_priority_orders_an_owners_jobs() -> None:
    jobs = [waiting(1, "A"), waiting(2, "A", priority="high"), waiting(3, "A", priority="low")]
    assert [job for _q, _p, job, *_ in placed(QueueSnapshot(NOW, jobs))] == [2, 1, 3]
    assert [start for *_, start, _r in placed(QueueSnapshot(NOW, jobs))] == [0.0, 600.0, 1200.0]
