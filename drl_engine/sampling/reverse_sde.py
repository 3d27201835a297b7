"""The pieces of the reverse-time SDE that several samplers share (Song et al. 2021).

For the forward SDE dx = f(x, t) dt + g(t) dw, the reverse SDE is
    dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar            (time running back)
and the probability-flow ODE, with the same marginals, is
    dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t).
"""

from __future__ import annotations

import torch

from ..sde import SDE, _bcast
from .score import CountedScore


def reverse_diffusion_mean(sde: SDE, score: CountedScore, x: torch.Tensor, t: torch.Tensor,
                           dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor: (f, G) = discretize(x, t, dt); x_mean = x - f + G^2 score.

    Returns x_mean and G (shape (B,)); the caller adds G z unless this is the last step.
    """
    f, g = sde.discretize(x, t, dt)
    return x - f + _bcast(g ** 2, x) * score(x, t), g


def probability_flow_drift(sde: SDE, score: CountedScore, x: torch.Tensor,
                           t: torch.Tensor) -> torch.Tensor:
    """dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)."""
    f, g = sde.sde(x, t)
    return f - 0.5 * _bcast(g ** 2, x) * score(x, t)
