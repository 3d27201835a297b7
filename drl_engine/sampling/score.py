"""The score function a sampler sees: the caller's, counted and checked.

Every call of the caller's `score_fn(x, t)` is one network evaluation (NFE); samplers reach
the network only through `CountedScore`, so its `calls` is the run's NFE whatever the method.
Samplers that work with the denoised estimate of x_0 (EDM's Heun, DPM-Solver++) get it from
the score by Tweedie's formula, for x_t = a(t) x_0 + std(t) eps:

    D(x_t, t) = E[x_0 | x_t] = (x_t + std(t)^2 score(x_t, t)) / a(t)

which is exact for both parameterizations: the `edm` model's score is (a D - x_t) / std^2
(model.py), so this gives its D back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sde import SDE, _bcast

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (x (B,C,H,W), t (B,)) -> score


class CountedScore:
    """Wraps the caller's score function: counts evaluations and checks what comes back."""

    def __init__(self, score_fn: ScoreFn, sde: SDE):
        self.score_fn = score_fn
        self.sde = sde
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        score = self.score_fn(x, t)
        if not isinstance(score, torch.Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"score_fn: expected a tensor of shape {tuple(x.shape)} (that of x), "
                             f"got {got}")
        # A network run under autocast may answer in half precision; the sampler stays float32.
        return score.float()

    def denoised(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tweedie: D = (x_t + std(t)^2 score) / a(t), the estimate of x_0. One evaluation."""
        std, a = self.sde.marginal_std(t), self.sde.mean_coeff(t)
        return (x + _bcast(std ** 2, x) * self(x, t)) / _bcast(a, x)
