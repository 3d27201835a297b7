"""How many steps a fixed-step sampler takes, and score-SDE's even time grid.

`SampleSpec.steps` = N covers the full [eps, 1]; starting at t_init takes
n = round(N * t_init) steps (paper appendix I: t_init = 0.7 costs 70% of the steps). The even
grid is t_0 = t_init > t_1 > ... > t_{n-1} = eps; step i moves from t_i to t_{i+1}, and the last
one from t_{n-1} = eps to t_n = 0, where the score is never evaluated (it is singular there).
"""

from __future__ import annotations

import math

import torch

from ..spec import SampleSpec


def check_t_init(spec: SampleSpec) -> None:
    """Sampling runs from t_init down to eps: t_init must lie above eps."""
    if spec.t_init <= spec.eps:
        raise ValueError(f"sample.t_init ({spec.t_init}) must exceed sample.eps ({spec.eps}), "
                         "where sampling ends")


def num_steps(spec: SampleSpec) -> int:
    """n = round(steps * t_init), at least 1 (a half rounds up, not to even)."""
    return max(1, math.floor(spec.steps * spec.t_init + 0.5))


def time_grid(spec: SampleSpec) -> torch.Tensor:
    """The n float32 times at which the score is evaluated: evenly spaced from t_init to eps."""
    check_t_init(spec)
    return torch.linspace(spec.t_init, spec.eps, num_steps(spec), dtype=torch.float64).float()
