"""`drl run SPEC --out DIR`: train, encode, probe and sample on this machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

if TYPE_CHECKING:
    from drl_engine.trainer import TrainProgress


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, encode, probe and sample one experiment locally",
                       description="Train a DRL model from SPEC (YAML or JSON), encode both "
                                   "splits on the t grid, run the probes and draw samples.")
    p.add_argument("spec", type=Path, help="experiment spec (.yaml, .yml or .json)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data-dir", type=Path, help="dataset folder (default: spec, then $DRL_DATA_DIR)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.add_argument("--iterations", type=int, help="override train.iterations")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set model.base_channels=16 (repeatable)")
    p.set_defaults(func=run)


class TrainingBar:
    """The training progress bar, a `progress` callback of `train`.

    Closed as soon as training reports its last step, so that its elapsed time and s/step
    are the training's own, not those of the encode, probe and sample stages after it.
    """

    def __init__(self, total: int, disable: bool = False, file: TextIO | None = None) -> None:
        self._bar = tqdm(total=total, desc="train", unit="step", disable=disable, file=file)
        self.closed = False

    def __call__(self, progress: TrainProgress) -> None:
        if self.closed:
            return
        self._bar.n = progress.step
        self._bar.set_postfix(loss=f"{progress.loss:.4g}", img_s=f"{progress.images_per_s:.0f}",
                              refresh=False)
        self._bar.refresh()
        if progress.step >= progress.total:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self._bar.close()
            self.closed = True


def run(args: argparse.Namespace) -> int:
    # Imported here so `drl --help` and the service commands stay fast without torch.
    from drl_engine.pipeline import run_experiment
    from drl_engine.spec import load_spec, parse_spec

    from .overrides import apply_overrides

    spec = load_spec(args.spec)
    overrides = spec.model_dump()
    if args.data_dir:
        overrides["dataset"]["data_dir"] = str(args.data_dir)
    if args.device:
        overrides["train"]["device"] = args.device
    if args.iterations is not None:
        overrides["train"]["iterations"] = args.iterations
    spec = parse_spec(apply_overrides(overrides, args.overrides))

    bar = TrainingBar(spec.train.total_steps, disable=os.environ.get("DRL_NO_PROGRESS") == "1")
    try:
        summary = run_experiment(spec, args.out, on_train_progress=bar,
                                 log=lambda msg: tqdm.write(msg))
    finally:
        bar.close()
    print(f"wrote {summary.out_dir}/metrics.json, probes.csv, probes.png, samples.png, embeddings/")
    return 0
