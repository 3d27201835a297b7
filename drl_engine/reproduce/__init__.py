"""`drl reproduce`: the paper's claims measured on this engine, written to REPRODUCTION.md.

One module per study section (accuracy_vs_t: a, single_t: b, latent_2d: c, t_init: e), the
budgets as data (budgets.py), the shared context (context.py), the Markdown (report.py) and
the driver (study.py).
"""

from .budgets import BUDGETS, PUBLIC_BUDGETS, Budget, get_budget
from .study import Reproduction, run_reproduction

__all__ = ["BUDGETS", "PUBLIC_BUDGETS", "Budget", "Reproduction", "get_budget", "run_reproduction"]
