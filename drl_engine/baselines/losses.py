"""The baselines' training objectives (per batch: the mean over samples of a per-sample loss).

With x0 in the SDE's data range, t ~ sample_t(objective) (the same t distribution DRL trains
on, so `fixed` and `sigma_uniform` apply too), eps ~ N(0, I), u_t = unit(x_t) (model.py):

    ae            || D(E(x0)) - x0 ||^2
    vae           || D(z) - x0 ||^2 / (2 s^2) + KL(N(mu, sigma^2) || N(0, I)),
                  z = mu + sigma n (reparameterised), s = DECODER_STD * (hi - lo): the
                  negative ELBO of a Gaussian decoder with fixed std s, up to a constant
    dae           || D(E(u_t)) - x0 ||^2
    cdae          || D(u_t, t, E(x0, t)) - x0 ||^2          (denoise x_t in one step)
    simclr_gauss  NT-Xent(g(E(u_t')), g(E(u_t''))): two views of x0 with independent noise
                  eps', eps'' at the same t, temperature SIMCLR_TEMPERATURE

Squared errors are summed over pixels, as DRL's denoising score matching loss is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..objective import kl_to_standard_normal, reparameterize, sample_t
from ..spec import ExperimentSpec
from .model import BaselineModel

# The VAE decoder's fixed std as a fraction of the data range: 0.1 of the [0, 1] pixel scale
# (a sharp likelihood, so that reconstruction is not drowned by the KL term at latent_dim 8).
DECODER_STD = 0.1
# NT-Xent temperature: SimCLR's value for small batches (Chen et al. 2020, CIFAR-10 setup).
SIMCLR_TEMPERATURE = 0.5

Parts = dict[str, float]


def squared_error(x_hat: Tensor, x0: Tensor) -> Tensor:
    """|| x_hat - x0 ||^2 summed over pixels, shape (B,)."""
    return (x_hat.float() - x0.float()).pow(2).flatten(1).sum(1)


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for N positive pairs (a_i, b_i).

    With the 2N projections v = normalise([a; b]) and s_ij = v_i . v_j / temperature,
        l_i = -log( exp(s_{i, p(i)}) / sum_{k != i} exp(s_ik) ),   p(i) = i + N mod 2N,
    and the loss is the mean of l_i over all 2N views.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"nt_xent: expected two (N, D) batches of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    v = F.normalize(torch.cat([a, b]).float(), dim=1)
    sim = (v @ v.T) / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=v.device)
    sim = sim.masked_fill(self_pairs, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(v.device)
    return F.cross_entropy(sim, positives)


def _noise(x0: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)


def _times(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
           generator: torch.Generator | None) -> Tensor:
    return sample_t(x0.shape[0], spec.objective, model.sde, generator, x0.device, x0.dtype)


def ae_loss(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
            generator: torch.Generator | None) -> tuple[Tensor, Parts]:
    rec = squared_error(model.decoder(model.encoder_output(x0, None)[0]), x0)
    return rec.mean(), {"reconstruction": rec.detach().mean().item()}


def vae_loss(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
             generator: torch.Generator | None) -> tuple[Tensor, Parts]:
    mean, logvar = model.encoder_output(x0, None)
    z = reparameterize(mean, logvar, generator)
    lo, hi = model.sde.data_range
    std = DECODER_STD * (hi - lo)
    rec = squared_error(model.decoder(z), x0)
    kl = kl_to_standard_normal(mean.float(), logvar.float())
    loss = (rec / (2 * std ** 2) + kl).mean()
    return loss, {"reconstruction": rec.detach().mean().item(), "kl": kl.detach().mean().item()}


def dae_loss(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
             generator: torch.Generator | None) -> tuple[Tensor, Parts]:
    t = _times(model, x0, spec, generator)
    u = model.noisy_input(x0, t, _noise(x0, generator))
    rec = squared_error(model.decoder(model.encoder_output(u, None)[0]), x0)
    return rec.mean(), {"reconstruction": rec.detach().mean().item()}


def cdae_loss(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
              generator: torch.Generator | None) -> tuple[Tensor, Parts]:
    t = _times(model, x0, spec, generator)
    u = model.noisy_input(x0, t, _noise(x0, generator))
    z = model.encoder_output(x0, t)[0]
    rec = squared_error(model.denoiser(u, model.sde.noise_condition(t), z), x0)
    return rec.mean(), {"reconstruction": rec.detach().mean().item()}


def simclr_gauss_loss(model: BaselineModel, x0: Tensor, spec: ExperimentSpec,
                      generator: torch.Generator | None) -> tuple[Tensor, Parts]:
    t = _times(model, x0, spec, generator)
    views = [model.noisy_input(x0, t, _noise(x0, generator)) for _ in range(2)]
    a, b = (model.projection(model.encoder_output(v, None)[0]) for v in views)
    loss = nt_xent(a, b, SIMCLR_TEMPERATURE)
    return loss, {"nt_xent": loss.detach().item()}


BASELINE_LOSSES: dict[str, Callable[..., tuple[Tensor, Parts]]] = {
    "ae": ae_loss, "vae": vae_loss, "dae": dae_loss, "cdae": cdae_loss,
    "simclr_gauss": simclr_gauss_loss,
}


def baseline_loss(model: BaselineModel, pixels: Tensor, spec: ExperimentSpec,
                  generator: torch.Generator | None, step: int) -> tuple[Tensor, Parts]:
    """The registry's loss for the baseline kinds: (batch loss, parts with 'loss')."""
    loss, parts = BASELINE_LOSSES[model.kind](model, model.pixels_to_model_range(pixels), spec,
                                              generator)
    return loss, {**parts, "loss": loss.detach().item()}
