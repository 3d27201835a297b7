"""EDM's deterministic sampler (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", algorithm 1; algorithm 2 with S_churn = 0): Heun's
second-order method on the probability-flow ODE in EDM's variables, over EDM's rho = 7 noise
levels (edm_schedule.py has both, and how VE and VP map onto them):

    d_i = (x^_i - D(x^_i; sigma_i)) / sigma_i
    x~  = x^_i + (sigma_{i+1} - sigma_i) d_i                                       (Euler)
    d~  = (x~ - D(x~; sigma_{i+1})) / sigma_{i+1}
    x^_{i+1} = x^_i + (sigma_{i+1} - sigma_i) (d_i + d~) / 2                        (trapezoid)

The last step, sigma_{n-1} -> sigma_n = 0, is Euler's alone, and lands exactly on
D(x^; sigma_{n-1}): the noise-free estimate of x_0. NFE = 2 n - 1 for n steps (EDM's 35 for 18).
No noise after the start.
"""

from __future__ import annotations

import torch

from ..spec import SampleSpec
from .edm_schedule import EDMScheduleSampler


class EDMHeun(EDMScheduleSampler):
    name = "heun"
    stochastic = False

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int:
        return 2 * n - 1

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        sigma, x_hat = self.sigmas[i], x / self.scales[i]
        denoised = self.denoised(x_hat, i)
        if self.is_last(i):
            return denoised   # x^ + (0 - sigma) (x^ - D) / sigma, without the cancellation
        sigma_next = self.sigmas[i + 1]
        slope = (x_hat - denoised) / sigma
        x_euler = x_hat + (sigma_next - sigma) * slope
        slope_next = (x_euler - self.denoised(x_euler, i + 1)) / sigma_next
        return self.scales[i + 1] * (x_hat + (sigma_next - sigma) * 0.5 * (slope + slope_next))
