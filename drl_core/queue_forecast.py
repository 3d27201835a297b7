"""GET /queue: the queued jobs in the order they will run, with when each should start.

The order is the dispatcher's own rule (drl_core/fair_queue.py `next_in_turn`) played
forward in time by a small simulation, per queue (gpu, cpu), over a snapshot of the
database:

- each queue has as many workers as it has jobs running now (at least one); a worker is
  free when its running job should end;
- a running job should end after `elapsed * (total - step) / step` more (its progress so
  far; a training's steps take alike long), or, before its first progress report, after the
  median duration of its kind minus what it has run;
- a queued job takes the median duration of its kind (finished - started, over the last
  `DURATION_SAMPLE` jobs of that kind that succeeded; `DEFAULT_DURATION_S` for a kind that
  never ran), whatever its spec: an estimate, not a promise;
- a job may start once its upstream step has ended (in the simulation, for one queued too:
  an encode waits for its training, a probe on the cpu queue for its encode on the gpu
  queue) and its retry time has come; a job whose upstream failed or was cancelled never
  starts (it is settled with it) and has no estimate;
- whenever a worker is free, `next_in_turn` picks among the jobs that may start then, with
  each owner's jobs running and last start as the simulation has them.
Jobs added later, cancelled, or faster or slower than their median change the answer; it
is computed afresh on every request.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.fair_queue import Candidate, OwnerTurn, next_in_turn, owner_turns
from drl_core.job_states import HELD_BY_WORKER, JobKind, JobStatus
from drl_core.models import Experiment, Job, User
from drl_core.queue import QUEUES

DURATION_SAMPLE = 50
DEFAULT_DURATION_S = 600.0


@dataclass(frozen=True)
class WaitingJob:
    """A queued job, with what the dispatcher orders it by and what a listing shows."""

    job_id: int
    queue: str
    kind: str
    experiment_id: int
    experiment_name: str
    owner_id: int | None
    owner: str | None
    priority: str
    created_at: datetime
    depends_on_id: int | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class RunningJob:
    """A job a worker holds now."""

    job_id: int
    queue: str
    kind: str
    owner_id: int | None
    started_at: datetime
    step: int | None = None
    total: int | None = None


@dataclass
class QueueSnapshot:
    """What the forecast starts from (`load_snapshot` reads it from the database)."""

    now: datetime
    waiting: list[WaitingJob]
    running: list[RunningJob] = field(default_factory=list)
    # Upstream jobs that neither wait nor run: those that succeeded (the others never will).
    succeeded: set[int] = field(default_factory=set)
    # queue -> owner -> their last start there (fair_queue.owner_turns).
    last_starts: dict[str, dict[int | None, datetime | None]] = field(default_factory=dict)
    # kind -> median duration in seconds.
    durations: dict[str, float] = field(default_factory=dict)
    max_running: int = 0


@dataclass(frozen=True)
class QueuePlace:
    """A queued job's place: `position` on its queue (1 = next), its estimated start (None:
    it cannot start, its upstream step failed or was cancelled), and whether it may start
    now (else it waits for its upstream step or its retry time)."""

    job: WaitingJob
    position: int
    estimated_start: datetime | None
    ready: bool


def forecast(snapshot: QueueSnapshot) -> list[QueuePlace]:
    """Every waiting job's place, by queue (in `QUEUES` order) then position."""
    return _Simulation(snapshot).run()


class _Simulation:
    def __init__(self, snapshot: QueueSnapshot) -> None:
        self.s, self.now = snapshot, snapshot.now
        self.ends: dict[int, datetime] = {job_id: self.now for job_id in snapshot.succeeded}
        # queue -> [(owner, end)] of every job running there, now or in the simulation
        self.runs: dict[str, list[tuple[int | None, datetime]]] = {}
        for job in snapshot.running:
            end = self.now + self.remaining(job)
            self.ends[job.job_id] = end
            self.runs.setdefault(job.queue, []).append((job.owner_id, end))
        self.last_starts = {q: dict(starts) for q, starts in snapshot.last_starts.items()}
        self.pending: dict[str, list[WaitingJob]] = {}
        for job in sorted(snapshot.waiting, key=lambda j: j.job_id):
            self.pending.setdefault(job.queue, []).append(job)
        self.starts: dict[int, datetime] = {}

    def duration(self, kind: str) -> timedelta:
        return timedelta(seconds=self.s.durations.get(kind, DEFAULT_DURATION_S))

    def remaining(self, job: RunningJob) -> timedelta:
        elapsed = max(self.now - job.started_at, timedelta(0))
        if job.step and job.total and job.total >= job.step:
            return elapsed * ((job.total - job.step) / job.step)
        return max(self.duration(job.kind) - elapsed, timedelta(0))

    def may_start_at(self, job: WaitingJob) -> datetime | None:
        """When `job` may start, as far as the simulation knows yet (None: not yet known, or
        never: its upstream step is neither done, running nor simulated)."""
        start = max(self.now, job.retry_at or self.now)
        if job.depends_on_id is None:
            return start
        upstream_end = self.ends.get(job.depends_on_id)
        return None if upstream_end is None else max(start, upstream_end)

    def running_at(self, queue: str, moment: datetime) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for owner, end in self.runs.get(queue, []):
            if end > moment:
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    def run(self) -> list[QueuePlace]:
        events: list[tuple[datetime, int, str]] = []
        sequence = 0
        for queue in self.pending:
            workers = [end for _owner, end in self.runs.get(queue, [])] or [self.now]
            for free_at in workers:
                events.append((free_at, sequence, queue))
                sequence += 1
        heapq.heapify(events)
        budget = 20 * (len(self.s.waiting) + len(events) + 1)   # (a guard; never reached)
        while events and budget > 0:
            budget -= 1
            moment, _, queue = heapq.heappop(events)
            if not self.pending.get(queue):
                continue
            next_free = self.start_next(queue, moment)
            if next_free is None:
                next_free = self.next_change(queue, moment, events)
            if next_free is not None:
                heapq.heappush(events, (next_free, sequence, queue))
                sequence += 1
        return self.places()

    def start_next(self, queue: str, moment: datetime) -> datetime | None:
        """Start the job whose turn it is at `moment`, if one may start; when it ends."""
        startable = {job.job_id: job for job in self.pending[queue]
                     if (at := self.may_start_at(job)) is not None and at <= moment}
        running = self.running_at(queue, moment)
        owners = {job.owner_id for job in startable.values()}
        turns = {owner: OwnerTurn(running.get(owner, 0), self.last_starts.get(queue, {}).get(owner))
                 for owner in owners}
        picked = next_in_turn((Candidate(j.job_id, j.owner_id, j.priority, j.created_at)
                               for j in startable.values()), turns, self.s.max_running)
        if picked is None:
            return None
        job = startable[picked.job_id]
        end = moment + self.duration(job.kind)
        self.pending[queue].remove(job)
        self.starts[job.job_id], self.ends[job.job_id] = moment, end
        self.runs.setdefault(queue, []).append((job.owner_id, end))
        self.last_starts.setdefault(queue, {})[job.owner_id] = moment
        return end

    def next_change(self, queue: str, moment: datetime,
                    events: Iterable[tuple[datetime, int, str]]) -> datetime | None:
        """A worker of `queue` found nothing to start at `moment`: when to look again. When a
        job of it may start, when a running job ends (an owner below the running limit
        again), or when another queue's worker is next free (it may end an upstream step).
        None: never (what is left can never start)."""
        later = [at for job in self.pending[queue]
                 if (at := self.may_start_at(job)) is not None and at > moment]
        later += [end for _owner, end in self.runs.get(queue, []) if end > moment]
        later += [at for at, _, other in events if other != queue]
        return min(later, default=None)

    def places(self) -> list[QueuePlace]:
        out = []
        for queue in sorted({j.queue for j in self.s.waiting},
                            key=lambda q: (QUEUES.index(q) if q in QUEUES else len(QUEUES), q)):
            jobs = [j for j in self.s.waiting if j.queue == queue]
            jobs.sort(key=lambda j: (self.starts.get(j.job_id) is None,
                                     self.starts.get(j.job_id) or self.now, j.job_id))
            for position, job in enumerate(jobs, start=1):
                ready = ((job.depends_on_id is None or job.depends_on_id in self.s.succeeded)
                         and (job.retry_at is None or job.retry_at <= self.now))
                out.append(QueuePlace(job, position, self.starts.get(job.job_id), ready))
        return out


# --- the snapshot, from the database ------------------------------------------------------


def median_durations(session: Session, sample: int = DURATION_SAMPLE) -> dict[str, float]:
    """kind -> the median seconds from start to end of its last `sample` succeeded jobs."""
    durations = {}
    for kind in JobKind:
        rows = session.execute(
            sa.select(Job.started_at, Job.finished_at).where(
                Job.kind == kind.value, Job.status == JobStatus.SUCCEEDED.value,
                Job.started_at.is_not(None), Job.finished_at.is_not(None))
            .order_by(Job.finished_at.desc()).limit(sample)).all()
        if rows:
            durations[kind.value] = statistics.median(
                max((end - start).total_seconds(), 0.0) for start, end in rows)
    return durations


def load_snapshot(session: Session, now: datetime, max_running: int = 0) -> QueueSnapshot:
    """The queued and running jobs, the upstream steps that succeeded, each owner's last
    start per queue and the median durations, read now."""
    waiting = [WaitingJob(job.id, job.queue, job.kind, job.experiment_id, name, owner_id, owner,
                          priority, job.created_at, job.depends_on_id, job.retry_at)
               for job, name, owner_id, owner, priority in session.execute(
                   sa.select(Job, Experiment.name, Experiment.owner_id, User.name,
                             Experiment.priority)
                   .join(Experiment, Job.experiment_id == Experiment.id)
                   .outerjoin(User, Experiment.owner_id == User.id)
                   .where(Job.status == JobStatus.QUEUED.value).order_by(Job.id))]
    running = [RunningJob(job.id, job.queue, job.kind, owner_id, job.started_at or now,
                          job.step, job.total)
               for job, owner_id in session.execute(
                   sa.select(Job, Experiment.owner_id)
                   .join(Experiment, Job.experiment_id == Experiment.id)
                   .where(Job.status.in_(sorted(s.value for s in HELD_BY_WORKER))))]
    upstream = {j.depends_on_id for j in waiting if j.depends_on_id is not None}
    succeeded = set(session.scalars(sa.select(Job.id).where(
        Job.id.in_(upstream), Job.status == JobStatus.SUCCEEDED.value))) if upstream else set()
    last_starts = {queue: {owner: turn.last_start
                           for owner, turn in owner_turns(session, queue).items()}
                   for queue in {j.queue for j in waiting}}
    return QueueSnapshot(now, waiting, running, succeeded, last_starts,
                         median_durations(session), max_running)
