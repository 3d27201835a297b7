"""What a job runner works with: the process's resources, the job's heartbeat, its context.

Heartbeat: a background thread of the job's process refreshes the job row every
`heartbeat_interval_s` through `job_states.heartbeat` (a compare-and-set on status and
attempt), writing the latest progress and log lines with it. The same write answers two
questions the runner polls cheaply, without a database read of its own:
- was a cancel requested (status cancelling)? -> the runner stops at its next check;
- is the job still ours (not reaped, re-queued to another worker, or deleted)? -> if not,
  the runner stops without writing anything more.
A thread rather than beats from the training loop alone, because a job has long stretches
without a callback (importing torch, loading a dataset, one probe fit, a checkpoint upload)
and a live job must never look dead. The cost: a process wedged inside a CUDA call keeps
beating; the reaper handles dead processes, not hung ones.

The heartbeat's flags are only how a runner learns early that it should stop. What keeps a
lost attempt from writing is the database: the context's session is fenced on the job's
attempt (drl_core/fencing.py), so its artifact rows, artifact deletions and metric points
commit only while the job is still held at that attempt, and raise JobLost otherwise, even
when the heartbeat thread has died and never noticed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from drl_core.artifact_keys import ArtifactKind, t_key
from drl_core.artifacts import ArtifactStore, StoredArtifact, build_store
from drl_core.db import make_engine, session_factory
from drl_core.fencing import is_held
from drl_core.job_states import JobStatus, StaleTransition, heartbeat, utc_now
from drl_core.models import Artifact, Job, MetricPoint
from drl_core.settings import Settings
from drl_engine.spec import ExperimentSpec

if TYPE_CHECKING:
    from worker.job_log import JobLog

logger = logging.getLogger("drl.worker")


class JobCancelled(Exception):
    """A cancel was requested and the runner stopped."""


class JobLost(Exception):
    """The job is no longer this worker's (reaped, re-queued, deleted): stop, write nothing."""


class WorkerStopping(Exception):
    """This worker is shutting down (worker/shutdown.py): the runner stopped (a training after
    saving and uploading its checkpoint) so that the job goes back to the queue."""


class WorkerResources:
    """A process's database engine, session factory and artifact store.

    One per process: a forked pool process must not share its parent's connections, so each
    builds its own (worker/tasks.py makes them at `worker_process_init`). The engine connects
    lazily; the store is built on first use (an S3 store contacts its endpoint).
    `stop_requested` is set when the worker is shutting down (worker/shutdown.py): the job this
    process runs stops and is handed back; `handed_back` lists those jobs, whose messages go
    out as the process exits.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.sessions = session_factory(self.engine)
        self.stop_requested = threading.Event()
        self.handed_back: list[int] = []
        self._store: ArtifactStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> ArtifactStore:
        with self._lock:   # the reaper thread and the job may ask at once
            if self._store is None:
                self._store = build_store(self.settings)
            return self._store

    def dispose(self) -> None:
        self.engine.dispose()


class Heartbeat:
    """Keeps job `job_id` at `attempt` alive from a daemon thread; see the module docstring.

    `stop_timeout_s`: how long `stop` waits for the thread; a beat stuck in the database
    (a lock, a server that stopped answering) must not hang the job that is finishing."""

    def __init__(self, sessions: sessionmaker[Session], job_id: int, attempt: int,
                 interval_s: float, stop_timeout_s: float = 10.0) -> None:
        self.sessions, self.job_id, self.attempt, self.interval_s = sessions, job_id, attempt, interval_s
        self.stop_timeout_s = stop_timeout_s
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self._progress: dict[str, Any] = {}
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, **progress: Any) -> None:
        """Progress fields (step, total, loss, images_per_s) for the next beat."""
        with self._lock:
            self._progress.update(progress)

    def log(self, line: str) -> None:
        """A line for the job's log tail, written with the next beat."""
        with self._lock:
            self._lines.append(line)

    def beat(self) -> None:
        """One heartbeat now. A database error is logged and retried at the next beat (the
        reaper decides when silence means death), never raised into the job."""
        if self.lost.is_set():
            return
        with self._lock:
            progress, lines = dict(self._progress), list(self._lines)
        try:
            with self.sessions() as session:
                job = session.get(Job, self.job_id)
                if job is None or job.attempt != self.attempt:
                    self.lost.set()
                    return
                fields = dict(progress)
                if lines:
                    fields["log_tail"] = job.tail_with(lines)
                status = heartbeat(session, job, **fields)
                session.commit()
        except StaleTransition:
            self.lost.set()
            return
        except SQLAlchemyError as exc:
            logger.warning("job %s: heartbeat failed, retrying: %s", self.job_id,
                           str(exc).splitlines()[0])
            return
        with self._lock:
            del self._lines[:len(lines)]
        if status == JobStatus.CANCELLING:
            self.cancel_requested.set()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s) and not self.lost.is_set():
            try:
                self.beat()
            except Exception:  # a bug here must not silence the job: keep beating
                logger.exception("job %s: heartbeat error", self.job_id)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-job-{self.job_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Stop the thread, then flush the last progress and log lines with a final beat;
        whether it stopped. A thread still busy after `stop_timeout_s` is left behind (a
        daemon; its late beat is a compare-and-set that fails once the job has finished) and
        no final beat is tried: it would wait on the same database."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            if self._thread.is_alive():
                logger.warning("job %s: heartbeat thread still busy after %.0f s; not waiting "
                               "for it", self.job_id, self.stop_timeout_s)
                return False
            self._thread = None
        self.beat()
        return True


@dataclass
class JobContext:
    """Everything a runner needs: the job's identity and parameters, the spec, a session for
    its own writes (artifact rows, metric points), the store, the heartbeat, a scratch dir,
    and the job's whole log (worker/job_log.py; None: only the heartbeat's tail).

    `session` is fenced on (job_id, attempt) (drl_core/fencing.py): commit it with `commit`,
    which answers a refused commit with JobLost."""

    job_id: int
    experiment_id: int
    kind: str
    attempt: int
    params: dict[str, Any]
    spec: ExperimentSpec
    session: Session
    resources: WorkerResources
    heartbeat: Heartbeat
    workdir: Path
    job_log: JobLog | None = None

    @property
    def store(self) -> ArtifactStore:
        return self.resources.store

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    def t_values(self) -> list[float]:
        """The job's `t` list (default: the spec's t grid), rounded to 3 decimals, sorted."""
        return sorted({t_key(t) for t in self.params.get("t") or self.spec.evaluate.t_grid})

    def log(self, message: str) -> None:
        """A message for the job's log: its tail on the job row, and the whole stored log."""
        logger.info("job %s (%s): %s", self.job_id, self.kind, message)
        for line in message.splitlines():
            self.heartbeat.log(line)
            if self.job_log is not None:
                self.job_log.write(line)

    # -- stopping ------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """For the trainer: stop when a cancel was requested, the job was taken away, or the
        worker is shutting down."""
        return (self.heartbeat.cancel_requested.is_set() or self.heartbeat.lost.is_set()
                or self.resources.stop_requested.is_set())

    def ensure_held(self) -> None:
        """Raise JobLost if the heartbeat already knows the job is no longer ours: a cheap
        check before work; the fenced commit is what refuses a lost attempt's writes."""
        if self.heartbeat.lost.is_set():
            raise self._lost()

    def _lost(self) -> JobLost:
        self.heartbeat.lost.set()   # the runner's should_stop() sees it too
        return JobLost(f"job {self.job_id} attempt {self.attempt} is no longer held by this worker")

    def commit(self) -> None:
        """Commit this job's writes if the job is still held at its attempt; otherwise roll
        them back and raise JobLost."""
        try:
            self.session.commit()
        except StaleTransition:
            self.session.rollback()
            raise self._lost() from None

    def ensure_held_now(self) -> None:
        """`ensure_held`, plus a read of the job row: before slow work that the database
        cannot fence (an upload), so an attempt known to be lost does not start it."""
        self.ensure_held()
        with self.resources.sessions() as session:   # not `session`: leave its work alone
            held = is_held(session, self.job_id, self.attempt)
        if not held:
            raise self._lost()

    def check(self) -> None:
        """Raise JobLost, JobCancelled or WorkerStopping (in that order: a job that is not ours
        is not handed back, a cancel wins over a hand-back) if the runner must stop."""
        self.ensure_held()
        if self.heartbeat.cancel_requested.is_set():
            raise JobCancelled(f"job {self.job_id} cancelled")
        if self.resources.stop_requested.is_set():
            raise WorkerStopping(f"job {self.job_id}: the worker is shutting down")

    def progress_check(self) -> Callable[[int, int], None]:
        """An engine `progress(done, total)` callback that stops the run when it must."""
        def on_progress(done: int, total: int) -> None:
            self.check()
        return on_progress

    # -- artifacts -----------------------------------------------------------------------

    def artifacts(self, kind: ArtifactKind) -> list[Artifact]:
        """The experiment's artifact rows of `kind`, by key, detached. Read in a session of
        their own that ends with the read: on the job's session the read would open a
        transaction that sits idle, holding a connection, until the job's next commit (a
        whole training phase, for a read before it)."""
        with self.resources.sessions() as session:
            return list(session.scalars(
                sa.select(Artifact).where(Artifact.experiment_id == self.experiment_id,
                                          Artifact.kind == kind.value).order_by(Artifact.key)))

    def store_bytes(self, key: str, data: bytes, kind: ArtifactKind,
                    meta: dict[str, Any] | None = None) -> StoredArtifact:
        self.ensure_held_now()
        return self._record(self.store.put_bytes(key, data), kind, meta)

    def store_file(self, key: str, path: Path, kind: ArtifactKind,
                   meta: dict[str, Any] | None = None) -> StoredArtifact:
        self.ensure_held_now()
        return self._record(self.store.put_file(key, path), kind, meta)

    def _record(self, stored: StoredArtifact, kind: ArtifactKind,
                meta: dict[str, Any] | None) -> StoredArtifact:
        upsert_artifact(self.session, self.experiment_id, self.job_id, kind, stored, meta or {})
        self.commit()
        return stored

    def delete_artifact(self, row: Artifact) -> bool:
        """Row first (fenced), then the file: a crash in between leaves an unlisted file,
        never a row that points at nothing, and a lost attempt deletes neither. A row that is
        pinned now (a user may pin a checkpoint since it was read) is left, file and all:
        whether one was deleted."""
        self.ensure_held()
        key = row.key
        deleted = self.session.execute(
            sa.delete(Artifact).where(Artifact.id == row.id, Artifact.pinned.is_(False))).rowcount
        self.commit()
        if deleted:
            self.store.delete(key)
        return bool(deleted)

    # -- metrics -------------------------------------------------------------------------

    def record_metrics(self, step: int, values: Mapping[str, float]) -> None:
        """One point per key at `step`, replacing what this job recorded there before (a
        re-run step); fenced like every write of the job."""
        self.ensure_held()
        upsert_metric_points(self.session, self.experiment_id, self.job_id, step, values)
        self.commit()


def _upsert_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT with ON CONFLICT (PostgreSQL's and SQLite's are alike)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"upsert: unsupported database dialect {dialect!r}")


def upsert_artifact(session: Session, experiment_id: int, job_id: int | None,
                    kind: ArtifactKind | str, stored: StoredArtifact, meta: dict[str, Any]) -> None:
    """Insert the row for `stored.key`, or update it if the key is already recorded: one
    atomic statement, so two runs of a job can never record one key twice."""
    values = {"experiment_id": experiment_id, "job_id": job_id, "kind": ArtifactKind(kind).value,
              "key": stored.key, "size": stored.size, "sha256": stored.sha256, "meta": meta}
    statement = _upsert_insert(session)(Artifact).values(created_at=utc_now(), **values)
    session.execute(statement.on_conflict_do_update(index_elements=[Artifact.key],
                                                    set_=values))


def upsert_metric_points(session: Session, experiment_id: int, job_id: int, step: int,
                         values: Mapping[str, float]) -> None:
    """One point per key at `step` for `job_id`, a value already recorded there replaced:
    (job, key, step) is unique, so a step recorded twice is one point."""
    if not values:
        return
    now = utc_now()
    statement = _upsert_insert(session)(MetricPoint).values([
        {"experiment_id": experiment_id, "job_id": job_id, "key": key, "step": step,
         "value": float(value), "created_at": now} for key, value in values.items()])
    session.execute(statement.on_conflict_do_update(
        index_elements=[MetricPoint.job_id, MetricPoint.key, MetricPoint.step],
        set_={"value": statement.excluded.value, "created_at": statement.excluded.created_at}))
