"""Embeddings: pages of the stored codes at one t, as JSON or .npy; requesting more t.

A page is cut from the whole stored array, which is fetched and decoded once and then kept
in the app's LRU (`AppState.embeddings`, keyed by artifact key + sha256), so paging through a
split reads the store once.

JSON rendering is the cost (10,000 x 128 floats is 1.3 M numbers), so orjson writes the page
straight from the float32 array, each number as the shortest decimal that reads back as the
same float32 (0.12573022, not float64's 0.1257302165031433): `float32(value)` of every number
equals the stored value, at a tenth of the time `json.dumps` takes on Python floats. NaN and inf
(a diverged model's codes; JSON has neither) are written as null. `format=npy` skips all of
that.

A page holds at most MAX_PAGE_ROWS rows in either format: one bound that the OpenAPI schema
can state (a query parameter's bound cannot depend on another's value). The JSON rendering
cost sets it; a .npy client pages like a JSON one (`drl embeddings` does).
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

import numpy as np
import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query, Response, status
from sqlalchemy.orm import Session

from api.auth import require_owner
from api.deps import AppState, CurrentUser, SessionDep, StateDep, StoreDep
from api.lookups import (MAX_ID, ExperimentId, describe_job, get_experiment, latest_job,
                         no_encoder_problem, require_encoder)
from api.problems import (NOT_FOUND, NOT_READY, Problem, field_error, limit_problem,
                          problem_responses, validation_problem)
from api.request_limits import BODY_STATUSES
from api.schemas import EmbeddingPage, EncodeRequest, JobOut, Split
from drl_core import experiments as service
from drl_core.artifact_keys import embedding_key, labels_key, t_key
from drl_core.artifacts import ArtifactNotFound, ArtifactStore
from drl_core.job_limits import LimitExceeded
from drl_core.job_states import JobKind
from drl_core.models import Artifact
from drl_engine.spec import TRAINED, EncoderWeights

router = APIRouter(tags=["results"])

MAX_PAGE_ROWS = 10_000
MAX_OFFSET = 10**9
NPY_MEDIA_TYPE = "application/octet-stream"


def render_page_json(header: dict[str, Any], offset: int, vectors: np.ndarray,
                     labels: np.ndarray | None) -> bytes:
    """`{**header, "items": [{"index", "label", "vector"}, ...]}` as compact JSON bytes."""
    # Native-endian, C-contiguous float32: orjson refuses non-contiguous arrays, and (3.8)
    # writes a big-endian array's bytes as if they were native. Copies only when the stored
    # array is not already that.
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    label_list = labels.tolist() if labels is not None else [None] * len(vectors)
    items = [{"index": offset + i, "label": label, "vector": row}
             for i, (label, row) in enumerate(zip(label_list, vectors))]
    # OPT_SERIALIZE_NUMPY: each row is a float32 view, written shortest-round-trip, NaN/inf as null.
    return orjson.dumps({**header, "items": items}, option=orjson.OPT_SERIALIZE_NUMPY)


def _row(session: Session, key: str) -> Artifact | None:
    return session.scalar(sa.select(Artifact).where(Artifact.key == key))


def _load(state: AppState, store: ArtifactStore, row: Artifact) -> np.ndarray:
    try:
        return state.embeddings.get(row.key, row.sha256, lambda: store.get_bytes(row.key))
    except ArtifactNotFound:
        raise Problem(404, f"artifact {row.key} is recorded but missing from the artifact store",
                      type=NOT_FOUND, title="Not found") from None


@router.get(
    "/embeddings", summary="A page of an experiment's embeddings at one t (JSON or .npy)",
    response_model=EmbeddingPage,
    responses={200: {"content": {NPY_MEDIA_TYPE: {}}, "description": "JSON page, or with "
               "format=npy the page's (rows, dim) float32 array as a .npy file (X-Total-Count, "
               "X-Offset and X-Limit headers)"}} | problem_responses(401, 404, 409, 422),
)
def read_embeddings(
    session: SessionDep,
    store: StoreDep,
    state: StateDep,
    experiment: Annotated[int, Query(ge=1, le=MAX_ID, description="experiment id")],
    t: Annotated[float, Query(ge=0.0, le=1.0, description="diffusion time (3 decimals)")],
    split: Split = "test",
    encoder: Annotated[EncoderWeights, Query(
        description="whose codes: the trained encoder's (default) or the untrained control's "
                    "(random_init: the same architecture and seed, never trained)")] = TRAINED,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ROWS, description="rows per page")] = 1000,
    format: Literal["json", "npy"] = "json",
) -> Response:
    t = t_key(t)
    exp = get_experiment(session, experiment)
    require_encoder(exp)
    row = _row(session, embedding_key(experiment, split, t, encoder))
    if row is None:
        computed = service.computed_embeddings(session, experiment, encoder).get(split, [])
        what = f"{split} embeddings" + ("" if encoder == TRAINED else f" of the {encoder} control")
        where = dict(experiment=experiment, t=t, split=split, encoder=encoder, computed_t=computed)
        if computed:   # encoded, but not at this t
            raise Problem(404, f"experiment {experiment} has no {what} at t={t:.3f}; computed t: "
                               f"{', '.join(f'{c:g}' for c in computed)} (POST /experiments/"
                               f"{experiment}/encodings to compute more)",
                          type=NOT_FOUND, title="Not found", **where)
        raise Problem(409, f"experiment {experiment} has no {what} yet: "
                           f"{describe_job(latest_job(exp, JobKind.ENCODE), 'encode')}",
                      type=NOT_READY, title="Not ready", **where)

    vectors = _load(state, store, row)
    labels_row = _row(session, labels_key(experiment, split))
    labels = _load(state, store, labels_row) if labels_row is not None else None
    total = len(vectors)
    page = vectors[offset:offset + limit]
    counts = {"X-Total-Count": str(total), "X-Offset": str(offset), "X-Limit": str(limit)}
    if format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(page), allow_pickle=False)
        return Response(buffer.getvalue(), media_type=NPY_MEDIA_TYPE, headers=counts | {
            "Content-Disposition": f'attachment; filename="experiment{experiment}_{split}_t={t:.3f}'
                                   f'{"" if encoder == TRAINED else "_" + encoder}_{offset}.npy"'})
    header = {"experiment": experiment, "t": t, "split": split, "encoder": encoder,
              "total": total, "offset": offset,
              "limit": limit, "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0}
    body = render_page_json(header, offset, page, None if labels is None else labels[offset:offset + limit])
    return Response(body, media_type="application/json", headers=counts)


@router.get(
    "/embeddings/labels", summary="A split's class labels, row by row with its embeddings (.npy)",
    response_class=Response,
    responses={200: {"content": {NPY_MEDIA_TYPE: {}}, "description": "the split's labels as a "
               ".npy int64 array, in the row order of every t's embeddings"}}
    | problem_responses(401, 404, 409, 422),
)
def read_embedding_labels(
    session: SessionDep,
    store: StoreDep,
    experiment: Annotated[int, Query(ge=1, le=MAX_ID, description="experiment id")],
    split: Split = "test",
) -> Response:
    """What `drl embeddings` saves beside the codes. 409 (type not-ready) until the encode
    job has stored the split; 404 for a dataset without labels."""
    exp = get_experiment(session, experiment)
    require_encoder(exp)
    key = labels_key(experiment, split)
    if _row(session, key) is None:
        if service.computed_embeddings(session, experiment).get(split):
            raise Problem(404, f"experiment {experiment}'s dataset has no labels", type=NOT_FOUND,
                          title="Not found", experiment=experiment, split=split)
        raise Problem(409, f"experiment {experiment} has no {split} embeddings yet: "
                           f"{describe_job(latest_job(exp, JobKind.ENCODE), 'encode')}",
                      type=NOT_READY, title="Not ready", experiment=experiment, split=split)
    try:
        data = store.get_bytes(key)
    except ArtifactNotFound:
        raise Problem(404, f"artifact {key} is recorded but missing from the artifact store",
                      type=NOT_FOUND, title="Not found") from None
    return Response(data, media_type=NPY_MEDIA_TYPE, headers={
        "Content-Disposition": f'attachment; filename="experiment{experiment}_{split}_labels.npy"'})


@router.post("/experiments/{experiment_id}/encodings", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobOut, summary="Encode both splits at more t values (a job)",
             responses=problem_responses(*BODY_STATUSES, 401, 403, 404, 409, 422, 429, 503))
def request_encodings(experiment_id: ExperimentId, request: EncodeRequest, session: SessionDep,
                      state: StateDep, user: CurrentUser) -> JobOut:
    """Needs a finished training (409 before) and a model kind with an encoder (422, type
    no-encoder, for vdm); only the experiment's owner or an admin may ask (403); 429 past the
    owner's `max_queued_jobs_per_user`. The job's id
    is in the answer: follow it at /jobs/{id}; the embeddings appear under GET /embeddings
    when it succeeds."""
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, "encode")
    try:
        job = service.request_encodings(session, experiment, request.t, celery_app=state.celery,
                                        queued_limit=state.settings.max_queued_jobs_per_user)
    except service.NotReady as err:
        raise Problem(409, str(err), type=NOT_READY, title="Not ready") from None
    except LimitExceeded as err:
        raise limit_problem(err) from None
    except service.NoEncoder as err:
        raise no_encoder_problem(err, experiment) from None
    except ValueError as err:
        raise validation_problem([field_error("t", str(err).removeprefix("t: "))]) from None
    return JobOut.from_job(job)
