"""EDM's variables and time steps (Karras et al. 2022), for the samplers written in them.

Every SDE here has x_t = a(t) x_0 + std(t) eps. Dividing by a(t) gives EDM's variable

    x^ = x_t / a(t) = x_0 + sigma eps,   sigma(t) = std(t) / a(t)          (`sde.edm_sigma`)

i.e. EDM's scaling s(t) = a(t) and noise level sigma(t): VE has a = 1 and its own sigma(t); VP
has a = exp(lmc(t)) and sigma = sqrt(exp(-2 lmc) - 1). In x^ either SDE's probability-flow ODE
is EDM's
    dx^/dsigma = (x^ - D(x^; sigma)) / sigma,   D = E[x_0 | x^]   (the denoised estimate)
so a solver written for EDM's sigma runs on both SDEs: each step divides x_t by a(t_i), moves
x^ from sigma_i to sigma_{i+1} and multiplies by a(t_{i+1}); between steps x is x_t as always.

Time steps (EDM eq. 5, rho = 7) for n steps from sigma_max = sigma(t_init) to sigma_min =
sigma(eps):
    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 .. n - 1, then sigma_n = 0;
each is mapped to t_i = sde.t_from_edm_sigma(sigma_i) in float32 (the time the network sees),
t_0 = t_init and t_{n-1} = eps exactly, and sigma_i, a_i are recomputed from that t_i so that
the solver and the network agree on them. n = round(steps t_init), as for every fixed-step
sampler (grid.py).
"""

from __future__ import annotations

import torch

from ..sde import SDE
from ..spec import SampleSpec
from .base import Sampler
from .grid import check_t_init, num_steps

RHO = 7.0   # EDM's choice: steps crowd towards low noise, where detail is decided


def karras_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """EDM's n noise levels from sigma_max down to sigma_min (float64), evenly spaced in
    sigma^(1/rho)."""
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    hi, lo = sigma_max ** (1.0 / RHO), sigma_min ** (1.0 / RHO)
    return (hi + ramp * (lo - hi)) ** RHO


class EDMScheduleSampler(Sampler):
    """A sampler stepping EDM's x^ over EDM's sigmas: `sigmas[i]` and `scales[i]` (a(t_i))."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t = torch.tensor(self.times, dtype=torch.float64)
        self.sigmas: list[float] = self.sde.edm_sigma(t).tolist()
        self.scales: list[float] = self.sde.mean_coeff(t).tolist()

    @classmethod
    def time_steps(cls, sde: SDE, spec: SampleSpec) -> list[float]:
        check_t_init(spec)
        n = num_steps(spec)
        sigma_max, sigma_min = sde.edm_sigma(
            torch.tensor([spec.t_init, spec.eps], dtype=torch.float64)).tolist()
        t = sde.t_from_edm_sigma(karras_sigmas(sigma_max, sigma_min, n)).float()
        # The round trip through sigma is not exact: pin the ends where every sampler's are.
        t[0] = spec.t_init
        if n > 1:
            t[-1] = spec.eps
        return t.tolist()

    def denoised(self, x_hat: torch.Tensor, i: int) -> torch.Tensor:
        """D(x^; sigma_i) = E[x_0 | x_t = a_i x^] at t_i: one network evaluation."""
        return self.score.denoised(self.scales[i] * x_hat, self.t_batch(x_hat, self.times[i]))
