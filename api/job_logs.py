"""A job's whole log as the API serves it: read once, or followed while the job runs.

The worker stores the log as it grows (worker/job_log.py) and stores it complete before it
writes the job's final status. So a follower reads the job's status first, then the log:
once the status says the job is no longer held by a worker, the log read after it holds
everything that run wrote, and the stream ends. A job that is queued (waiting, or queued again
for a retry) ends the stream at once with what is stored: `drl logs -f` asks again, from the
byte it got to, until the job has finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.deps import AppState
from drl_core.artifact_keys import log_key
from drl_core.artifacts import ArtifactNotFound, ArtifactStore
from drl_core.job_states import HELD_BY_WORKER
from drl_core.models import Job

# How often a follower looks for new lines (the worker uploads about once a heartbeat).
FOLLOW_POLL_S = 0.5


def stored_log(store: ArtifactStore, key: str, offset: int = 0) -> bytes | None:
    """The stored log at `key` from byte `offset`, or None if none is stored."""
    try:
        if offset and store.size(key) <= offset:
            return b""
        return store.get_bytes(key)[offset:]
    except ArtifactNotFound:
        return None


def job_log_text(store: ArtifactStore, job: Job, offset: int = 0) -> bytes:
    """The job's whole log from byte `offset`: the stored one, else (a job that has stored
    none yet, or ran before whole logs were kept) its log tail."""
    stored = stored_log(store, log_key(job.experiment_id, job.id), offset)
    if stored is not None:
        return stored
    return "".join(f"{line}\n" for line in job.log_tail or []).encode()[offset:]


def _status_then_log(store: ArtifactStore, session: Session, job_id: int, key: str,
                     offset: int) -> tuple[str | None, bytes]:
    """The job's status (None: deleted), then its stored log from `offset`: in this order
    (the module docstring says why)."""
    status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    return status, stored_log(store, key, offset) or b""


async def follow_log(state: AppState, job_id: int, experiment_id: int,
                     offset: int) -> AsyncIterator[bytes]:
    """The stored log from `offset`, then what is added to it, until the job is not held by
    a worker. Each poll takes a request session slot (api/db_sessions.py) for its reads."""
    key = log_key(experiment_id, job_id)
    while True:
        async with state.session_slots.session() as session:
            status, added = await anyio.to_thread.run_sync(
                _status_then_log, state.store(), session, job_id, key, offset)
        if added:
            offset += len(added)
            yield added
        if status not in HELD_BY_WORKER:
            return
        await anyio.sleep(FOLLOW_POLL_S)
