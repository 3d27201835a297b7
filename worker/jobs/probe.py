"""Probe job (cpu queue): `probe_sweep` over the stored embeddings at the job's t values.

Reads the embeddings and labels back from the store (no model, no GPU): the trained
encoder's and its untrained control's (random_init), probed on the same splits. Stores
probes.json (the table with both, and the best t per probe chosen on the validation split),
probes.csv and probes.png. The json row's meta carries both best-t summaries so the API can
show them without reading the file.
"""

from __future__ import annotations

import json

import numpy as np

from drl_core.artifact_keys import SPLITS, ArtifactKind, embedding_kind, probes_key, t_key
from drl_engine.plots import plot_probe_curves
from drl_engine.probes import chance_accuracy, probe_sweep
from drl_engine.spec import ENCODER_WEIGHTS, RANDOM_INIT, TRAINED
from worker.context import JobContext
from worker.jobs.arrays import npy_load


def run(ctx: JobContext) -> None:
    ts = ctx.t_values()
    labels = {row.meta["split"]: row for row in ctx.artifacts(ArtifactKind.LABELS)}
    if not set(SPLITS) <= set(labels):
        ctx.log("the dataset has no labels: probes skipped")
        return
    rows = {(encoder, row.meta["split"], t_key(row.meta["t"])): row
            for encoder in ENCODER_WEIGHTS for row in ctx.artifacts(embedding_kind(encoder))}
    missing = {encoder: sorted({t for t in ts for split in SPLITS
                                if (encoder, split, t) not in rows})
               for encoder in ENCODER_WEIGHTS}
    if any(missing.values()):
        raise RuntimeError("embeddings are not stored: " + "; ".join(
            f"{encoder} encoder at t={m}" for encoder, m in missing.items() if m)
            + "; the encode job must succeed first (POST /experiments/{id}/encodings "
            "encodes what is missing)")

    # Identical files (a static encoder's codes do not depend on t) become one array object,
    # which probe_sweep recognises and probes once.
    by_digest: dict[str, np.ndarray] = {}

    def load(row) -> np.ndarray:
        if row.sha256 not in by_digest:
            by_digest[row.sha256] = npy_load(ctx.store.get_bytes(row.key))
        return by_digest[row.sha256]

    pairs = {encoder: {t: (load(rows[encoder, "train", t]), load(rows[encoder, "test", t]))
                       for t in ts}
             for encoder in ENCODER_WEIGHTS}
    y_train, y_test = (npy_load(ctx.store.get_bytes(labels[split].key)) for split in SPLITS)
    table = probe_sweep(pairs[TRAINED], y_train, y_test, ctx.spec.evaluate,
                        progress=ctx.progress_check(), control=pairs[RANDOM_INIT])
    ctx.log("probes:\n" + table.format_table())

    summary = table.to_dict()
    ctx.store_bytes(probes_key(ctx.experiment_id, "json"),
                    json.dumps(summary, indent=2).encode(), ArtifactKind.PROBES,
                    {"format": "json", "t": ts, "best": summary["best"],
                     "control_best": summary["control_best"]})
    csv_path = ctx.workdir / "probes.csv"
    table.to_csv(csv_path)
    ctx.store_file(probes_key(ctx.experiment_id, "csv"), csv_path, ArtifactKind.PROBES,
                   {"format": "csv"})
    png_path = ctx.workdir / "probes.png"
    plot_probe_curves(table, png_path, title=ctx.spec.name or f"experiment {ctx.experiment_id}",
                      chance=chance_accuracy(y_test))
    ctx.store_file(probes_key(ctx.experiment_id, "png"), png_path, ArtifactKind.PROBES,
                   {"format": "png"})
