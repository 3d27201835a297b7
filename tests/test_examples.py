"""Every example spec validates and runs end to end with `drl run`, on a tiny budget.

Only the budget is overridden (steps, batch, data limits, t grid, probe and sample sizes); the
model kind, networks, objective and sampler are the example's own, so an example that no
longer matches the spec or the engine fails here rather than in a user's first hour.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from drl_cli.main import main
from drl_engine.spec import KINDS_WITHOUT_ENCODER, ModelKind, has_sampler, load_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))

TINY_BUDGET = [
    "train.iterations=2", "train.batch_size=8", "train.warmup=0", "train.checkpoint_every=2",
    "train.log_every=1", "dataset.train_limit=120", "dataset.test_limit=40",
    "evaluate.t_grid=[0.0, 0.5]", "evaluate.label_budgets=[20]", "evaluate.validation_size=20",
    "evaluate.code_usage_images=16", "sample.steps=2", "sample.count=4",
]


def test_there_is_an_example_of_every_model_kind():
    kinds = {load_spec(path).model.kind for path in EXAMPLES}
    assert kinds == set(typing.get_args(ModelKind))


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_a_few_steps(example: Path, tmp_path: Path, data_dir: Path):
    kind = load_spec(example).model.kind
    out = tmp_path / "out"
    overrides = [arg for item in TINY_BUDGET for arg in ("--set", item)]
    assert main(["run", str(example), "--out", str(out), "--data-dir", str(data_dir),
                 "--device", "cpu", *overrides]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["dataset"]["train"] == 120
    assert (out / "probes.csv").is_file() == (kind not in KINDS_WITHOUT_ENCODER)
    assert (out / "samples.png").is_file() == has_sampler(kind)
