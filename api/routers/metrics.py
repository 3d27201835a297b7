"""Metric series (e.g. the training loss), downsampled for plotting with LTTB."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Query

from api.deps import SessionDep
from api.downsample import lttb_indices
from api.lookups import ExperimentId, describe_job, get_experiment, latest_job
from api.problems import NOT_FOUND, NOT_READY, Problem, problem_responses
from api.schemas import MetricPointOut, MetricSeries
from drl_core.job_states import TERMINAL, JobKind
from drl_core.models import Experiment, MetricPoint

router = APIRouter(tags=["results"])

MAX_POINTS = 10_000
DEFAULT_POINTS = 500
KEY_PATTERN = r"^[A-Za-z0-9_.:/-]{1,64}$"  # the column holds 64 characters


@router.get("/experiments/{experiment_id}/metrics", response_model=MetricSeries,
            summary="A metric series, downsampled to at most max_points (LTTB)",
            responses=problem_responses(401, 404, 409, 422))
def read_metric(
    experiment_id: ExperimentId,
    session: SessionDep,
    key: Annotated[str, Query(pattern=KEY_PATTERN, description="metric name, e.g. loss")] = "loss",
    max_points: Annotated[int, Query(ge=2, le=MAX_POINTS)] = DEFAULT_POINTS,
) -> MetricSeries:
    """Points are (step, value) in step order; `keys` lists what this experiment has recorded.
    A key it has not recorded is 409 (type not-ready) while its train job may still record
    it, else 404 (type not-found); both list the recorded keys."""
    experiment = get_experiment(session, experiment_id)
    keys = sorted(session.scalars(
        sa.select(MetricPoint.key).where(MetricPoint.experiment_id == experiment_id).distinct()))
    if key not in keys:
        raise unrecorded_key(experiment, key, keys)
    rows = session.execute(
        sa.select(MetricPoint.step, MetricPoint.value)
        .where(MetricPoint.experiment_id == experiment_id, MetricPoint.key == key)
        .order_by(MetricPoint.step, MetricPoint.id)
    ).all()
    steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    keep = lttb_indices(steps, values, max_points)
    return MetricSeries(
        experiment=experiment_id, key=key, method="lttb", max_points=max_points,
        total_points=len(steps), dropped_non_finite=int((~finite).sum()), keys=keys,
        points=[MetricPointOut(step=s, value=v) for s, v in zip(steps[keep].tolist(), values[keep].tolist())],
    )


def unrecorded_key(experiment: Experiment, key: str, keys: list[str]) -> Problem:
    """The problem for a key without points: not ready while the train job (the only job that
    records metrics) is queued, running or re-queued; not found once it has stopped."""
    recorded = f"recorded keys: {', '.join(keys)}" if keys else "no key recorded yet"
    where = {"experiment": experiment.id, "key": key, "keys": keys}
    train = latest_job(experiment, JobKind.TRAIN)
    if train is not None and train.status not in TERMINAL:
        return Problem(409, f"experiment {experiment.id} has no {key!r} points yet: "
                            f"{describe_job(train, 'train')}; {recorded}",
                       type=NOT_READY, title="Not ready", **where)
    return Problem(404, f"experiment {experiment.id} has no metric {key!r}; {recorded}",
                   type=NOT_FOUND, title="Not found", **where)
