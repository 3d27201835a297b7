"""Ancestral sampling from a VDM (Kingma et al. 2021, appendix A.4), with or without a code.

T steps over the grid t_i = i / T, from z_1 ~ N(0, I) down to z_0. One step from t to s < t,
with gamma_s = gamma(s), gamma_t = gamma(t) and c = -expm1(gamma_s - gamma_t) = 1 - SNR(t)/SNR(s):

    z_s = sqrt(alpha_s^2 / alpha_t^2) (z_t - sigma_t c eps_hat(z_t; gamma_t, z))
          + sqrt(sigma_s^2 c) eps,          eps ~ N(0, I)

(the mean and variance of q(z_s | z_t, x) with x replaced by its prediction; expm1 keeps the
small difference exact in float32). The image is then drawn from the reconstruction model,
pixel by pixel from p(k | z_0) over the 256 values (Gumbel-max on its log-probabilities), so
samples are whole 8-bit values.

Codes: z from the prior N(0, I) (generation), the encoder mean of real images
(reconstruction), or points on the segment between two images' codes (interpolation); the
unconditional `vdm` takes none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .losses import alpha_sigma, reconstruction_log_probs

ProgressFn = Callable[[int, int], None]


def ancestral_step(model, z_t: Tensor, gamma_t: Tensor, gamma_s: Tensor, code: Tensor | None,
                   noise: Tensor) -> Tensor:
    """One reverse step z_t -> z_s for scalar gamma_t > gamma_s (see module doc)."""
    batch = z_t.shape[0]
    eps_hat = model.predict_eps(z_t, gamma_t.expand(batch), code).float()
    alpha_s, sigma_s = alpha_sigma(gamma_s)
    alpha_t, sigma_t = alpha_sigma(gamma_t)
    c = -torch.expm1(gamma_s - gamma_t)
    mean = (alpha_s / alpha_t) * (z_t - sigma_t * c * eps_hat)
    return mean + torch.sqrt(sigma_s.pow(2) * c) * noise


def decode_pixels(z_0: Tensor, gamma_0: float | Tensor, generator: torch.Generator | None,
                  same_noise: bool = False) -> Tensor:
    """Pixel values (int64, 0..255) drawn from p(k | z_0); z_0 / alpha_0 is the decoder's input.

    Gumbel-max: argmax_k (log p(k | z_0) + G_k), G_k = -log(-log U_k), U_k ~ U(0, 1).
    `same_noise` shares one image's draws across the batch.
    """
    gamma_0 = torch.as_tensor(gamma_0, dtype=torch.float32, device=z_0.device)
    alpha_0, _ = alpha_sigma(gamma_0)
    log_probs = reconstruction_log_probs(z_0 / alpha_0, gamma_0)
    shape = (1, *log_probs.shape[1:]) if same_noise else log_probs.shape
    uniform = torch.rand(shape, generator=generator, device=z_0.device).clamp_min_(1e-20)
    return torch.argmax(log_probs - torch.log(-torch.log(uniform)), dim=-1)


@torch.no_grad()
def ancestral_sample(model, n: int, codes: Tensor | None, steps: int,
                     generator: torch.Generator | None, device: torch.device | str,
                     same_noise: bool = False, progress: ProgressFn | None = None) -> Tensor:
    """n images as pixel values (int64, (n, C, H, W)) from `steps` ancestral steps.

    `codes` (n, latent_dim) condition a vdm_vae, None for vdm. `same_noise` draws z_1, every
    step's noise and the decoder's noise once and shares them across the batch, so that the
    images differ only through their codes (interpolations).
    """
    if steps < 1:
        raise ValueError(f"sample.steps: expected >= 1, got {steps}")
    model.eval()
    shape = (1 if same_noise else n, *model.image_shape)

    def noise() -> Tensor:
        return torch.randn(shape, generator=generator, device=device).expand(n, *model.image_shape)

    times = torch.linspace(1.0, 0.0, steps + 1, device=device)
    gammas = model.schedule(times).float()
    z = noise()
    for i in range(steps):
        z = ancestral_step(model, z, gammas[i], gammas[i + 1], codes, noise())
        if progress is not None:
            progress(i + 1, steps)
    gamma_0, _ = model.schedule.endpoints()
    return decode_pixels(z, gamma_0, generator, same_noise)


def interpolate_codes(code_a: Tensor, code_b: Tensor, points: int) -> Tensor:
    """`points` codes on the segment from code_a to code_b (both (latent_dim,)), ends included."""
    if points < 2:
        raise ValueError(f"points: an interpolation needs at least 2 points, got {points}")
    w = torch.linspace(0.0, 1.0, points, device=code_a.device, dtype=code_a.dtype)[:, None]
    return (1.0 - w) * code_a[None] + w * code_b[None]
