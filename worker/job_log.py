"""A job's whole log, kept as an artifact (`experiments/<id>/logs/<job_id>.log`) and uploaded
while the job runs, so the API can stream it (GET /jobs/{id}/log?follow=true).

The job row keeps only the last LOG_TAIL_LINES lines (`log_tail`, written by the heartbeat);
this keeps every line, of every run of the job: a run starts from the log its earlier runs
stored (a retry, a hand-back, a resume) and adds a header line, then its own lines. The whole
text is uploaded again each time (an artifact store has no append), from a thread of its own
every `interval_s` when lines were added, and once more when the run ends, before the job's
final status is written: whoever sees the job finished finds its log complete.

A thread of its own rather than the heartbeat's: an upload to an artifact store that is slow
or down (up to a minute of timeouts) must never hold up the heartbeats that keep the job alive.

Fencing: the row is recorded through a session fenced on the job's attempt
(drl_core/fencing.py), and an upload starts only after a read found the job still held. An
attempt that lost its job stops uploading; in the moment between that read and its upload it
can still overwrite the file once, which the new attempt's next upload (and its final one,
made whether or not lines were added) writes over again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from drl_core.artifact_keys import ArtifactKind, log_key
from drl_core.artifacts import ArtifactNotFound, ArtifactStoreError
from drl_core.fencing import fenced_session, is_held
from drl_core.job_states import StaleTransition
from worker.context import WorkerResources, upsert_artifact

logger = logging.getLogger("drl.worker")


def run_header(attempt: int, worker: str, started: datetime) -> str:
    """The line that opens one run's part of the log."""
    return f"=== attempt {attempt} on {worker}, started {started:%Y-%m-%d %H:%M:%S} UTC ==="


class JobLog:
    """Collects a run's log lines (`write`, from any thread) and keeps the stored log up to
    date (`start`, `stop`); see the module docstring."""

    def __init__(self, resources: WorkerResources, experiment_id: int, job_id: int, attempt: int,
                 interval_s: float, stop_timeout_s: float = 30.0) -> None:
        self.resources, self.experiment_id, self.job_id, self.attempt = (
            resources, experiment_id, job_id, attempt)
        self.key = log_key(experiment_id, job_id)
        self.interval_s, self.stop_timeout_s = interval_s, stop_timeout_s
        self.lost = threading.Event()
        self._earlier: bytes | None = None   # the earlier runs' log, once read from the store
        self._lines: list[str] = []
        self._uploaded_lines = -1            # how many of _lines the stored log holds
        self._lock = threading.Lock()        # guards _lines
        self._upload_lock = threading.Lock()  # one upload at a time (thread and stop)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.extend(line.splitlines() or [""])

    def text(self) -> bytes:
        """The whole log as it would be stored now (earlier runs' part only once it was read)."""
        with self._lock:
            lines = list(self._lines)
        return (self._earlier or b"") + "".join(f"{line}\n" for line in lines).encode()

    def upload(self, always: bool = False) -> bool:
        """Store the whole log if lines were added since the last upload (or `always`), and
        record its row; whether it did. Store and database errors are logged and left for the
        next upload; a job no longer held sets `lost` and stops all uploads."""
        with self._upload_lock:
            if self.lost.is_set():
                return False
            with self._lock:
                count = len(self._lines)
            if count == self._uploaded_lines and not always:
                return False
            try:
                with self.resources.sessions() as session:
                    held = is_held(session, self.job_id, self.attempt)
                if not held:
                    self.lost.set()
                    return False
                store = self.resources.store
                if self._earlier is None:
                    try:
                        self._earlier = store.get_bytes(self.key)
                    except ArtifactNotFound:
                        self._earlier = b""
                data = self.text()
                stored = store.put_bytes(self.key, data, content_type="text/plain; charset=utf-8")
                with fenced_session(self.resources.sessions, self.job_id, self.attempt) as session:
                    upsert_artifact(session, self.experiment_id, self.job_id, ArtifactKind.LOG,
                                    stored, {"job_id": self.job_id, "lines": data.count(b"\n")})
                    session.commit()
            except StaleTransition:
                self.lost.set()
                return False
            except (ArtifactStoreError, SQLAlchemyError, OSError) as exc:
                logger.warning("job %s: uploading its log failed, retrying: %s", self.job_id,
                               str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return False
            self._uploaded_lines = count
            return True

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s) and not self.lost.is_set():
            try:
                self.upload()
            except Exception:  # a bug here must not stop the job: try again next time
                logger.exception("job %s: log upload error", self.job_id)

    def start(self) -> JobLog:
        self._thread = threading.Thread(target=self._run, name=f"log-job-{self.job_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Stop the thread and upload the whole log once more; whether that upload landed.
        A thread still busy after `stop_timeout_s` (a store that hangs) is left behind, and
        the final upload is not tried: it would wait on the same store."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            if self._thread.is_alive():
                logger.warning("job %s: log upload still busy after %.0f s; its last lines may "
                               "be missing from the stored log", self.job_id, self.stop_timeout_s)
                return False
            self._thread = None
        return self.upload(always=True)
