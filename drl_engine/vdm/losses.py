"""The VDM's variational bound, and the VAE's, term by term (Kingma et al. 2021, eqs. 11-17).

For data x in VDM's space (pixel k -> 2 (k + 1/2) / 256 - 1), alpha_t^2 = sigmoid(-gamma(t)),
sigma_t^2 = sigmoid(gamma(t)) and z_t = alpha_t x + sigma_t eps, the negative ELBO of one
image, in nats, is

    diffusion       0.5 E_{t ~ U(0,1), eps} [ gamma'(t) ||eps - eps_hat(z_t; gamma_t, z)||^2 ]
    prior           KL(q(z_1 | x) || N(0, I))
                      = 0.5 sum_i ( (1 - var_1) x_i^2 + var_1 - log var_1 - 1 ),  var_1 = sigmoid(gamma(1))
    reconstruction  -log p(x | z_0),  z_0 ~ q(z_0 | x); per pixel a distribution over the 256
                    values, p(k | z_0) proportional to exp(-(z_0 / alpha_0 - c_k)^2 / (2 exp(gamma(0)))),
                    c_k the bin centres; z_0 / alpha_0 = x + exp(gamma(0) / 2) eps_0
    kl (vdm_vae)    KL(q(z | x) || N(0, I)) = 0.5 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2),
                    with z ~ q(z | x) (reparameterised) conditioning eps_hat

and the total is their sum: a bound on -log p(x) at KL weight 1. bits/dim = nats / (D ln 2),
D = C H W. gamma'(t) comes from autograd through the schedule. t is drawn antithetically:
one u ~ U(0, 1) per batch and t_b = (u + b / B) mod 1, one t in each of B equal strata, which
lowers the variance of the batch estimate without biasing it.

The learned schedule's interior shape s(t) leaves the expected bound unchanged (only
gamma(0) and gamma(1) matter; schedule.py); VDM trains it to minimise the variance of the
estimate instead. `VarianceGradient` does that inside the one backward pass: the gradient
that reaches s(t_b) and s'(t_b) is multiplied by 2 (L_b - mean L), which turns the shape's
share of grad mean_b L_b into grad mean_b (L_b - mean L)^2 (L held constant), while every
other parameter, the learned endpoints gamma(0) and gamma(1) included, still gets the
gradient of the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..objective import kl_to_standard_normal, reparameterize
from ..spec import ExperimentSpec
from .pixels import bin_centres
from .schedule import FixedLinearSchedule, gamma_and_derivative

TERMS = ("diffusion", "prior", "reconstruction", "kl")


def antithetic_t(n: int, generator: torch.Generator | None, device: torch.device | str | None
                 ) -> Tensor:
    """t_b = (u + b / n) mod 1 for b = 0..n-1, u ~ U(0, 1): shape (n,), float32."""
    u = torch.rand((), generator=generator, device=device)
    return torch.remainder(u + torch.arange(n, device=device, dtype=torch.float32) / n, 1.0)


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) = (sqrt(sigmoid(-gamma)), sqrt(sigmoid(gamma))), so alpha^2 + sigma^2 = 1."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def _per_image(gamma: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) to broadcast over an image batch."""
    return gamma.reshape(-1, *([1] * (like.dim() - 1)))


def diffuse(x: Tensor, gamma: Tensor, eps: Tensor) -> Tensor:
    """z_t = alpha_t x + sigma_t eps for per-image gamma (B,)."""
    alpha, sigma = alpha_sigma(_per_image(gamma, x))
    return alpha * x + sigma * eps


def diffusion_loss(eps: Tensor, eps_hat: Tensor, dgamma: Tensor) -> Tensor:
    """0.5 gamma'(t) ||eps - eps_hat||^2 summed over pixels, (B,) nats."""
    return 0.5 * dgamma * (eps.float() - eps_hat.float()).pow(2).flatten(1).sum(1)


def prior_loss(x: Tensor, gamma_1: float | Tensor) -> Tensor:
    """KL(q(z_1 | x) || N(0, I)) = 0.5 sum ((1 - var_1) x^2 + var_1 - log var_1 - 1), (B,) nats."""
    gamma_1 = torch.as_tensor(gamma_1, dtype=torch.float32, device=x.device)
    var_1 = torch.sigmoid(gamma_1)
    per_pixel = (1.0 - var_1) * x.float().pow(2) + var_1 - torch.log(var_1) - 1.0
    return 0.5 * per_pixel.flatten(1).sum(1)


def reconstruction_log_probs(z0_rescaled: Tensor, gamma_0: float | Tensor) -> Tensor:
    """log p(k | z_0) for the 256 pixel values k, shape (*z0_rescaled.shape, 256).

    logits_k = -0.5 (z_0 / alpha_0 - c_k)^2 / exp(gamma(0)), normalised over k by log-softmax:
    each pixel's probabilities sum to 1 exactly, whatever gamma(0).
    """
    gamma_0 = torch.as_tensor(gamma_0, dtype=torch.float32, device=z0_rescaled.device)
    centres = bin_centres(z0_rescaled.device)
    inv_std = torch.exp(-0.5 * gamma_0)
    logits = -0.5 * ((z0_rescaled.float()[..., None] - centres) * inv_std).pow(2)
    return torch.log_softmax(logits, dim=-1)


def reconstruction_loss(pixels: Tensor, x: Tensor, gamma_0: float | Tensor,
                        generator: torch.Generator | None) -> Tensor:
    """-log p(x | z_0), z_0 / alpha_0 = x + exp(gamma(0) / 2) eps_0, summed over pixels, (B,) nats."""
    gamma_0 = torch.as_tensor(gamma_0, dtype=torch.float32, device=x.device)
    eps_0 = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    z0_rescaled = x.float() + torch.exp(0.5 * gamma_0) * eps_0
    log_probs = reconstruction_log_probs(z0_rescaled, gamma_0)
    picked = log_probs.gather(-1, pixels.long()[..., None])[..., 0]
    return -picked.flatten(1).sum(1)


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """nats / (D ln 2): a negative log-likelihood per image in nats -> bits per dimension."""
    return nats / (dims * math.log(2.0))


class _ScaleGradientPerExample(torch.autograd.Function):
    """Identity forward; backward multiplies the (B,) gradient by `owner.weights`."""

    @staticmethod
    def forward(ctx, value: Tensor, owner: VarianceGradient) -> Tensor:
        ctx.owner = owner
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        weights = ctx.owner.weights
        if weights is None:
            raise RuntimeError("VarianceGradient: set_losses must be called before backward")
        return grad * weights.to(grad.dtype), None


class VarianceGradient:
    """Routes grad Var_b[L_b] (instead of grad mean_b L_b) into the schedule (see module doc).

    `attach` the schedule's outputs gamma(t) and gamma'(t) before they are used, then
    `set_losses(L)` with the per-example losses once they are known, before backward.
    """

    def __init__(self) -> None:
        self.weights: Tensor | None = None

    def attach(self, value: Tensor) -> Tensor:
        return _ScaleGradientPerExample.apply(value, self)

    def set_losses(self, losses: Tensor) -> None:
        losses = losses.detach().float()
        self.weights = 2.0 * (losses - losses.mean())


@dataclass
class ELBOTerms:
    """The negative ELBO's terms per image, (B,) nats each; `kl` is zero for `vdm`."""

    diffusion: Tensor
    prior: Tensor
    reconstruction: Tensor
    kl: Tensor
    # q(z|x)'s parameters (vdm_vae), for free bits; None for vdm.
    code_mean: Tensor | None = None
    code_logvar: Tensor | None = None

    def total(self) -> Tensor:
        return self.diffusion + self.prior + self.reconstruction + self.kl

    def bits_per_dim(self, dims: int) -> dict[str, float]:
        """Batch means in bits/dim: each term and 'total' (their sum)."""
        out = {name: float(bits_per_dim(getattr(self, name).detach().mean(), dims)) for name in TERMS}
        out["total"] = float(bits_per_dim(self.total().detach().mean(), dims))
        return out


def elbo_terms(model, pixels: Tensor, generator: torch.Generator | None,
               variance_gradient: VarianceGradient | None = None,
               replace_code: Callable[[Tensor], Tensor] | None = None) -> ELBOTerms:
    """The negative-ELBO terms of a batch of uint8 images (B, C, H, W) under `model` (a VDMModel).

    Random draws, in order, from `generator`: u for the antithetic t, z's noise (vdm_vae),
    eps for z_t, eps_0 for the reconstruction term. With `variance_gradient`, the schedule's
    shape s(t) and s'(t) are attached to it (training with a learned schedule).
    `replace_code` (vdm_vae; the within-model test of whether the decoder uses z,
    vdm/code_use.py) maps the batch's draw z ~ q(z|x) to the code the eps-network is
    conditioned on instead; z is still drawn, so every other draw is the same as without it,
    and the KL term stays that of q(z|x).
    """
    x = model.pixels_to_model_range(pixels)
    batch = x.shape[0]
    code = None
    kl = torch.zeros(batch, device=x.device)
    code_mean = code_logvar = None
    t = antithetic_t(batch, generator, x.device)
    if model.has_encoder:
        code_mean, code_logvar = model.encoder_output(x)
        code_mean, code_logvar = code_mean.float(), code_logvar.float()
        code = reparameterize(code_mean, code_logvar, generator)
        kl = kl_to_standard_normal(code_mean, code_logvar)
        if replace_code is not None:
            code = replace_code(code)
    elif replace_code is not None:
        raise ValueError("replace_code: model.kind 'vdm' has no code to replace")

    gamma_t, dgamma_t = gamma_and_derivative(
        model.schedule, t, create_graph=torch.is_grad_enabled(),
        attach_to_shape=None if variance_gradient is None else variance_gradient.attach)
    gamma_0, gamma_1 = model.schedule.endpoints()
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    z_t = diffuse(x, gamma_t, eps)
    eps_hat = model.predict_eps(z_t, gamma_t, code)
    return ELBOTerms(
        diffusion=diffusion_loss(eps, eps_hat, dgamma_t),
        prior=prior_loss(x, gamma_1),
        reconstruction=reconstruction_loss(pixels, x, gamma_0, generator),
        kl=kl, code_mean=code_mean, code_logvar=code_logvar)


def kl_weight_at(step: int, anneal_steps: int) -> float:
    """KL annealing: min(1, (step + 1) / anneal_steps) for the 0-based step; 1 when off (0)."""
    return 1.0 if anneal_steps <= 0 else min(1.0, (step + 1) / anneal_steps)


def free_bits_kl(mean: Tensor, logvar: Tensor, free_bits: float) -> Tensor:
    """KL with free bits, (B,): each latent dimension's batch-mean KL counts as >= free_bits nats.

    sum_j max(free_bits, mean_b KL_bj) replaces the batch mean of sum_j KL_bj (Kingma et al.
    2016); a dimension below the floor gets no gradient, so the encoder is not pushed to
    collapse it. Returned per example (the per-dimension floor spread evenly) so it adds to
    the other per-example terms.
    """
    per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)          # (B, latent_dim)
    floored = torch.clamp(per_dim.mean(0), min=free_bits).sum()
    return floored.expand(mean.shape[0])


def vdm_training_loss(model, pixels: Tensor, spec: ExperimentSpec, generator: torch.Generator | None,
                      step: int = 0) -> tuple[Tensor, dict[str, float]]:
    """The batch training objective in bits/dim and its parts as floats.

    With KL annealing and free bits off (the defaults) the objective is the negative ELBO:
    loss = bpd = diffusion + prior + reconstruction + kl (each reported as `<term>_bpd`).
    Otherwise loss = diffusion + prior + reconstruction + w * kl', w the annealing weight
    and kl' the free-bits KL, and `bpd` still reports the ELBO.
    """
    cfg = spec.vdm
    learned = not isinstance(model.schedule, FixedLinearSchedule)
    variance = VarianceGradient() if learned and torch.is_grad_enabled() else None
    terms = elbo_terms(model, pixels, generator, variance_gradient=variance)
    dims = model.data_dims

    kl_train = terms.kl
    if model.has_encoder and cfg.free_bits > 0:
        kl_train = free_bits_kl(terms.code_mean, terms.code_logvar, cfg.free_bits)
    weight = kl_weight_at(step, cfg.kl_anneal_steps) if model.has_encoder else 1.0
    per_example = terms.diffusion + terms.prior + terms.reconstruction + weight * kl_train
    loss = bits_per_dim(per_example.mean(), dims)
    if variance is not None:
        variance.set_losses(bits_per_dim(terms.total(), dims))

    reported = terms.bits_per_dim(dims)
    stats = {f"{name}_bpd": reported[name] for name in TERMS}
    stats["bpd"] = reported["total"]
    stats["loss"] = float(loss.detach())
    if model.has_encoder and (cfg.kl_anneal_steps > 0 or cfg.free_bits > 0):
        stats["kl_weight"] = weight
    return loss, stats
