"""The run page's actions: cancel, resume, delete, draw samples, encode at more t.

Each is an HTML form post that calls the JSON API's endpoint function for the same action
(so ownership, validation and every refusal are the API's), then redirects to the page that
shows the result (303, so a reload does not post again). When the API refuses, the run page
is shown again with the API's problem detail and status code.

A form post from another site is refused (`same_origin`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.dashboard.forms import encode_request, sample_request
from api.dashboard.rendering import PageRoute, form_fields, redirect
from api.dashboard.routes import render_run_page
from api.dashboard.sign_in import dashboard_user, same_origin
from api.deps import SessionDep, StateDep, StoreDep
from api.lookups import ExperimentId
from api.problems import Problem
from api.routers import embeddings, samples
from api.routers import experiments as experiment_routes
from drl_core.models import User

router = APIRouter(route_class=PageRoute, dependencies=[Depends(dashboard_user), Depends(same_origin)])

DashboardUser = Annotated[User | None, Depends(dashboard_user)]
Form = Annotated[dict[str, str], Depends(form_fields)]


def act(request: Request, session: SessionDep, store: StoreDep, experiment_id: int,
        action: Callable[[], str]) -> Response:
    """Run `action` (an API endpoint call returning where to go next) and redirect there;
    on the API's refusal, the run page with its problem."""
    try:
        target = action()
    except Problem as refused:
        session.rollback()
        return render_run_page(request, session, store, experiment_id, refused.status,
                               action_error=refused)
    return redirect(request, target)


@router.post("/runs/{experiment_id}/cancel")
def cancel(request: Request, experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
           user: DashboardUser) -> Response:
    def call() -> str:
        experiment_routes.cancel_experiment(experiment_id=experiment_id, session=session, user=user)
        return f"/runs/{experiment_id}?done=cancel"
    return act(request, session, store, experiment_id, call)


@router.post("/runs/{experiment_id}/resume")
def resume(request: Request, experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
           state: StateDep, user: DashboardUser) -> Response:
    def call() -> str:
        experiment_routes.resume_experiment(experiment_id=experiment_id, session=session,
                                            user=user, state=state)
        return f"/runs/{experiment_id}?done=resume"
    return act(request, session, store, experiment_id, call)


@router.post("/runs/{experiment_id}/delete")
def delete(request: Request, experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
           user: DashboardUser) -> Response:
    def call() -> str:
        experiment_routes.delete_experiment(experiment_id=experiment_id, session=session,
                                            store=store, user=user)
        return f"/?done=delete&id={experiment_id}"
    return act(request, session, store, experiment_id, call)


@router.post("/runs/{experiment_id}/samples")
def draw_samples(request: Request, experiment_id: ExperimentId, session: SessionDep,
                 store: StoreDep, state: StateDep, user: DashboardUser, form: Form) -> Response:
    def call() -> str:
        job = samples.request_samples(experiment_id=experiment_id, request=sample_request(form),
                                      session=session, state=state, user=user)
        return f"/runs/{experiment_id}?done=samples&job={job.id}"
    return act(request, session, store, experiment_id, call)


@router.post("/runs/{experiment_id}/encodings")
def encode(request: Request, experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
           state: StateDep, user: DashboardUser, form: Form) -> Response:
    def call() -> str:
        job = embeddings.request_encodings(experiment_id=experiment_id, request=encode_request(form),
                                           session=session, state=state, user=user)
        return f"/runs/{experiment_id}?done=encodings&job={job.id}"
    return act(request, session, store, experiment_id, call)
