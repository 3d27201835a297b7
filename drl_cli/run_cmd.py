"""`drl run SPEC --out DIR`: train, encode, probe and sample on this machine.

Bad input stops the run before any work with one line and exit 2 (errors.py): an invalid
spec, an --out that is a file or cannot be written, a device this machine lacks, and an --out
whose checkpoints belong to a different spec (rerun elsewhere, or with --force to start over).

Ctrl-C or SIGTERM stops training at its next step with a checkpoint (interrupts.py), says
"interrupted at step N; checkpoint saved; rerun the same command to resume" and exits 130; the
rerun says "resuming from step N" and its bar starts at N. A second Ctrl-C quits at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, CLIError

if TYPE_CHECKING:
    from drl_engine.spec import ExperimentSpec
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
    p.add_argument("--force", action="store_true",
                   help="start over in --out: discard its checkpoints/ and embeddings/ (a rerun "
                        "without it resumes from the last checkpoint, which must be of the "
                        "same spec)")
    p.set_defaults(func=run)


class TrainingBar:
    """The training progress bar, a `progress` callback of `train`.

    Drawn at training's first report, or when it resumes (`resumed`, starting at the resumed
    step, so that its rate and time left count only this run's steps), not before: an error
    before training (a dataset, a checkpoint of another run) is then the only line on stderr.
    Closed as soon as training reports its last step, so that its elapsed time and s/step are
    the training's own, not those of the encode, probe and sample stages after it.
    """

    def __init__(self, total: int, disable: bool = False, file: TextIO | None = None) -> None:
        self._options = {"total": total, "desc": "train", "unit": "step", "disable": disable,
                         "file": file}
        self._bar: tqdm | None = None
        self.closed = False

    def resumed(self, step: int) -> None:
        if self._bar is None and not self.closed:
            self._bar = tqdm(initial=step, **self._options)

    def __call__(self, progress: TrainProgress) -> None:
        if self.closed:
            return
        if self._bar is None:
            self._bar = tqdm(**self._options)
        self._bar.n = progress.step
        self._bar.set_postfix(loss=f"{progress.loss:.4g}", img_s=f"{progress.images_per_s:.0f}",
                              refresh=False)
        self._bar.refresh()
        if progress.step >= progress.total:
            self.close()

    def close(self, step: int | None = None) -> None:
        """Close the bar, showing `step` if given (a run stopped between two reports)."""
        if not self.closed:
            if self._bar is not None:
                if step is not None:
                    self._bar.n = step
                    self._bar.refresh()
                self._bar.close()
            self.closed = True


def run(args: argparse.Namespace) -> int:
    # Imported here so `drl --help` and the service commands stay fast without torch.
    from drl_engine.checkpoint import ResumeError
    from drl_engine.pipeline import RunInterrupted, run_experiment
    from drl_engine.provenance import code_commit

    code_commit()   # the commit of the code this run imported (metrics.json's provenance)

    from .interrupts import StopRequest
    from .out_dir import check_output_folder
    from .overrides import spec_with_overrides

    spec = spec_with_overrides(args.spec, args.overrides, data_dir=args.data_dir,
                               device=args.device, iterations=args.iterations)
    check_output_folder(args.out)
    device = usable_device(spec, args)
    warn_if_oversubscribed(device)

    bar = TrainingBar(spec.train.total_steps, disable=os.environ.get("DRL_NO_PROGRESS") == "1")
    try:
        with StopRequest() as stop_requested:
            summary = run_experiment(spec, args.out, on_train_progress=bar,
                                     on_train_resume=bar.resumed, should_stop=stop_requested,
                                     log=lambda msg: tqdm.write(msg), fresh=args.force)
    except RunInterrupted as interrupted:
        bar.close(interrupted.step)
        print(f"drl: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ResumeError as err:
        raise CLIError(f"--out {args.out} holds checkpoints of a different run: {err.reason}; "
                       "choose another --out, or add --force to discard them and start over "
                       "in this folder") from None
    except FloatingPointError as err:   # a diverged loss: the run failed, the input was valid
        raise CLIError(str(err), EXIT_FAILED) from None
    finally:
        bar.close()
    print(f"wrote {summary.out_dir}/metrics.json, probes.csv, probes.png, samples.png, embeddings/")
    return 0


def usable_device(spec: ExperimentSpec, args: argparse.Namespace):
    """The torch device the run will use; CLIError (naming --device or the spec's
    train.device) when this machine has no such device."""
    from drl_engine.device import DeviceError, resolve_device

    try:
        return resolve_device(spec.train.device)
    except DeviceError:
        where = f"--device {args.device}" if args.device else f"{args.spec}: train.device {spec.train.device!r}"
        raise CLIError(f"{where}: CUDA is not available on this machine (this torch build or "
                       "driver sees no GPU); use cpu or auto") from None


def warn_if_oversubscribed(device) -> None:
    """One line on stderr when torch's CPU threads would compete with other work for the
    cores (cpu_load.py says why that is slow); nothing on a GPU."""
    if device.type != "cpu":
        return
    import torch

    from .cpu_load import load_average, oversubscription_warning, usable_cores

    warning = oversubscription_warning(load_average(), usable_cores(), torch.get_num_threads())
    if warning:
        print(f"drl: warning: {warning}", file=sys.stderr)
