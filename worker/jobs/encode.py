"""Encode job: the trained encoder's codes of both splits at the job's t values.

One .npy per split and t (`embeddings/<split>/t=0.500.npy`) plus each split's labels. A t
whose embeddings are already recorded for a split is not encoded again: a job that runs
twice (or asks for a t that an earlier job computed) writes nothing twice.
"""

from __future__ import annotations

import numpy as np

from drl_core.artifact_keys import SPLITS, ArtifactKind, embedding_key, labels_key, t_key
from drl_engine.encode import encode_at
from worker.context import JobContext
from worker.jobs.arrays import npy_bytes
from worker.jobs.common import job_dataset, job_device, load_trained_model


def run(ctx: JobContext) -> None:
    ts = ctx.t_values()
    stored = {(row.meta["split"], t_key(row.meta["t"])) for row in ctx.artifacts(ArtifactKind.EMBEDDING)}
    stored_labels = {row.meta["split"] for row in ctx.artifacts(ArtifactKind.LABELS)}
    todo = {split: [t for t in ts if (split, t) not in stored] for split in SPLITS}
    if not any(todo.values()) and stored_labels >= set(SPLITS):
        ctx.log(f"embeddings at t={ts} are already stored for both splits")
        return

    device = job_device(ctx)
    model = load_trained_model(ctx, device)
    dataset = job_dataset(ctx)
    for split in SPLITS:
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if todo[split]:
            encodings = encode_at(model, x, todo[split], ctx.spec.evaluate.batch_size, device,
                                  progress=ctx.progress_check())
            for t, codes in encodings.by_t.items():
                ctx.store_bytes(embedding_key(ctx.experiment_id, split, t),
                                npy_bytes(codes.astype(np.float32, copy=False)),
                                ArtifactKind.EMBEDDING, {"split": split, "t": t})
            ctx.log(f"{split}: encoded {len(x)} images at t={todo[split]}")
        if y is not None and split not in stored_labels:
            ctx.store_bytes(labels_key(ctx.experiment_id, split),
                            npy_bytes(y.cpu().numpy().astype(np.int64)),
                            ArtifactKind.LABELS, {"split": split})
