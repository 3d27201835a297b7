"""EDM's preconditioned denoiser (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", table 1), as the `edm` parameterization of the score model.

For data x_0 with per-pixel std sigma_data (`sd`) seen at noise level sigma, x = x_0 + sigma n:

    D(x; sigma, z) = c_skip x + c_out F(c_in x, c_noise, z)
    c_skip  = sd^2 / (sigma^2 + sd^2)
    c_out   = sigma sd / sqrt(sigma^2 + sd^2)
    c_in    = 1 / sqrt(sigma^2 + sd^2)
    c_noise = ln(sigma) / 4

trained on lambda(sigma) ||D - x_0||^2 with lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,
which makes the network's own target F_target = (x_0 - c_skip x) / c_out unit-variance at
every sigma. In terms of the paper's objective: D - x_0 = sigma^2 (s + n / sigma) with the
score s = (D - x) / sigma^2, so EDM's loss is (1 + sigma^2 / sd^2) times the paper's
||sigma s + n||^2: it weights high noise levels, where a code helps with class, far more.

The SDEs map onto EDM's sigma through x_t = a(t) x_0 + std(t) eps (sde.py):
    x = x_t / a(t) = x_0 + sigma eps with sigma = std(t) / a(t)     (`sde.edm_sigma`)
VE has a = 1 and sigma = sigma(t); VP has a = exp(lmc(t)) and sigma = sqrt(exp(-2 lmc) - 1).
The score with respect to x_t is then grad_x log p(x) / a = (a D - x_t) / std^2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sde import _bcast


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise), each of sigma's shape (B,)."""
    total = sigma ** 2 + sigma_data ** 2
    c_skip = sigma_data ** 2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = total.rsqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, shape (B,)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_denoised(x: Tensor, sigma: Tensor, network_out: Tensor, sigma_data: float) -> Tensor:
    """D = c_skip x + c_out F for the network output F = F(c_in x, c_noise, z)."""
    c_skip, c_out, _, _ = edm_coefficients(sigma, sigma_data)
    return _bcast(c_skip, x) * x + _bcast(c_out, x) * network_out


def edm_score(x: Tensor, sigma: Tensor, network_out: Tensor, sigma_data: float) -> Tensor:
    """grad_x log p(x; sigma) = (D - x) / sigma^2, written without the cancellation of D - x
    at small sigma:  -x / (sigma^2 + sd^2) + sd F / (sigma sqrt(sigma^2 + sd^2))."""
    total = sigma ** 2 + sigma_data ** 2
    return (-x / _bcast(total, x)
            + _bcast(sigma_data / (sigma * total.sqrt()), x) * network_out)


def sigma_data_of_pixels(pixels: Tensor, data_range: tuple[float, float]) -> float:
    """The per-pixel std of uint8 images mapped linearly onto `data_range` (the default
    `objective.sigma_data`), exactly from the 256-bin histogram: no float copy of the data."""
    counts = torch.bincount(pixels.reshape(-1).to(torch.int64), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64, device=counts.device)
    n = counts.sum()
    mean = (counts * values).sum() / n
    var = (counts * (values - mean) ** 2).sum() / n
    lo, hi = data_range
    return float(var.sqrt() * (hi - lo) / 255.0)
