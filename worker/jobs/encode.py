"""Encode job: the codes of both splits at the job's t values, by the trained encoder and by
its untrained control.

One .npy per encoder, split and t (`embeddings/<split>/t=0.500.npy` for the trained encoder,
`embeddings/random_init/<split>/t=0.500.npy` for the control: the same architecture and seed
before any training step, built from the spec and the dataset, no checkpoint needed) plus each
split's labels. Codes already recorded for an (encoder, split, t) are not encoded again: a job
that runs twice (or asks for a t that an earlier job computed) writes nothing twice.
"""

from __future__ import annotations

import numpy as np

from drl_core.artifact_keys import (
    SPLITS,
    ArtifactKind,
    embedding_key,
    embedding_kind,
    labels_key,
    t_key,
)
from drl_engine.encode import encode_at
from drl_engine.registry import untrained_model
from drl_engine.spec import ENCODER_WEIGHTS, TRAINED
from worker.context import JobContext
from worker.jobs.arrays import npy_bytes
from worker.jobs.common import job_dataset, job_device, load_trained_model


def run(ctx: JobContext) -> None:
    ts = ctx.t_values()
    todo: dict[tuple[str, str], list[float]] = {}
    for encoder in ENCODER_WEIGHTS:
        stored = {(row.meta["split"], t_key(row.meta["t"]))
                  for row in ctx.artifacts(embedding_kind(encoder))}
        for split in SPLITS:
            todo[encoder, split] = [t for t in ts if (split, t) not in stored]
    stored_labels = {row.meta["split"] for row in ctx.artifacts(ArtifactKind.LABELS)}
    if not any(todo.values()) and stored_labels >= set(SPLITS):
        ctx.log(f"embeddings at t={ts} are already stored for both splits and both encoders")
        return

    device = job_device(ctx)
    dataset = job_dataset(ctx)
    for encoder in ENCODER_WEIGHTS:
        if not any(todo[encoder, split] for split in SPLITS):
            continue
        model = (load_trained_model(ctx, device) if encoder == TRAINED
                 else untrained_model(ctx.spec, dataset).to(device))
        for split in SPLITS:
            if not todo[encoder, split]:
                continue
            x = getattr(dataset, f"x_{split}")
            encodings = encode_at(model, x, todo[encoder, split], ctx.spec.evaluate.batch_size,
                                  device, progress=ctx.progress_check())
            for t, codes in encodings.by_t.items():
                ctx.store_bytes(embedding_key(ctx.experiment_id, split, t, encoder),
                                npy_bytes(codes.astype(np.float32, copy=False)),
                                embedding_kind(encoder), {"split": split, "t": t})
            ctx.log(f"{split}: {encoder} encoder coded {len(x)} images at t={todo[encoder, split]}")
    for split in SPLITS:
        y = getattr(dataset, f"y_{split}")
        if y is not None and split not in stored_labels:
            ctx.store_bytes(labels_key(ctx.experiment_id, split),
                            npy_bytes(y.cpu().numpy().astype(np.int64)),
                            ArtifactKind.LABELS, {"split": split})
