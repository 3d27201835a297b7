"""The DRL training objective: denoising score matching with a code, plus the code's penalty.

For x_0 from the data, t from `sample_t`, eps ~ N(0, I) and x_t = mean(t) x_0 + std(t) eps
(the SDE's perturbation kernel p_0t), the target is the kernel's score

    grad_{x_t} log p_0t(x_t | x_0) = -eps / std(t),

and with lambda(t) = std(t)^2 the per-sample loss is

    || std(t) * s_theta(x_t, t, z) + eps ||^2        (summed over pixels)

where z = E_phi(x_0) (or E_phi(x_0, t) for a time-conditioned encoder). With
`objective.parameterization: edm` the per-sample loss is instead EDM's

    lambda(sigma) || D(x_t / a, sigma, z) - x_0 ||^2,   lambda = (sigma^2 + sd^2) / (sigma sd)^2

(edm.py; sigma = std(t) / a(t)), i.e. (1 + sigma^2 / sd^2) times the loss above. DRL adds
gamma * ||z||_1; VDRL draws z from N(mu, sigma^2) by reparameterisation and adds
beta * KL(N(mu, sigma^2) || N(0, I)). Plain DSM has a floor (the variance of the kernel's
score around the marginal score); only information about x_0 carried by z lowers it, which
is what makes the encoder learn.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .edm import edm_loss_weight
from .sde import SDE, _bcast
from .spec import ObjectiveSpec, SpecError


class CodeConditionedScoreModel(Protocol):
    """What `drl_loss` needs from a model (drl_engine.model.DRLModel provides it)."""

    sde: SDE
    variational: bool
    time_conditioned: bool
    parameterization: str        # 'score' | 'edm'
    sigma_data: Tensor           # edm only

    def encoder_output(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def score(self, xt: Tensor, t: Tensor, z: Tensor) -> Tensor: ...

    def denoise(self, xt: Tensor, t: Tensor, z: Tensor) -> Tensor: ...


def sample_t(n: int, spec: ObjectiveSpec, sde: SDE, generator: torch.Generator | None,
             device: torch.device | str | None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw n diffusion times, shape (n,), according to `spec.t_sampling`.

    uniform:        t ~ U(t_eps, 1)
    sigma_uniform:  std ~ U(std(t_eps), std(1)), t = std^{-1}(std)   ("high-noise focus";
                    for VE std = sigma, i.e. sigma ~ U(sigma_min, sigma_max) up to t_eps)
    fixed:          t = t_fixed for every sample
    window:         t ~ U(t_lo, t_hi)
    log_normal:     ln sigma ~ N(p_mean, p_std^2) with EDM's sigma = std / a (sde.edm_sigma),
                    t = edm_sigma^{-1}(sigma) clamped to [t_eps, 1] (EDM's training
                    distribution; the clamp puts the tails' mass on the SDE's ends)
    """
    if spec.t_sampling == "fixed":
        return torch.full((n,), float(spec.t_fixed), device=device, dtype=dtype)
    if spec.t_sampling == "log_normal":
        normal = torch.randn(n, generator=generator, device=device, dtype=dtype)
        sigma = torch.exp(spec.p_mean + spec.p_std * normal)
        return sde.t_from_edm_sigma(sigma).clamp(spec.t_eps, 1.0)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    if spec.t_sampling == "uniform":
        return spec.t_eps + (1.0 - spec.t_eps) * u
    if spec.t_sampling == "window":
        return spec.t_lo + (spec.t_hi - spec.t_lo) * u
    if spec.t_sampling == "sigma_uniform":
        ends = torch.tensor([spec.t_eps, 1.0], device=device, dtype=dtype)
        std_lo, std_hi = sde.marginal_std(ends)
        std = std_lo + (std_hi - std_lo) * u
        # Rounding in the inverse can step a hair outside [t_eps, 1] at the ends.
        return sde.t_from_std(std).clamp(spec.t_eps, 1.0)
    raise SpecError(f"objective.t_sampling: expected 'uniform', 'sigma_uniform', 'fixed', "
                    f"'window' or 'log_normal', got {spec.t_sampling!r}")


def reparameterize(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * n, n ~ N(0, I): a sample of N(mu, sigma^2) differentiable in mu, logvar."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise


def l1_penalty(z: Tensor) -> Tensor:
    """||z||_1 per sample, shape (B,)."""
    return z.abs().flatten(1).sum(1)


def kl_to_standard_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, shape (B,):

    1/2 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def dsm_loss_per_sample(score: Tensor, eps: Tensor, std: Tensor) -> Tensor:
    """|| std(t) * s + eps ||^2 summed over pixels, shape (B,); std has shape (B,).

    This is lambda(t) * || s - (-eps / std(t)) ||^2 with lambda(t) = std(t)^2, written so
    that nothing is divided by a small std.
    """
    return (_bcast(std, score) * score + eps).pow(2).flatten(1).sum(1)


def edm_loss_per_sample(denoised: Tensor, x0: Tensor, sigma: Tensor, sigma_data: float | Tensor
                        ) -> Tensor:
    """lambda(sigma) || D - x_0 ||^2 summed over pixels, shape (B,) (edm.py's weight)."""
    return edm_loss_weight(sigma, sigma_data) * (denoised - x0).pow(2).flatten(1).sum(1)


def drl_loss(model: CodeConditionedScoreModel, x0: Tensor, spec: ObjectiveSpec,
             generator: torch.Generator | None = None, *, freeze_encoder: bool = False
             ) -> tuple[Tensor, dict[str, float]]:
    """The batch loss mean_b [ denoising_b + weight * penalty_b ] and its parts as floats.

    x0 is already in the model's data range. The denoising term is `dsm_loss_per_sample`
    (parameterization 'score') or `edm_loss_per_sample` ('edm'). DRL: z = mu, penalty
    ||z||_1, weight `spec.l1_weight`. VDRL: z ~ N(mu, sigma^2) (reparameterised), penalty
    KL(N(mu, sigma^2) || N(0, I)), weight `spec.kl_weight`. The encoder gets the same t as
    the score network (a static encoder ignores it). Every random draw (t, eps, z) uses
    `generator`, which must live on x0's device. `freeze_encoder` computes the code without
    gradients (the decoder fine-tune phase): the penalty is then constant and left out.

    Returns (loss, {'dsm' or 'edm': batch mean of the denoising term, 'penalty': batch mean
    of the unweighted penalty, 'loss': loss}), so that loss = denoising + weight * penalty.
    """
    sde = model.sde
    t = sample_t(x0.shape[0], spec, sde, generator, x0.device, x0.dtype)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + _bcast(std, x0) * eps

    with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_encoder):
        code_mean, code_logvar = model.encoder_output(x0, t)
    if model.variational:
        if code_logvar is None:
            raise ValueError("drl_loss: a variational model's encoder_output must return "
                             "(mean, logvar), got logvar None")
        z = reparameterize(code_mean, code_logvar, generator)
        penalty = kl_to_standard_normal(code_mean, code_logvar)
        weight = spec.kl_weight
    else:
        z = code_mean
        penalty = l1_penalty(z)
        weight = spec.l1_weight
    if freeze_encoder:
        weight = 0.0

    if model.parameterization == "edm":
        name = "edm"
        denoising = edm_loss_per_sample(model.denoise(xt, t, z), x0, sde.edm_sigma(t),
                                        model.sigma_data)
    else:
        name = "dsm"
        denoising = dsm_loss_per_sample(model.score(xt, t, z), eps, std)
    loss = (denoising + weight * penalty).mean()
    parts = {
        name: denoising.detach().mean().item(),
        "penalty": penalty.detach().mean().item(),
        "loss": loss.detach().item(),
    }
    return loss, parts
