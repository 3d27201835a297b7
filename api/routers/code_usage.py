"""The code-usage diagnostic over training: at each checkpoint, how much the code helps at each t."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from api.deps import SessionDep
from api.lookups import (ExperimentId, describe_job, get_experiment, latest_job,
                         require_code_conditioned_score)
from api.problems import NOT_FOUND, NOT_READY, Problem, problem_responses
from api.schemas import CodeUsageOut
from drl_core.code_usage_metrics import PREFIX, code_usage_series
from drl_core.job_states import JobKind
from drl_core.models import MetricPoint

router = APIRouter(tags=["results"])


@router.get("/experiments/{experiment_id}/code-usage", response_model=CodeUsageOut,
            summary="How much the code helps denoise at every t, at every checkpoint",
            responses=problem_responses(401, 404, 409, 422))
def read_code_usage(experiment_id: ExperimentId, session: SessionDep) -> CodeUsageOut:
    """The train job's measurements (drl_engine/code_usage.py), in step order. 409 (type
    not-ready) until its first checkpoint was measured, saying what the train job is doing
    (type not-found when the spec turned the diagnostic off); 422 (type
    no-code-conditioned-score) for a kind other than drl and vdrl."""
    experiment = get_experiment(session, experiment_id)
    require_code_conditioned_score(experiment)
    series = code_usage_series(session.execute(
        sa.select(MetricPoint.key, MetricPoint.step, MetricPoint.value)
        .where(MetricPoint.experiment_id == experiment_id,
               MetricPoint.key.startswith(PREFIX, autoescape=True))
    ).all())
    if not series:
        if (experiment.spec.get("evaluate") or {}).get("code_usage_images") == 0:
            raise Problem(404, f"experiment {experiment_id} does not measure code usage "
                               "(evaluate.code_usage_images is 0)",
                          type=NOT_FOUND, experiment=experiment_id)
        raise Problem(409, f"the code usage of experiment {experiment_id} is not measured yet: "
                           f"{describe_job(latest_job(experiment, JobKind.TRAIN), 'train')}",
                      type=NOT_READY, title="Not ready", experiment=experiment_id)
    return CodeUsageOut.from_series(experiment_id, series)
