"""The forward SDEs of score-based diffusion (Song et al. 2021), as small mathematical objects.

Each class gives the marginal of the perturbation kernel p_0t(x_t | x_0), the forward SDE's
drift and diffusion, the prior at t = 1, a one-step discretisation for reverse-diffusion
sampling, and the map from the network's raw output to a score. Every method takes `t` as a
tensor of shape (B,) and broadcasts over images of shape (B, C, H, W).
"""

from __future__ import annotations

import math

import torch

from .spec import SDESpec


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (B,) tensor to broadcast against x of shape (B, ...)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


class VESDE:
    """Variance exploding: dx = g(t) dw.

    sigma(t) = sigma_min * (sigma_max / sigma_min) ** t
    x_t = x_0 + sigma(t) * eps                      (mean x_0, std sigma(t))
    g(t) = sigma(t) * sqrt(2 ln(sigma_max / sigma_min))
    prior N(0, sigma_max^2 I). Data is scaled to [0, 1].
    """

    data_range = (0.0, 1.0)

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma(t)

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of p_0t(x_t | x_0); std has shape (B,)."""
        return x0, self.sigma(t)

    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """a(t) in mean = a(t) x_0: 1 for VE."""
        return torch.ones_like(t)

    def edm_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """EDM's noise level std(t) / a(t): sigma(t) itself for VE."""
        return self.sigma(t)

    def t_from_edm_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.t_from_std(sigma)

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) = 0 and diffusion g(t) of the forward SDE."""
        g = self.sigma(t) * math.sqrt(2 * self._log_ratio)
        return torch.zeros_like(x), g

    def prior_std(self, t: torch.Tensor | float = 1.0) -> torch.Tensor:
        return self.sigma(torch.as_tensor(t, dtype=torch.float32))

    def prior_sampling(self, shape, generator: torch.Generator | None = None,
                       device=None) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device) * self.sigma_max

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        n = z[0].numel()
        return (-n / 2 * math.log(2 * math.pi * self.sigma_max ** 2)
                - z.flatten(1).pow(2).sum(1) / (2 * self.sigma_max ** 2))

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse-diffusion step from t to t - dt (SMLD ancestral form).

        f = 0, G = sqrt(sigma(t)^2 - sigma(t - dt)^2), so that the steps' variances add up
        exactly to sigma(t)^2 rather than to its Euler approximation.
        """
        sigma = self.sigma(t)
        prev = torch.where(t - dt > 0, self.sigma((t - dt).clamp(min=0)), torch.zeros_like(t))
        return torch.zeros_like(x), (sigma ** 2 - prev ** 2).clamp(min=0).sqrt()

    def t_from_std(self, std: torch.Tensor) -> torch.Tensor:
        """Inverse of marginal_std: t = ln(std / sigma_min) / ln(sigma_max / sigma_min)."""
        return torch.log(std / self.sigma_min) / self._log_ratio

    def noise_condition(self, t: torch.Tensor) -> torch.Tensor:
        """What the network's time embedding sees: log sigma(t) (Gaussian-Fourier embedded)."""
        return torch.log(self.sigma(t))

    def score_from_output(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """score-SDE's scale_by_sigma: the network's output divided by sigma(t)."""
        return out / _bcast(self.sigma(t), out)


class VPSDE:
    """Variance preserving: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw.

    beta(t) = beta_min + t (beta_max - beta_min)
    log_mean_coeff(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2
    x_t = exp(lmc) x_0 + sqrt(1 - exp(2 lmc)) eps
    prior N(0, I). Data is scaled to [-1, 1].
    """

    data_range = (-1.0, 1.0)

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of p_0t(x_t | x_0); std has shape (B,)."""
        mean = _bcast(self.mean_coeff(t), x0) * x0
        return mean, self.marginal_std(t)

    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """a(t) = exp(log_mean_coeff(t)) in mean = a(t) x_0."""
        return torch.exp(self.log_mean_coeff(t))

    def edm_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """EDM's noise level of x_t / a(t) = x_0 + (std / a) eps:

            sigma_edm(t) = std(t) / a(t) = sqrt(exp(-2 lmc) - 1)
        """
        return torch.sqrt(torch.expm1(-2.0 * self.log_mean_coeff(t)))

    def t_from_edm_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of edm_sigma: lmc = -ln(1 + sigma^2) / 2, then the quadratic of t_from_std."""
        return self._t_from_log_mean_coeff(-0.5 * torch.log1p(sigma ** 2))

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta(t)
        return -0.5 * _bcast(beta, x) * x, torch.sqrt(beta)

    def prior_std(self, t: torch.Tensor | float = 1.0) -> torch.Tensor:
        return torch.ones(()) if not torch.is_tensor(t) else torch.ones_like(t)

    def prior_sampling(self, shape, generator: torch.Generator | None = None,
                       device=None) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        n = z[0].numel()
        return -n / 2 * math.log(2 * math.pi) - z.flatten(1).pow(2).sum(1) / 2

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM ancestral step: with beta_i = beta(t) dt, f = (sqrt(1 - beta_i) - 1) x, G = sqrt(beta_i)."""
        beta_i = (self.beta(t) * dt).clamp(max=0.999)
        f = (torch.sqrt(1.0 - _bcast(beta_i, x)) - 1.0) * x
        return f, torch.sqrt(beta_i)

    def t_from_std(self, std: torch.Tensor) -> torch.Tensor:
        """Inverse of marginal_std: solve a t^2 + b t + lmc = 0 with lmc = ln(1 - std^2) / 2."""
        return self._t_from_log_mean_coeff(0.5 * torch.log1p(-std ** 2))

    def _t_from_log_mean_coeff(self, lmc: torch.Tensor) -> torch.Tensor:
        """The t >= 0 with log_mean_coeff(t) = lmc: a t^2 + b t + lmc = 0."""
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        return (-b + torch.sqrt(b * b - 4 * a * lmc)) / (2 * a)

    def noise_condition(self, t: torch.Tensor) -> torch.Tensor:
        """What the network's time embedding sees: 999 t (DDPM's sinusoidal embedding scale)."""
        return 999.0 * t

    def score_from_output(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network predicts -std(t) * score (i.e. eps); score = -out / std(t)."""
        return -out / _bcast(self.marginal_std(t), out)


SDE = VESDE | VPSDE


def build_sde(spec: SDESpec) -> SDE:
    if spec.kind == "ve":
        return VESDE(spec.sigma_min, spec.sigma_max)
    return VPSDE(spec.beta_min, spec.beta_max)
