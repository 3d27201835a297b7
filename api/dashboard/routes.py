"""The dashboard's read-only routes: the runs page, the run page, the fragments htmx polls to
keep them live, and the files a run page links to (sample grids, embeddings as .npy).

Pages are `PageRoute`s and the rest `ResourceRoute`s (api/dashboard/rendering.py says how
each refuses and fails); both routers depend on `dashboard_user`, so no route can forget the
sign-in check.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Annotated
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import Field

from api.dashboard.compare_view import compare_view
from api.dashboard.forms import sample_form
from api.dashboard.notices import notice_for
from api.dashboard.rendering import PageRoute, ResourceRoute, render
from api.dashboard.run_view import chart_data, run_view
from api.dashboard.runs_view import owner_names, runs_page
from api.dashboard.scatter import embedding_scatter
from api.dashboard.sign_in import dashboard_user
from api.deps import SessionDep, StateDep, StoreDep
from api.lookups import MAX_ID, ExperimentId, JobId
from api.problems import Problem, field_error, validation_problem
from api.routers import embeddings, samples
from api.schemas import Split
from drl_core.artifact_keys import t_key
from drl_core.experiment_list import ExperimentFilter
from drl_core.job_states import ExperimentStatus
from drl_engine.spec import TRAINED

pages = APIRouter(route_class=PageRoute, dependencies=[Depends(dashboard_user)])
resources = APIRouter(route_class=ResourceRoute, dependencies=[Depends(dashboard_user)])

MAX_PAGE = 10**6
# How often a page that shows something running asks for its fragment again.
REFRESH_S = 3

# The filter form's fields; an empty field (the form's "any") filters nothing.
StatusQuery = Annotated[str, Query(max_length=20)]
OwnerQuery = Annotated[str, Query(max_length=100)]
TextQuery = Annotated[str, Query(max_length=200)]
PageQuery = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def runs_filter(status: str, owner: str, q: str) -> ExperimentFilter:
    if status and status not in {s.value for s in ExperimentStatus}:
        raise validation_problem([field_error("status", f"expected one of "
                                              f"{', '.join(s.value for s in ExperimentStatus)}, got {status!r}")])
    return ExperimentFilter(status=ExperimentStatus(status) if status else None,
                            owner=owner or None, text=q.strip() or None)


def filter_query(filters: dict[str, str]) -> str:
    """The filters as a query string (pages and the polled fragment keep them)."""
    return urlencode({name: value for name, value in filters.items() if value})


@pages.get("/", response_class=HTMLResponse)
def runs(request: Request, session: SessionDep, status: StatusQuery = "", owner: OwnerQuery = "",
         q: TextQuery = "", page: PageQuery = 1, done: str = "") -> HTMLResponse:
    filters = {"status": status, "owner": owner, "q": q}
    return render(request, "runs.html", runs=runs_page(session, runs_filter(**filters), page),
                  filters=filters, filter_query=filter_query(filters),
                  statuses=[s.value for s in ExperimentStatus], owners=owner_names(session),
                  refresh_s=REFRESH_S, notice=notice_for(done, request.query_params))


@resources.get("/fragments/runs", response_class=HTMLResponse)
def runs_fragment(request: Request, session: SessionDep, status: StatusQuery = "",
                  owner: OwnerQuery = "", q: TextQuery = "", page: PageQuery = 1) -> HTMLResponse:
    filters = {"status": status, "owner": owner, "q": q}
    return render(request, "_runs_table.html", runs=runs_page(session, runs_filter(**filters), page),
                  filter_query=filter_query(filters), refresh_s=REFRESH_S)


@pages.get("/runs/{experiment_id}", response_class=HTMLResponse)
def run(request: Request, experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
        done: str = "") -> HTMLResponse:
    return render_run_page(request, session, store, experiment_id,
                           notice=notice_for(done, request.query_params))


def render_run_page(request: Request, session: SessionDep, store: StoreDep, experiment_id: int,
                    status_code: int = 200, **context: object) -> HTMLResponse:
    """The run page (also re-shown, with the problem, when an action on it failed)."""
    view = run_view(session, store, experiment_id)
    return render(request, "run.html", status_code, view=view, charts=chart_data(view.charts),
                  sample_form=sample_form(), refresh_s=REFRESH_S, **context)


@pages.get("/compare", response_class=HTMLResponse)
def compare(request: Request, session: SessionDep, store: StoreDep,
            id: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Query()] = []) -> HTMLResponse:  # noqa: B006
    """?id=1&id=2...: 2 to 8 runs (the runs page's check boxes)."""
    view = compare_view(session, store, id)
    return render(request, "compare.html", view=view, charts=chart_data(view.charts))


@resources.get("/fragments/runs/{experiment_id}", response_class=HTMLResponse)
def run_fragment(request: Request, experiment_id: ExperimentId, session: SessionDep,
                 store: StoreDep) -> HTMLResponse:
    view = run_view(session, store, experiment_id)
    return render(request, "_run_live.html", view=view, charts=chart_data(view.charts),
                  refresh_s=REFRESH_S)


@resources.get("/fragments/runs/{experiment_id}/scatter", response_class=HTMLResponse)
def scatter_fragment(request: Request, experiment_id: ExperimentId, session: SessionDep,
                     store: StoreDep, state: StateDep,
                     t: Annotated[float, Query(ge=0.0, le=1.0)]) -> HTMLResponse:
    """The test codes at t in 2-d; without codes at t, the API's reason in their place."""
    try:
        scatter = embedding_scatter(session, store, state, experiment_id, t)
    except Problem as missing:
        return render(request, "_scatter.html", missing=missing.detail)
    return render(request, "_scatter.html", scatter=scatter, chart=asdict(scatter))


@resources.get("/runs/{experiment_id}/samples/{job_id}.png", response_class=Response)
def sample_png(experiment_id: ExperimentId, job_id: JobId, session: SessionDep,
               store: StoreDep) -> Response:
    response = samples.sample_png(experiment_id, job_id, session, store)
    # A finished job's grid never changes: the live fragment's refreshes need not fetch it again.
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@resources.get("/runs/{experiment_id}/embeddings.npy", response_class=Response)
def embeddings_npy(experiment_id: ExperimentId, session: SessionDep, store: StoreDep,
                   state: StateDep, t: Annotated[float, Query(ge=0.0, le=1.0)],
                   split: Split = "test") -> Response:
    """The whole split's trained embeddings at t as one .npy: the API's pages (at most
    MAX_PAGE_ROWS rows each), read and joined."""
    parts, offset, total = [], 0, None
    while total is None or offset < total:
        page = embeddings.read_embeddings(
            session=session, store=store, state=state, experiment=experiment_id, t=t, split=split,
            encoder=TRAINED, offset=offset, limit=embeddings.MAX_PAGE_ROWS, format="npy")
        total = int(page.headers["X-Total-Count"])
        parts.append(np.load(io.BytesIO(page.body), allow_pickle=False))
        offset += embeddings.MAX_PAGE_ROWS
    buffer = io.BytesIO()
    np.save(buffer, np.concatenate(parts) if len(parts) > 1 else parts[0], allow_pickle=False)
    name = f"experiment{experiment_id}_{split}_t={t_key(t):.3f}.npy"
    return Response(buffer.getvalue(), media_type=embeddings.NPY_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
