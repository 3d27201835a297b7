"""An experiment's stored checkpoints: which ones retention deletes, and the pins that keep
one for good.

The artifact store keeps a training's newest checkpoints (how many: the train job says,
worker/jobs/train.py) and every one a user pinned (POST /experiments/{id}/checkpoints/{step}/pin,
owner or admin); after each upload the train job deletes the others. A pin is the `pinned`
column of the checkpoint's artifact row, so the job's delete and a user's pin cannot cross:
the job deletes a row only while it is unpinned, in one statement (JobContext.delete_artifact),
and a pin sets the column of a row that is still there, in one statement (else: no such
checkpoint). Whichever comes first wins, and a pin that was answered is never undone. Deleting
the experiment deletes every checkpoint, pinned or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.artifact_keys import ArtifactKind, checkpoint_key
from drl_core.models import Artifact


def stored_checkpoints(session: Session, experiment_id: int) -> list[Artifact]:
    """The experiment's checkpoint rows, oldest (lowest step) first: keys are zero-padded
    steps, so key order is step order."""
    return list(session.scalars(
        sa.select(Artifact).where(Artifact.experiment_id == experiment_id,
                                  Artifact.kind == ArtifactKind.CHECKPOINT.value)
        .order_by(Artifact.key)))


def past_retention(checkpoints: Sequence[Artifact], keep: int) -> list[Artifact]:
    """Of `checkpoints` (oldest first), those retention deletes: all but the newest `keep`
    (pinned or not), less the pinned ones."""
    if keep < 1:
        raise ValueError(f"checkpoint retention: keep must be >= 1, got {keep}")
    return [row for row in checkpoints[:-keep] if not row.pinned]


def set_pinned(session: Session, experiment_id: int, step: int, pinned: bool) -> Artifact | None:
    """Pin (or unpin) the experiment's checkpoint at `step`, committed; its row as it now is,
    or None when no checkpoint at that step is stored (never was, or retention deleted it)."""
    row = session.scalar(
        sa.update(Artifact)
        .where(Artifact.key == checkpoint_key(experiment_id, step),
               Artifact.kind == ArtifactKind.CHECKPOINT.value)
        .values(pinned=pinned)
        .returning(Artifact))
    session.commit()
    return row
