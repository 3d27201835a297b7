"""Path parameters for ids, and loading rows by id or answering a 404 problem."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Path
from sqlalchemy.orm import Session, selectinload

from api.problems import NO_CODE_SCORE, NO_ENCODER, Problem, not_found
from drl_core import experiments as service
from drl_core.models import Artifact, Experiment, Job
from drl_engine.spec import SCORE_MODEL_KINDS

# Ids are 32-bit integer columns; a larger value can only be a miss, and PostgreSQL would
# reject it as out of range, so it is refused as invalid up front.
MAX_ID = 2**31 - 1

ExperimentId = Annotated[int, Path(ge=1, le=MAX_ID, description="experiment id")]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]


def get_experiment(session: Session, experiment_id: int) -> Experiment:
    experiment = session.scalar(
        sa.select(Experiment)
        .where(Experiment.id == experiment_id)
        .options(selectinload(Experiment.jobs), selectinload(Experiment.owner))
    )
    if experiment is None:
        raise not_found(f"experiment {experiment_id} not found", experiment=experiment_id)
    return experiment


def no_encoder_problem(err: service.NoEncoder, experiment: Experiment) -> Problem:
    return Problem(422, str(err), type=NO_ENCODER, title="No encoder", experiment=experiment.id,
                   kind=service.experiment_kind(experiment))


def require_encoder(experiment: Experiment) -> None:
    """A 422 (type no-encoder) for an experiment whose model kind learns no code (vdm)."""
    try:
        service.require_encoder(experiment)
    except service.NoEncoder as err:
        raise no_encoder_problem(err, experiment) from None


def require_code_conditioned_score(experiment: Experiment) -> None:
    """A 422 (type no-code-conditioned-score) for an experiment whose model kind has no score
    conditioned on a code (only drl and vdrl have one): nothing to measure code usage on."""
    kind = service.experiment_kind(experiment)
    if kind not in SCORE_MODEL_KINDS:
        raise Problem(422, f"experiment {experiment.id} is model.kind {kind!r}, which has no "
                           f"code-conditioned score (only {', '.join(SCORE_MODEL_KINDS)} have "
                           "one): there is no code usage to measure",
                      type=NO_CODE_SCORE, title="No code-conditioned score",
                      experiment=experiment.id, kind=kind)


def get_job(session: Session, job_id: int, experiment_id: int | None = None) -> Job:
    """The job, or a 404; with `experiment_id`, it must also belong to that experiment."""
    job = session.get(Job, job_id)
    if job is None or (experiment_id is not None and job.experiment_id != experiment_id):
        where = f" in experiment {experiment_id}" if experiment_id is not None else ""
        raise not_found(f"job {job_id} not found{where}", job=job_id)
    return job


def artifacts_of(session: Session, experiment_id: int, kind: str) -> list[Artifact]:
    return list(session.scalars(
        sa.select(Artifact)
        .where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
        .order_by(Artifact.id)
    ))


def latest_job(experiment: Experiment, kind: str) -> Job | None:
    jobs = [j for j in experiment.jobs if j.kind == kind]
    return jobs[-1] if jobs else None


def describe_job(job: Job | None, kind: str) -> str:
    """'its probe job 12 is running (step 3 of 10)', for a not-ready problem's detail."""
    if job is None:
        return f"it has no {kind} job"
    text = f"its {kind} job {job.id} is {job.status}"
    if job.step is not None and job.total:
        text += f" (step {job.step} of {job.total})"
    if job.error:
        text += f": {job.error}"
    return text
