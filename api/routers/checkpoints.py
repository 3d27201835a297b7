"""Checkpoints: an experiment's stored training checkpoints, and pins that keep one past
retention (drl_core/checkpoints.py has the rule and why a pin and retention cannot cross)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from api.auth import require_owner
from api.deps import CurrentUser, SessionDep
from api.lookups import ExperimentId, get_experiment
from api.problems import not_found, problem_responses
from api.schemas import CheckpointOut
from drl_core.artifact_keys import checkpoint_step
from drl_core.checkpoints import set_pinned, stored_checkpoints
from drl_core.models import User

router = APIRouter(tags=["experiments"])

# A checkpoint key holds any step (zero-padded to 8 digits, longer if it must); the bound only
# keeps the number one that every JSON client reads exactly.
MAX_STEP = 2**53
Step = Annotated[int, Path(ge=0, le=MAX_STEP, description="the training step of the checkpoint")]


@router.get("/experiments/{experiment_id}/checkpoints", response_model=list[CheckpointOut],
            summary="An experiment's stored checkpoints, oldest first, and which are pinned",
            responses=problem_responses(401, 404, 422))
def list_checkpoints(experiment_id: ExperimentId, session: SessionDep) -> list[CheckpointOut]:
    """The train job keeps the newest checkpoints and the pinned ones, deleting the others as
    it saves new ones; deleting the experiment deletes them all."""
    get_experiment(session, experiment_id)
    return [CheckpointOut.from_artifact(row) for row in stored_checkpoints(session, experiment_id)]


@router.post("/experiments/{experiment_id}/checkpoints/{step}/pin", response_model=CheckpointOut,
             summary="Pin a checkpoint: kept past retention until it is unpinned",
             responses=problem_responses(401, 403, 404, 422))
def pin_checkpoint(experiment_id: ExperimentId, step: Step, session: SessionDep,
                   user: CurrentUser) -> CheckpointOut:
    """Only the experiment's owner or an admin may (403); 404 for a step with no stored
    checkpoint (the problem lists the stored steps). Pinning twice changes nothing."""
    return _set_pinned(session, user, experiment_id, step, pinned=True)


@router.delete("/experiments/{experiment_id}/checkpoints/{step}/pin", response_model=CheckpointOut,
               summary="Unpin a checkpoint: retention may delete it again",
               responses=problem_responses(401, 403, 404, 422))
def unpin_checkpoint(experiment_id: ExperimentId, step: Step, session: SessionDep,
                     user: CurrentUser) -> CheckpointOut:
    """The owner's or an admin's, as pinning is. An unpinned checkpoint older than the newest
    ones is deleted when the train job next saves one (it stays if none runs)."""
    return _set_pinned(session, user, experiment_id, step, pinned=False)


def _set_pinned(session: Session, user: User | None, experiment_id: int, step: int,
                pinned: bool) -> CheckpointOut:
    experiment = get_experiment(session, experiment_id)
    require_owner(user, experiment, f"{'pin' if pinned else 'unpin'} checkpoints of")
    row = set_pinned(session, experiment_id, step, pinned)
    if row is None:
        stored = [checkpoint_step(r.key) for r in stored_checkpoints(session, experiment_id)]
        raise not_found(f"experiment {experiment_id} has no stored checkpoint at step {step}; "
                        f"stored steps: {', '.join(map(str, stored)) or 'none'}",
                        experiment=experiment_id, step=step, stored_steps=stored)
    return CheckpointOut.from_artifact(row)
