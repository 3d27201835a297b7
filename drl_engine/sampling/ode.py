"""The probability-flow ODE (Song et al. 2021) with Heun's method on the even grid:

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t)
    d1 = v(x, t_i);  x~ = x - d1 dt;  x' = x - (d1 + v(x~, t_{i+1})) dt / 2    (dt = t_i - t_{i+1})

(explicit trapezoid, second order). The last step, eps -> 0, is score-SDE's denoising step (the
reverse-diffusion predictor's mean), as in its ODE sampler: Heun's second evaluation would land
on t = 0, where the score is singular. NFE = 2 (n - 1) + 1 for n steps; no noise after the start.
"""

from __future__ import annotations

import torch

from ..spec import SampleSpec
from .base import Sampler
from .reverse_sde import probability_flow_drift, reverse_diffusion_mean


class ProbabilityFlowODE(Sampler):
    name = "ode"
    stochastic = False

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int:
        return 2 * (n - 1) + 1

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        t_now, t_next = self.times[i], self.next_time(i)
        dt = t_now - t_next
        t = self.t_batch(x, t_now)
        if self.is_last(i):
            return reverse_diffusion_mean(self.sde, self.score, x, t, dt)[0]
        d1 = probability_flow_drift(self.sde, self.score, x, t)
        x_euler = x - d1 * dt
        d2 = probability_flow_drift(self.sde, self.score, x_euler, torch.full_like(t, t_next))
        return x - 0.5 * (d1 + d2) * dt
