"""Probe job (cpu queue): `probe_sweep` over the stored embeddings at the job's t values.

Reads the embeddings and labels back from the store (no model, no GPU), and stores
probes.json (the table, with the best t per probe), probes.csv and probes.png. The json row's
meta carries the best-t summary so the API can show it without reading the file.
"""

from __future__ import annotations

import json

import numpy as np

from drl_core.artifact_keys import SPLITS, ArtifactKind, probes_key, t_key
from drl_engine.plots import plot_probe_curves
from drl_engine.probes import probe_sweep
from worker.context import JobContext
from worker.jobs.arrays import npy_load


def run(ctx: JobContext) -> None:
    ts = ctx.t_values()
    labels = {row.meta["split"]: row for row in ctx.artifacts(ArtifactKind.LABELS)}
    if not set(SPLITS) <= set(labels):
        ctx.log("the dataset has no labels: probes skipped")
        return
    rows = {(row.meta["split"], t_key(row.meta["t"])): row
            for row in ctx.artifacts(ArtifactKind.EMBEDDING)}
    missing = sorted({t for t in ts for split in SPLITS if (split, t) not in rows})
    if missing:
        raise RuntimeError(f"embeddings at t={missing} are not stored; the encode job must "
                           "succeed first")

    # Identical files (a static encoder's codes do not depend on t) become one array object,
    # which probe_sweep recognises and probes once.
    by_digest: dict[str, np.ndarray] = {}

    def load(row) -> np.ndarray:
        if row.sha256 not in by_digest:
            by_digest[row.sha256] = npy_load(ctx.store.get_bytes(row.key))
        return by_digest[row.sha256]

    pairs = {t: (load(rows["train", t]), load(rows["test", t])) for t in ts}
    y_train, y_test = (npy_load(ctx.store.get_bytes(labels[split].key)) for split in SPLITS)
    table = probe_sweep(pairs, y_train, y_test, ctx.spec.evaluate, progress=ctx.progress_check())
    ctx.log("probes:\n" + table.format_table())

    ctx.store_bytes(probes_key(ctx.experiment_id, "json"),
                    json.dumps(table.to_dict(), indent=2).encode(), ArtifactKind.PROBES,
                    {"format": "json", "t": ts, "best": table.best()})
    csv_path = ctx.workdir / "probes.csv"
    table.to_csv(csv_path)
    ctx.store_file(probes_key(ctx.experiment_id, "csv"), csv_path, ArtifactKind.PROBES,
                   {"format": "csv"})
    png_path = ctx.workdir / "probes.png"
    plot_probe_curves(table, png_path, title=ctx.spec.name or f"experiment {ctx.experiment_id}")
    ctx.store_file(probes_key(ctx.experiment_id, "png"), png_path, ArtifactKind.PROBES,
                   {"format": "png"})
