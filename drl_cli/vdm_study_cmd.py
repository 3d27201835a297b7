"""`drl vdm-study [--budget small|full] [--out docs/]`: the VDM-VAE capacity study, VDM_VAE.md."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from .study_args import add_study_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("vdm-study", help="train vdm_vae and vdm at two widths, write VDM_VAE.md",
                       description="The VDM-VAE capacity study: vdm_vae against the unconditional "
                                   "vdm at equal steps, at two decoder widths on MNIST; test "
                                   "bits/dim with every term, FD-LeNet of prior samples, the KL. "
                                   "Writes DIR/VDM_VAE.md and its PNGs in DIR/vdm_vae/.")
    add_study_arguments(p, "about 10 minutes on 2 CPU cores")
    p.add_argument("--runs-dir", type=Path,
                   help="where the runs' checkpoints and metrics go (default: runs/vdm-study-BUDGET)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `drl --help` stays fast without torch.
    from tqdm import tqdm

    from drl_engine.vdm_study import run_vdm_study

    # The thread count is part of the exact command: on a busy CPU it decides the runtime.
    threads = os.environ.get("OMP_NUM_THREADS")
    command = " ".join(([f"OMP_NUM_THREADS={threads}"] if threads else [])
                       + ["drl", "vdm-study", "--budget", args.budget, "--out", shlex.quote(str(args.out))]
                       + (["--device", args.device] if args.device != "auto" else []))
    result = run_vdm_study(args.budget, args.out, data_dir=args.data_dir, device=args.device,
                           runs_dir=args.runs_dir, command=command, log=lambda m: tqdm.write(m))
    print(f"wrote {result.report} in {result.seconds / 60:.1f} minutes")
    return 0
