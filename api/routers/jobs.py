"""Jobs: an experiment's jobs, and one job with its progress, attempts, error and log tail."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep
from api.lookups import ExperimentId, JobId, get_experiment, get_job
from api.problems import problem_responses
from api.schemas import JobDetail, JobOut

router = APIRouter(tags=["jobs"])


@router.get("/experiments/{experiment_id}/jobs", response_model=list[JobOut],
            summary="An experiment's jobs, in pipeline order", responses=problem_responses(401, 404, 422))
def list_jobs(experiment_id: ExperimentId, session: SessionDep) -> list[JobOut]:
    return [JobOut.from_job(job) for job in get_experiment(session, experiment_id).jobs]


@router.get("/jobs/{job_id}", response_model=JobDetail,
            summary="One job: progress, attempts, error and the last log lines",
            responses=problem_responses(401, 404, 422))
def read_job(job_id: JobId, session: SessionDep) -> JobDetail:
    return JobDetail.from_job(get_job(session, job_id))
