"""Does a vdm_vae's decoder use its code z? The test within one trained model.

Comparing vdm_vae's bits/dim with an unconditional vdm's compares two models trained apart;
this test holds the model fixed. The same trained vdm_vae scores the test split three times
with every random draw shared (one seed: the same t, z ~ q(z|x), eps and eps_0 per image),
and only the code the eps-network is conditioned on changes:

    posterior   z ~ q(z | x), the posterior sample the ELBO uses, so this diffusion term is
                the reported one (evaluate.evaluate_bits_per_dim at the same seed and batch)
    shuffled    the batch's posterior samples permuted by a seeded derangement: every image
                is denoised with another test image's code (codes from the aggregate posterior)
    prior       z ~ N(0, I), drawn independently of x (what samples from the prior get)

Only the diffusion term sees the code: the prior term reads x and gamma(1), the
reconstruction term x and gamma(0) (p(x | z_0) has no code input), and the KL is q(z|x)'s in
every case. So the test is the per-image difference of diffusion terms, shuffled minus
posterior and prior minus posterior, paired, with two standard errors of its mean over the
images. A decoder that ignores z gives exactly 0; one that uses z loses likelihood when the
code is another image's. The verdict reads the shuffled codes (they are codes the decoder
saw in training, just not the image's own); prior codes can be off the aggregate posterior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from ..code_usage import derangement
from .evaluate import elbo_terms_by_batch
from .losses import bits_per_dim

CODE_SOURCES = ("posterior", "shuffled", "prior")


@dataclass(frozen=True)
class CodeUseTest:
    """Diffusion terms (bits/dim, test means) under each code source, and the paired gains."""

    posterior: float
    shuffled: float
    prior: float
    shuffled_gain: float      # mean of (shuffled - posterior) per image, bits/dim
    shuffled_noise: float     # two standard errors of that mean
    prior_gain: float
    prior_noise: float
    images: int

    @property
    def uses_code(self) -> bool:
        """The decoder does worse with other images' codes by more than two standard errors."""
        return self.shuffled_gain > self.shuffled_noise

    def as_dict(self) -> dict:
        return {**asdict(self), "uses_code": self.uses_code}


def mean_and_noise(values: Tensor) -> tuple[float, float]:
    """(mean, two standard errors of the mean) of per-image values; 0 noise for one image."""
    values = values.double()
    n = len(values)
    se = float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return float(values.mean()), 2.0 * se


def code_replacements(seed: int, device: torch.device | str) -> dict:
    """source -> the `replace_code` of elbo_terms (None keeps the posterior sample); each
    draws from its own generator, so the ELBO's draws are the same under every source."""
    shuffle_rng = np.random.default_rng(seed)
    prior_generator = torch.Generator(device=device).manual_seed(seed + 1)

    def shuffled(z: Tensor) -> Tensor:
        return z[torch.from_numpy(derangement(len(z), shuffle_rng)).to(z.device)]

    def prior(z: Tensor) -> Tensor:
        return torch.randn(z.shape, generator=prior_generator, device=z.device, dtype=z.dtype)

    return {"posterior": None, "shuffled": shuffled, "prior": prior}


def measure_code_use(model, pixels: Tensor, batch_size: int, seed: int,
                     device: torch.device | str) -> CodeUseTest:
    """The test of the module docstring on uint8 test images `pixels` (N, C, H, W)."""
    if not model.has_encoder:
        raise ValueError(f"model.kind {model.kind!r} has no code z: nothing to test")
    diffusion: dict[str, Tensor] = {}
    for source, replace in code_replacements(seed, device).items():
        per_image = [terms.diffusion.double().cpu() for terms in elbo_terms_by_batch(
            model, pixels, batch_size, seed, device, replace_code=replace)]
        diffusion[source] = bits_per_dim(torch.cat(per_image), model.data_dims)
    shuffled_gain, shuffled_noise = mean_and_noise(diffusion["shuffled"] - diffusion["posterior"])
    prior_gain, prior_noise = mean_and_noise(diffusion["prior"] - diffusion["posterior"])
    return CodeUseTest(
        posterior=float(diffusion["posterior"].mean()), shuffled=float(diffusion["shuffled"].mean()),
        prior=float(diffusion["prior"].mean()), shuffled_gain=shuffled_gain,
        shuffled_noise=shuffled_noise, prior_gain=prior_gain, prior_noise=prior_noise,
        images=len(pixels))
