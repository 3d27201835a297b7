"""The queue: every queued job in the order the workers will take them, with an estimated
start (drl_core/queue_forecast.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import SessionDep, StateDep
from api.problems import problem_responses
from api.schemas import QueuedJobOut, QueueOut
from drl_core.job_states import utc_now
from drl_core.queue import QUEUES
from drl_core.queue_forecast import forecast, load_snapshot

router = APIRouter(tags=["jobs"])


@router.get("/queue", response_model=QueueOut, summary="Queued jobs in the order they will run",
            responses=problem_responses(401, 422))
def read_queue(session: SessionDep, state: StateDep,
               queue: Annotated[Literal[QUEUES] | None, Query(  # type: ignore[valid-type]
                   description="only this queue's jobs")] = None) -> QueueOut:
    """Workers take turns across owners: the owner with the fewest jobs running on the queue,
    then the one whose last start there is the oldest, goes next; then their experiment's
    priority, then age. `position` is a job's place on its queue; `estimated_start` plays
    that rule forward with each queue's workers (as many as jobs run there now, at least
    one), running jobs ending as their progress so far says, and queued jobs taking the
    median duration of their kind: an estimate, recomputed on every request."""
    now = utc_now()
    snapshot = load_snapshot(session, now, state.settings.max_running_jobs_per_user)
    places = forecast(snapshot)
    return QueueOut(generated_at=now, items=[QueuedJobOut.from_place(p) for p in places
                                             if queue is None or p.job.queue == queue])
