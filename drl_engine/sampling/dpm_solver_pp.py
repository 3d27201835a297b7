"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", algorithm 2): the second-order multistep solver of the
probability-flow ODE in data prediction, with x_0 predicted by D (Tweedie, score.py).

With alpha_t = a(t), sigma_t = std(t), lambda_t = ln(alpha_t / sigma_t) = -ln sigma^(t) (EDM's
sigma, edm_schedule.py) and h_i = lambda_{t_{i+1}} - lambda_{t_i} = ln(sigma^_i / sigma^_{i+1}):

    x_{t_{i+1}} = (sigma_{t_{i+1}} / sigma_{t_i}) x_{t_i} - alpha_{t_{i+1}} (e^{-h_i} - 1) D'_i
    D'_0 = D_0                                                  (the first step: DDIM, first order)
    D'_i = (1 + 1 / (2 r_i)) D_i - 1 / (2 r_i) D_{i-1},   r_i = h_{i-1} / h_i      (i >= 1)

with D_i = D(x_{t_i}, t_i). Divided by alpha_{t_{i+1}} this is, in EDM's x^ = x / alpha,
    x^_{i+1} = (sigma^_{i+1} / sigma^_i) x^_i + (1 - e^{-h_i}) D'_i,
    e^{-h_i} = sigma^_{i+1} / sigma^_i.
D_{i-1} and h_{i-1} are the state this sampler keeps between steps. The last step goes to
sigma = 0, where h is infinite: it is first order, x_0 = D_{n-1} (diffusers' lower_order_final,
k-diffusion's last step). Time steps: EDM's rho = 7 noise levels (k-diffusion's "DPM++ 2M
Karras"). NFE = n for n steps; no noise after the start.
"""

from __future__ import annotations

import math

import torch

from ..spec import SampleSpec
from .edm_schedule import EDMScheduleSampler


class DPMSolverPlusPlus2M(EDMScheduleSampler):
    name = "dpm_solver_pp"
    stochastic = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.previous_denoised: torch.Tensor | None = None   # D_{i-1}
        self.previous_h: float | None = None                 # h_{i-1}

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int:
        return n

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        sigma, x_hat = self.sigmas[i], x / self.scales[i]
        denoised = self.denoised(x_hat, i)
        if self.is_last(i):
            return denoised
        sigma_next = self.sigmas[i + 1]
        h = math.log(sigma / sigma_next)
        if self.previous_denoised is None:
            combined = denoised
        else:
            half_over_r = 0.5 * h / self.previous_h   # 1 / (2 r_i)
            combined = (1.0 + half_over_r) * denoised - half_over_r * self.previous_denoised
        self.previous_denoised, self.previous_h = denoised, h
        x_hat_next = (sigma_next / sigma) * x_hat - math.expm1(-h) * combined
        return self.scales[i + 1] * x_hat_next
