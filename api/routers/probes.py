"""Probe results: every probe's value at every t, and the best t per probe (chosen on the
validation split), for the trained encoder and for its untrained control (random_init)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi import APIRouter

from api.deps import SessionDep, StoreDep
from api.lookups import ExperimentId, describe_job, get_experiment, latest_job, require_encoder
from api.problems import NOT_READY, Problem, problem_responses
from api.schemas import ProbesOut
from drl_core.artifact_keys import probes_key
from drl_core.artifacts import ArtifactNotFound
from drl_core.job_states import JobKind
from drl_core.models import Artifact

router = APIRouter(tags=["results"])


@router.get("/experiments/{experiment_id}/probes", response_model=ProbesOut,
            summary="Probe accuracy at every t, and the best t per probe, beside an "
                    "untrained control",
            responses=problem_responses(401, 404, 409, 422))
def read_probes(experiment_id: ExperimentId, session: SessionDep, store: StoreDep) -> ProbesOut:
    """409 (type not-ready) while the probes are not computed, saying what the probe job is
    doing; 422 (type no-encoder) for a model kind without a code (vdm)."""
    experiment = get_experiment(session, experiment_id)
    require_encoder(experiment)
    key = probes_key(experiment_id, "json")
    row = session.scalar(sa.select(Artifact).where(Artifact.key == key))
    try:
        if row is None:
            raise ArtifactNotFound(key)
        # as the probe job wrote it: ProbeTable.to_dict() (NaN already null, best included;
        # probes computed before the control existed have no control_rows)
        table = json.loads(store.get_bytes(key))
    except ArtifactNotFound:
        raise Problem(409, f"the probes of experiment {experiment_id} are not computed yet: "
                           f"{describe_job(latest_job(experiment, JobKind.PROBE), 'probe')}",
                      type=NOT_READY, title="Not ready", experiment=experiment_id) from None
    return ProbesOut(experiment=experiment_id, columns=table["columns"], rows=table["rows"],
                     best=table["best"], control_rows=table.get("control_rows", []),
                     control_best=table.get("control_best", {}),
                     t_values=[row["t"] for row in table["rows"]])
