"""The run page's 2-d view of the test embeddings at one t, coloured by label.

A code of more than two dimensions is projected on its first two principal components:
with X the (n, d) codes and X_c = X - mean(X) = U S V^T, the points are X_c V[:, :2] (the
directions of largest variance; their share of the variance is S_k^2 / sum S^2). A 2-d code
is shown as it is; a 1-d code against zero.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from api.deps import AppState
from api.problems import Problem
from api.routers import embeddings
from drl_core.artifacts import ArtifactStore
from drl_engine.spec import TRAINED

# Points drawn: the split's first rows (a canvas of 10,000 points says no more than 2,000).
MAX_POINTS = 2000


@dataclass(frozen=True)
class Scatter:
    id: str
    title: str
    x_label: str
    y_label: str
    x: list[float]
    y: list[float]
    labels: list[int] | None
    kind: str = "scatter"


def embedding_scatter(session: Session, store: ArtifactStore, state: AppState, experiment_id: int,
                      t: float) -> Scatter:
    """The test split's first MAX_POINTS codes at t in 2-d; the API's problem when there are
    none at t (404, naming the computed t) or not yet (409)."""
    page = embeddings.read_embeddings(
        session=session, store=store, state=state, experiment=experiment_id, t=t, split="test",
        encoder=TRAINED, offset=0, limit=MAX_POINTS, format="npy")
    codes = np.load(io.BytesIO(page.body), allow_pickle=False).astype(np.float64)
    codes = codes.reshape(len(codes), -1)
    labels = test_labels(session, store, experiment_id, len(codes))
    finite = np.isfinite(codes).all(axis=1)   # a diverged model's NaN codes cannot be drawn
    codes = codes[finite]
    if labels is not None:
        labels = [label for label, keep in zip(labels, finite) if keep]
    points, axes = principal_plane(codes)
    return Scatter(f"scatter-{t:.3f}", f"Test codes at t={t:g} ({len(points)} of "
                   f"{page.headers['X-Total-Count']} images)", axes[0], axes[1],
                   points[:, 0].tolist(), points[:, 1].tolist(), labels)


def test_labels(session: Session, store: ArtifactStore, experiment_id: int, count: int) -> list[int] | None:
    try:
        response = embeddings.read_embedding_labels(session=session, store=store,
                                                    experiment=experiment_id, split="test")
    except Problem:
        return None   # a dataset without labels: one colour
    return np.load(io.BytesIO(response.body), allow_pickle=False)[:count].astype(int).tolist()


def principal_plane(codes: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """(n, 2) points and their axis names (see the module docstring)."""
    n, dim = codes.shape
    if n < 2:
        return np.zeros((n, 2)), ("", "")
    if dim == 1:
        return np.column_stack([codes[:, 0], np.zeros(n)]), ("code", "")
    if dim == 2:
        return codes, ("code 1", "code 2")
    centred = codes - codes.mean(axis=0)
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    share = singular ** 2 / max(float((singular ** 2).sum()), np.finfo(float).tiny)
    return centred @ right[:2].T, (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})")
