"""One cell of the weighting study: its spec, its `drl run`, and the numbers the report reads.

Each cell is a plain `run_experiment` into its own folder, so the study reports exactly what
metrics.json holds (probes with the untrained control and best t chosen on validation, the
final code usage, FD-LeNet and reconstruction agreement of encoded samples). Besides, at every
checkpoint the EMA encoder is probed once (accuracy against training steps): the SVC at the
largest label budget and the linear probe at `CURVE_T` (any t for a static code), scored on
the test split: a learning curve, never used to choose anything.

A cell's numbers are written to `<run>/cell.json` and to the report's record,
`<out>/weighting/cells/<dataset>/<cell>.json` (committed beside WEIGHTING.md: the raw
numbers every table and figure is drawn from). A later study run with the same spec reads
either instead of training again, so an interrupted study resumes where it stopped, on this
machine or (from the record) on another, and several processes (`--shard`) share a grid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..datasets import ImageDataset
from ..encode import encode_images
from ..pipeline import run_experiment
from ..probes import probe_embeddings
from ..spec import ExperimentSpec, parse_spec
from .budgets import VARIANTS, WINDOW_FINETUNE_FRACTION, Cell, WeightingBudget

Log = Callable[[str], None]
CURVE_T = 0.5
CELL_FILE = "cell.json"


def cell_spec(budget: WeightingBudget, cell: Cell, data_dir: str | None = None,
              device: str = "auto") -> ExperimentSpec:
    """The `drl run` spec of one cell: the budget's networks and training, the variant's
    overrides, the cell's encoder and seed (training, label subsets, sampling)."""
    ds = budget.dataset(cell.dataset)
    variant = VARIANTS[cell.variant]
    iterations = budget.iterations * variant.get("steps_factor", 1)
    finetune = (round(WINDOW_FINETUNE_FRACTION * budget.iterations)
                if cell.variant == "window" else 0)
    return parse_spec({
        "name": f"weighting-study {budget.name}: {cell.name}",
        "dataset": {"name": cell.dataset, "data_dir": data_dir, "train_limit": ds.train_limit,
                    "test_limit": ds.test_limit},
        "model": {"kind": "drl", "encoder": cell.encoder, "latent_dim": budget.latent_dim,
                  "base_channels": budget.base_channels,
                  "channel_mult": list(budget.channel_mult),
                  "num_res_blocks": budget.num_res_blocks, "attn_resolutions": [],
                  "dropout": budget.dropout, **variant.get("model", {})},
        "objective": variant.get("objective", {}),
        "train": {"iterations": iterations, "batch_size": budget.batch_size,
                  "lr": budget.lr, "warmup": budget.warmup, "ema_decay": budget.ema_decay,
                  "seed": cell.seed, "decoder_finetune_steps": finetune,
                  "checkpoint_every": max(1, budget.iterations // budget.checkpoints),
                  "log_every": max(1, budget.iterations // 10), "device": device},
        "evaluate": {"t_grid": list(budget.t_grid), "probes": ["svc", "linear", "silhouette"],
                     "label_budgets": list(budget.label_budgets),
                     "validation_size": budget.validation_size,
                     "code_usage_images": budget.code_usage_images, "seed": cell.seed},
        "sample": {"code_source": "encoded", "count": budget.sample_count,
                   "steps": budget.sample_steps, "seed": cell.seed},
    })


@dataclass
class CellResult:
    cell: Cell
    spec_json: str                       # the spec it ran, to tell a stale cell.json
    seconds: float
    steps: int
    probes: dict                         # ProbeTable.to_dict(): rows, best, control_rows, ...
    code_usage: dict | None              # metrics.json's final code usage
    curve: list[dict] = field(default_factory=list)   # [{step, svc_<n>_std, linear, ...}]
    fd_lenet: float | None = None
    agreement: float | None = None       # reconstruction agreement (share of matching labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> CellResult:
        data = json.loads(text)
        return cls(**{**data, "cell": Cell(**data["cell"])})


def curve_probe(spec: ExperimentSpec, ds: ImageDataset, device, curve: list[dict]
                ) -> Callable:
    """The on-checkpoint callback: probe the EMA encoder at CURVE_T, append {step, ...}."""
    evaluate = spec.evaluate.model_copy(update={"probes": ["svc", "linear"],
                                                "label_budgets": [max(spec.evaluate.label_budgets)]})
    y_train, y_test = ds.y_train.cpu().numpy(), ds.y_test.cpu().numpy()

    def probe(model, step: int) -> None:
        t = CURVE_T if spec.model.encoder == "time_conditioned" else None
        codes = [encode_images(model, x, t, spec.evaluate.batch_size, device)
                 for x in (ds.x_train, ds.x_test)]
        values = probe_embeddings(codes[0], y_train, codes[1], y_test, evaluate)
        curve.append({"step": step, **{k: v for k, v in values.items() if not k.startswith("val_")}})
    return probe


def record_path(record_dir: Path, cell: Cell) -> Path:
    """Where the report's record keeps a cell's numbers: <record_dir>/<dataset>/<cell>.json."""
    return record_dir / f"{cell.name}.json"


def spec_key(spec: ExperimentSpec) -> str:
    """The spec as a cached cell must match it (the device and data folder do not count)."""
    return spec.model_dump_json(exclude={"train": {"device"}, "dataset": {"data_dir"}})


def cached_cell(cell: Cell, paths: list[Path], spec_json: str | None = None) -> CellResult | None:
    """The first of `paths` that holds this cell's numbers (for `spec_json`, when given)."""
    for path in paths:
        if path.exists():
            cached = CellResult.from_json(path.read_text())
            if spec_json is None or cached.spec_json == spec_json:
                return cached
    return None


def run_cell(budget: WeightingBudget, cell: Cell, ds: ImageDataset, runs_dir: Path,
             record_dir: Path, data_dir: str | None, device: str, log: Log) -> CellResult:
    """Train and evaluate one cell, or read its numbers back if it already ran this spec."""
    spec = cell_spec(budget, cell, data_dir, device)
    spec_json = spec_key(spec)
    run_dir = runs_dir / cell.name
    done, record = run_dir / CELL_FILE, record_path(record_dir, cell)
    if (cached := cached_cell(cell, [done, record], spec_json)) is not None:
        log(f"--- {cell.name}: already ran")
        if not record.exists():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(cached.to_json())
        return cached
    log(f"--- {cell.name}: {spec.train.total_steps} steps -> {run_dir}")
    curve: list[dict] = []
    start = time.perf_counter()
    summary = run_experiment(spec, run_dir, log=log, dataset=ds,
                             on_checkpoint_model=curve_probe(spec, ds, ds.x_train.device, curve))
    metrics = summary.metrics
    fd = metrics.get("fd_lenet")
    sample = metrics.get("sample") or {}
    result = CellResult(
        cell=cell, spec_json=spec_json, seconds=time.perf_counter() - start,
        steps=metrics["train"]["steps"], probes=metrics["probes"],
        code_usage=metrics.get("code_usage"), curve=sorted(curve, key=lambda c: c["step"]),
        fd_lenet=fd["value"] if fd else None,
        agreement=sample.get("reconstruction_agreement",
                             (metrics.get("reconstructions") or {}).get("reconstruction_agreement")))
    done.write_text(result.to_json())
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(result.to_json())
    return result
