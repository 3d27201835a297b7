"""`drl weighting-study`: does a loss weighting make DRL's code learn class structure at the
budgets users can afford? (issue 15; docs/WEIGHTING.md)."""

from .study import run_weighting_study

__all__ = ["run_weighting_study"]
