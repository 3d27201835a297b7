"""Jobs: an experiment's jobs; one job with its progress, attempts, error and log tail; a
job's whole log, read once or followed while the job runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from api.deps import SessionDep, StateDep, StoreDep
from api.job_logs import follow_log, job_log_text
from api.lookups import ExperimentId, JobId, get_experiment, get_job
from api.problems import problem_responses
from api.schemas import JobDetail, JobOut

router = APIRouter(tags=["jobs"])

TEXT = "text/plain; charset=utf-8"
MAX_LOG_OFFSET = 2**53   # bytes; JSON Schema integers beyond this lose precision in clients
LOG_RESPONSE = {200: {"content": {"text/plain": {}},
                      "description": "the log, one line per line, as UTF-8 text"}}


@router.get("/experiments/{experiment_id}/jobs", response_model=list[JobOut],
            summary="An experiment's jobs, in pipeline order", responses=problem_responses(401, 404, 422))
def list_jobs(experiment_id: ExperimentId, session: SessionDep) -> list[JobOut]:
    return [JobOut.from_job(job) for job in get_experiment(session, experiment_id).jobs]


@router.get("/jobs/{job_id}", response_model=JobDetail,
            summary="One job: progress, attempts, error and the last log lines",
            responses=problem_responses(401, 404, 422))
def read_job(job_id: JobId, session: SessionDep) -> JobDetail:
    return JobDetail.from_job(get_job(session, job_id))


@router.get("/jobs/{job_id}/log", summary="A job's whole log (plain text), followed if asked",
            response_class=Response, responses=LOG_RESPONSE | problem_responses(401, 404, 422, 503))
def read_job_log(
    job_id: JobId,
    session: SessionDep,
    store: StoreDep,
    state: StateDep,
    follow: Annotated[bool, Query(
        description="stream the log as chunked text while the job runs: what is stored, then "
                    "each line as it comes, until the job is no longer running (it finished, "
                    "or went back to the queue); a queued job answers what is stored")] = False,
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET, description="bytes of the log to skip "
                                 "(those a client already has)")] = 0,
) -> Response:
    """Every line of every run of the job (each run opens with an `=== attempt N ... ===`
    line), where `log_tail` (GET /jobs/{id}) has the last 50. A job that ran before whole
    logs were kept answers its tail."""
    job = get_job(session, job_id)
    if not follow:
        return Response(job_log_text(store, job, offset), media_type=TEXT)
    # No session is held while streaming: each poll takes one of its own.
    return StreamingResponse(follow_log(state, job.id, job.experiment_id, offset), media_type=TEXT,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
