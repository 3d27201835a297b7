"""`drl weighting-study [--budget small|full] [--out docs/]`: loss weightings against the AE
and the untrained control, WEIGHTING.md."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from .errors import CLIError
from .study_args import add_study_arguments


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise CLIError(f"--shard: expected I/N, e.g. 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise CLIError(f"--shard: expected I/N with 0 <= I < N, got {text!r}")
    return index, count


def add_parser(sub) -> None:
    p = sub.add_parser("weighting-study",
                       help="paper objective vs EDM weighting vs a t window vs the AE, 3 seeds, "
                            "write WEIGHTING.md",
                       description="Does a loss weighting make DRL's code learn class "
                                   "structure? Trains the paper's objective, EDM's weighting, a "
                                   "t window (with decoder fine-tune) and the AE at equal steps "
                                   "on digits, MNIST and Fashion-MNIST subsets, 3 seeds; probes "
                                   "each beside its untrained control (best t on validation); "
                                   "writes DIR/WEIGHTING.md and its PNGs in DIR/weighting/.")
    add_study_arguments(p, "about 20 minutes on one CPU core")
    p.add_argument("--runs-dir", type=Path,
                   help="where the runs go (default: runs/weighting-study-BUDGET); cells that "
                        "already ran there are read back, not trained again")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run every N-th cell from the I-th (N processes share the grid; the "
                        "last to finish writes the report); default 0/1")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the cells that have run, listing "
                        "the others as not run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard)
    from tqdm import tqdm

    from drl_engine.weighting import run_weighting_study

    threads = os.environ.get("OMP_NUM_THREADS")
    command = " ".join(([f"OMP_NUM_THREADS={threads}"] if threads else [])
                       + ["drl", "weighting-study", "--budget", args.budget, "--out",
                          shlex.quote(str(args.out))]
                       + (["--device", args.device] if args.device != "auto" else []))
    result = run_weighting_study(args.budget, args.out, data_dir=args.data_dir,
                                 device=args.device, runs_dir=args.runs_dir, command=command,
                                 shard=shard, report_only=args.report_only,
                                 log=lambda m: tqdm.write(m))
    if result.report is not None:
        print(f"wrote {result.report} in {result.seconds / 60:.1f} minutes")
    return 0
