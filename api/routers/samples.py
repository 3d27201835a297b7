"""Samples: request a sampling job; list an experiment's sample jobs with what they drew
(count, sampler, steps, code source, FD-LeNet); fetch a job's image grid as PNG when done."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from api.auth import require_owner
from api.deps import CurrentUser, SessionDep, StateDep, StoreDep
from api.lookups import ExperimentId, JobId, artifacts_of, describe_job, get_experiment, get_job
from api.problems import (NOT_FOUND, NOT_READY, Problem, limit_problem, problem_responses,
                          spec_problem)
from api.request_limits import BODY_STATUSES
from api.schemas import JobOut, SampleOut, SampleRequest
from drl_core import experiments as service
from drl_core.artifact_keys import ArtifactKind, sample_key
from drl_core.artifacts import ArtifactNotFound, ArtifactStore
from drl_core.job_limits import LimitExceeded
from drl_core.job_states import JobKind, JobStatus
from drl_engine.spec import SpecError

router = APIRouter(tags=["results"])

PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "the sample grid"}}


@router.post("/experiments/{experiment_id}/samples", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobOut, summary="Draw samples (a job)",
             responses=problem_responses(*BODY_STATUSES, 401, 403, 404, 409, 422, 429, 503))
def request_samples(experiment_id: ExperimentId, request: SampleRequest,  # type: ignore[valid-type]
                    session: SessionDep, state: StateDep, user: CurrentUser) -> JobOut:
    """The body's fields override the experiment's `sample` section (sampler, steps, t_init,
    prior, code_source, count, seed, ...). The job runs once training has succeeded; 409 if
    training failed or was cancelled. The PNG is at /experiments/{id}/samples/{job_id}.png.
    `code_source: "interpolation"` (vdm_vae only) decodes codes between pairs of test images:
    `count` is pairs x 8 points, pairs = max(1, count // 8); one PNG row per pair. Only the
    experiment's owner or an admin may ask (403); 429 past the owner's
    `max_queued_jobs_per_user`."""
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, "draw samples from")
    params = request.model_dump(exclude_none=True)
    try:
        job = service.request_samples(session, experiment, params, celery_app=state.celery,
                                      queued_limit=state.settings.max_queued_jobs_per_user)
    except SpecError as err:
        raise spec_problem(err) from None
    except service.NotReady as err:
        raise Problem(409, str(err), type=NOT_READY, title="Not ready") from None
    except LimitExceeded as err:
        raise limit_problem(err) from None
    return JobOut.from_job(job)


@router.get("/experiments/{experiment_id}/samples", response_model=list[SampleOut],
            summary="An experiment's sample jobs, newest first",
            responses=problem_responses(401, 404, 422))
def list_samples(experiment_id: ExperimentId, session: SessionDep) -> list[SampleOut]:
    """Each sample job's settings and status; once it succeeded, what it drew (count, sampler,
    steps, code_source), its FD-LeNet against the test split (null for a dataset without
    labels) and the URL of its PNG."""
    experiment = get_experiment(session, experiment_id)
    meta_by_job = {row.meta.get("job_id", row.job_id): row.meta
                   for row in artifacts_of(session, experiment_id, ArtifactKind.SAMPLE.value)}
    jobs = sorted((j for j in experiment.jobs if j.kind == JobKind.SAMPLE), key=lambda j: j.id,
                  reverse=True)   # ids grow with creation; created_at can tie
    return [SampleOut.from_job(job, meta_by_job.get(job.id)) for job in jobs]


def sample_png(experiment_id: int, job_id: int, session: Session, store: ArtifactStore) -> Response:
    get_experiment(session, experiment_id)
    job = get_job(session, job_id, experiment_id)
    if job.kind != JobKind.SAMPLE:
        raise Problem(404, f"job {job_id} of experiment {experiment_id} is a {job.kind} job, "
                           "not a sample job", type=NOT_FOUND, title="Not found")
    if job.status != JobStatus.SUCCEEDED:
        raise Problem(409, f"no samples yet: {describe_job(job, 'sample')}", type=NOT_READY,
                      title="Not ready", job=job_id, job_status=job.status)
    try:
        data = store.get_bytes(sample_key(experiment_id, job_id))
    except ArtifactNotFound:
        raise Problem(404, f"sample job {job_id} succeeded but its image is missing from the "
                           "artifact store", type=NOT_FOUND, title="Not found") from None
    return Response(data, media_type="image/png")


@router.get("/experiments/{experiment_id}/samples/{job_id}.png", summary="A sample job's image grid",
            response_class=Response, responses=PNG_RESPONSE | problem_responses(401, 404, 409, 422))
def read_sample_png(experiment_id: ExperimentId, job_id: JobId, session: SessionDep,
                    store: StoreDep) -> Response:
    """409 while the job has not succeeded (its status and error say why)."""
    return sample_png(experiment_id, job_id, session, store)


@router.get("/experiments/{experiment_id}/samples/{job_id}", summary="Same as .../{job_id}.png",
            response_class=Response, responses=PNG_RESPONSE | problem_responses(401, 404, 409, 422))
def read_sample(experiment_id: ExperimentId, job_id: JobId, session: SessionDep,
                store: StoreDep) -> Response:
    return sample_png(experiment_id, job_id, session, store)
