"""`drl reproduce [--budget small|full] [--out docs/]`: run the study, write REPRODUCTION.md."""

from __future__ import annotations

import argparse

from .study_args import add_study_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run the reproduction study and write REPRODUCTION.md",
                       description="Train DRL and the baselines on MNIST at a fixed budget, "
                                   "probe and sample them, and write REPRODUCTION.md with its "
                                   "PNGs (in DIR/reproduction/). On a CPU shared with other "
                                   "work, OMP_NUM_THREADS=1 avoids thread oversubscription, "
                                   "which can slow training several-fold.")
    add_study_arguments(p, "under 20 minutes on 2 CPU cores")
    p.add_argument("--sections", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="run only these sections, e.g. a,c (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `drl --help` stays fast without torch.
    from drl_engine.reproduce import run_reproduction

    try:
        result = run_reproduction(args.budget, args.out, data_dir=args.data_dir,
                                  device=args.device, sections=args.sections)
    except ValueError as err:
        if str(err).startswith("--"):
            from .errors import CLIError
            raise CLIError(str(err)) from None
        raise
    print(f"wrote {result.report} in {result.seconds / 60:.1f} minutes")
    return 0
