"""Experiments: create (idempotent), list, read, cancel, resume, delete.

Every write goes through the service functions of `drl_core.experiments`; this module only
translates HTTP to those calls and their results and errors back to HTTP.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from api.auth import require_owner, require_priority_allowed
from api.deps import CurrentUser, SessionDep, StateDep, StoreDep
from api.lookups import ExperimentId, get_experiment
from api.problems import (NOT_READY, Problem, field_error, limit_problem, problem_responses,
                          spec_problem, validation_problem)
from api.request_limits import BODY_STATUSES
from api.schemas import (ExperimentBrief, ExperimentOut, ExperimentPage, ExperimentSpecBody,
                         ExperimentSummary, experiment_fields)
from drl_core import experiment_list
from drl_core import experiments as service
from drl_core.data_paths import check_submitted_dataset, confine_dataset_paths, dataset_field
from drl_core.experiment_list import ExperimentFilter
from drl_core.job_limits import LimitExceeded
from drl_core.job_states import ExperimentStatus
from drl_core.models import Experiment
from drl_core.priority import Priority
from drl_engine.spec import ExperimentSpec, SpecError

router = APIRouter(tags=["experiments"])

MAX_PAGE = 500
MAX_OFFSET = 10**9
IDEMPOTENCY_KEY_MAX = 200  # the column's length


def experiment_out(session: Session, experiment: Experiment) -> ExperimentOut:
    summary = ExperimentSummary.from_service(service.experiment_summary(session, experiment))
    return ExperimentOut(**experiment_fields(experiment), spec=experiment.spec, summary=summary,
                         provenance=experiment.provenance)


@router.post(
    "/experiments", status_code=status.HTTP_201_CREATED, response_model=ExperimentOut,
    summary="Submit an experiment",
    responses={200: {"model": ExperimentOut, "description": "an earlier request with the same "
                     "Idempotency-Key already created it"}}
    | problem_responses(*BODY_STATUSES, 401, 403, 422, 429, 503),
)
def create_experiment(
    spec: ExperimentSpecBody,  # type: ignore[valid-type]
    session: SessionDep,
    state: StateDep,
    user: CurrentUser,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=IDEMPOTENCY_KEY_MAX,
        description="retrying with the same key returns the experiment the first request "
                    "created (200) instead of creating another",
    )] = None,
    priority: Annotated[Priority, Query(
        description="orders the experiment's jobs among its owner's own when the owner's "
                    "turn comes (owners take turns for the workers); high: admins only")
    ] = Priority.NORMAL,
) -> ExperimentOut:
    """The body is an ExperimentSpec, validated by that model (the one parse_spec validates);
    invalid fields are a 422 naming them (e.g. `model.kind`).

    Reusing an Idempotency-Key with a different spec is a 422 (as the IETF
    Idempotency-Key draft prescribes): the key names a different request. A create either
    fails having saved nothing (503 when the database is down) or answers 201: a broker that
    is down leaves the training queued, and the reaper sends it once the broker is back. With auth on (a
    shared box) dataset paths must lie inside the service's data folder (422 naming them).
    A dataset file that is missing or corrupt is a 422 naming the field (`dataset.path`,
    `dataset.data_dir` or `dataset.name`) and the file, where the API sees the workers' data
    folder (drl_core/data_paths.py; docs/DEPLOY.md says where that is).

    `priority=high` is for admins (403 for anyone else). A user who would have more than
    `max_queued_jobs_per_user` jobs queued (a setting; the new experiment's pipeline counts
    up to four) is answered 429, naming the limit.
    """
    settings = state.settings
    require_priority_allowed(user, priority)
    if settings.auth_enabled:
        try:
            spec = spec.model_copy(update={"dataset": confine_dataset_paths(
                spec.dataset, settings.data_dir)})
        except SpecError as err:
            raise spec_problem(err) from None

    def check_dataset_files(new: ExperimentSpec) -> None:
        try:
            check_submitted_dataset(new.dataset, settings)
        except SpecError as err:
            raise spec_problem(err) from None
        except OSError as err:   # a path the system cannot look up (ENAMETOOLONG): no such file
            raise spec_problem(SpecError(f"{dataset_field(new.dataset)}: cannot be read "
                                         f"({err.strerror})")) from None

    try:
        experiment, created = service.create_experiment(
            session, spec, owner_id=user.id if user else None, idempotency_key=idempotency_key,
            celery_app=state.celery, check_new=check_dataset_files, priority=priority,
            queued_limit=settings.max_queued_jobs_per_user)
    except service.IdempotencyConflict as err:
        raise validation_problem([field_error("Idempotency-Key", str(err))]) from None
    except LimitExceeded as err:
        raise limit_problem(err) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/experiments/{experiment.id}"
    return experiment_out(session, get_experiment(session, experiment.id))


@router.get("/experiments", response_model=ExperimentPage, summary="List experiments, newest first",
            responses=problem_responses(401, 422))
def list_experiments(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    status: Annotated[ExperimentStatus | None, Query(description="only experiments in this status")] = None,
) -> ExperimentPage:
    page = experiment_list.list_experiments(session, offset, limit, ExperimentFilter(status=status))
    items = [ExperimentBrief(**experiment_fields(e)) for e in page.experiments]
    return ExperimentPage(items=items, total=page.total, offset=offset, limit=limit)


@router.get("/experiments/{experiment_id}", response_model=ExperimentOut, summary="One experiment",
            responses=problem_responses(401, 404, 422))
def read_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    """Status (derived from the jobs), each job's progress, the failed step and its error,
    and a summary: the last training loss and the best t per probe."""
    return experiment_out(session, get_experiment(session, experiment_id))


@router.post("/experiments/{experiment_id}/cancel", response_model=ExperimentOut,
             summary="Cancel an experiment's queued and running jobs",
             responses=problem_responses(401, 403, 404, 422))
def cancel_experiment(experiment_id: ExperimentId, session: SessionDep, user: CurrentUser) -> ExperimentOut:
    """Queued jobs are cancelled at once; running ones become `cancelling` until their worker
    stops. Cancelling again, or a finished experiment, changes nothing."""
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, "cancel")
    service.cancel_experiment(session, experiment)
    session.expire_all()
    return experiment_out(session, get_experiment(session, experiment_id))


@router.post("/experiments/{experiment_id}/resume", response_model=ExperimentOut,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Resume a failed or cancelled experiment from its last checkpoint",
             responses=problem_responses(401, 403, 404, 409, 422, 429))
def resume_experiment(experiment_id: ExperimentId, session: SessionDep, user: CurrentUser,
                      state: StateDep) -> ExperimentOut:
    """Every failed or cancelled job runs again as a new attempt, with a fresh budget of
    attempts and retries; training resumes from its last stored checkpoint, so the steps
    already done are not trained again. 409 when no job is failed or cancelled; 429 when
    the jobs it re-opens would pass the owner's `max_queued_jobs_per_user`."""
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, "resume")
    try:
        service.resume_experiment(session, experiment, celery_app=state.celery,
                                  queued_limit=state.settings.max_queued_jobs_per_user)
    except service.NotReady as err:
        raise Problem(409, str(err), type=NOT_READY, title="Nothing to resume") from None
    except LimitExceeded as err:
        raise limit_problem(err) from None
    session.expire_all()
    return experiment_out(session, get_experiment(session, experiment_id))


@router.delete("/experiments/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an experiment, its jobs and its artifacts",
               responses=problem_responses(401, 403, 404, 422))
def delete_experiment(experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
                      user: CurrentUser) -> Response:
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, "delete")
    service.delete_experiment(session, store, experiment)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
