"""The arguments every study command (`drl reproduce`, `drl vdm-study`) takes."""

from __future__ import annotations

from pathlib import Path

# 'tiny' is accepted for the tests but not advertised: its numbers mean nothing.
BUDGET_CHOICES = ("small", "full", "paper", "tiny")


def add_study_arguments(p, small_help: str) -> None:
    """--budget (small | full | paper), --out (default docs/), --data-dir, --device."""
    p.add_argument("--budget", choices=BUDGET_CHOICES, default="small",
                   metavar="{small,full,paper}",
                   help=f"small: {small_help}; full: the committed report, about an hour on "
                        "one CPU core; paper: the paper's scale, for a GPU (default: small)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="report folder (default: docs/)")
    p.add_argument("--data-dir", type=str, help="dataset folder (default: $DRL_DATA_DIR, then ./data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
