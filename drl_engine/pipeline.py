"""`drl run`: train -> encode on the t grid -> probe -> sample, written to one output folder.

Output layout (the service stores the same files under its artifact keys):
    DIR/checkpoints/ckpt_XXXXXXXX.pt
    DIR/embeddings/<split>_t=<t:.3f>.npy, DIR/embeddings/<split>_labels.npy
    DIR/probes.csv   (t,svc_100,svc_1000,linear,mlp,silhouette)
    DIR/probes.png   (accuracy against t)
    DIR/samples.png
    DIR/metrics.json (spec, training summary, probe table with best t, sampling summary)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .datasets import ImageDataset, load_dataset
from .device import resolve_device
from .encode import Encodings, embedding_filename, encode_at
from .generate import Generation, generate
from .plots import plot_probe_curves, save_image_grid
from .probes import ProbeTable, probe_sweep
from .spec import ExperimentSpec
from .trainer import TrainProgress, train

Log = Callable[[str], None]


@dataclass
class RunSummary:
    out_dir: Path
    metrics: dict
    probes: ProbeTable | None
    timings: dict[str, float] = field(default_factory=dict)


def write_embeddings(out_dir: Path, split: str, encodings: Encodings,
                     labels: torch.Tensor | None) -> list[Path]:
    """One .npy per t, plus the split's labels; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, codes in encodings.by_t.items():
        path = out_dir / embedding_filename(split, t)
        np.save(path, codes.astype(np.float32, copy=False))
        paths.append(path)
    if labels is not None:
        path = out_dir / f"{split}_labels.npy"
        np.save(path, labels.cpu().numpy().astype(np.int64))
        paths.append(path)
    return paths


def grid_width(n: int, target: int) -> int:
    """The smallest divisor of n that is >= target, so a grid of n images has no gaps."""
    return next(d for d in range(max(1, target), n + 1) if n % d == 0) if n else 1


def save_generation(gen: Generation, path: Path) -> None:
    """Encoded codes: originals on top, their reconstructions below; else the samples alone."""
    n = len(gen.images)
    if gen.references is not None:
        nrow = grid_width(n, int(np.ceil(np.sqrt(2 * n))))
        save_image_grid(torch.cat([gen.references, gen.images]), path, nrow=nrow)
    else:
        save_image_grid(gen.images, path, nrow=grid_width(n, int(np.ceil(np.sqrt(n)))))


def run_experiment(spec: ExperimentSpec, out_dir: Path, *,
                   on_train_progress: Callable[[TrainProgress], None] | None = None,
                   log: Log = print, dataset: ImageDataset | None = None) -> RunSummary:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    device = resolve_device(spec.train.device)

    start = time.perf_counter()
    ds = dataset or load_dataset(spec.dataset)
    ds = ds.to(device)
    timings["load_s"] = time.perf_counter() - start
    log(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test images "
        f"of shape {tuple(ds.image_shape)} on {device}")

    start = time.perf_counter()
    result = train(spec, ds, out_dir / "checkpoints", progress=on_train_progress, device=device)
    timings["train_s"] = time.perf_counter() - start
    model = result.model

    start = time.perf_counter()
    encodings = {}
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        encodings[split] = encode_at(model, x, spec.evaluate.t_grid, spec.evaluate.batch_size, device)
        write_embeddings(out_dir / "embeddings", split, encodings[split], y)
    timings["encode_s"] = time.perf_counter() - start

    table = None
    if ds.y_train is not None and ds.y_test is not None:
        start = time.perf_counter()
        pairs = {t: (encodings["train"].by_t[t], encodings["test"].by_t[t])
                 for t in encodings["test"].by_t}
        table = probe_sweep(pairs, ds.y_train.cpu().numpy(), ds.y_test.cpu().numpy(), spec.evaluate)
        table.to_csv(out_dir / "probes.csv")
        plot_probe_curves(table, out_dir / "probes.png", title=spec.name or ds.name)
        timings["probe_s"] = time.perf_counter() - start
        log(table.format_table())
    else:
        log("no labels in this dataset: probes skipped")

    start = time.perf_counter()
    gen = generate(model, spec.sample, ds.x_test, device)
    save_generation(gen, out_dir / "samples.png")
    timings["sample_s"] = time.perf_counter() - start

    metrics = {
        "spec": spec.model_dump(mode="json"),
        "dataset": {"name": ds.name, "image_shape": list(ds.image_shape),
                    "train": len(ds.x_train), "test": len(ds.x_test)},
        "train": {"steps": result.step, "final_loss": result.final_loss,
                  "images_per_s": spec.train.batch_size * result.step / max(timings["train_s"], 1e-9),
                  "device": str(device)},
        "encode": {"t_grid": sorted(encodings["test"].by_t),
                   "t_independent": encodings["test"].t_independent},
        "probes": table.to_dict() if table else None,
        "sample": {"sampler": spec.sample.sampler, "count": len(gen.images),
                   "steps": gen.result.steps, "nfe": gen.result.nfe,
                   "finite": bool(torch.isfinite(gen.images).all())},
        "timings": timings,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return RunSummary(out_dir, metrics, table, timings)
