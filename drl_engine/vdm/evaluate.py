"""Test-set bits/dim of a VDM or VDM-VAE: the negative ELBO and each of its terms.

One stochastic estimate per image (an antithetic t per batch, one eps, one eps_0 and, for
vdm_vae, one z ~ q(z|x)), averaged over the split: an unbiased estimate of the expected
bound, seeded so that the same model and data give the same numbers. Always the ELBO at KL
weight 1, whatever annealing or free bits training used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .losses import TERMS, ELBOTerms, bits_per_dim, elbo_terms


@torch.no_grad()
def elbo_terms_by_batch(model, pixels: torch.Tensor, batch_size: int, seed: int,
                    device: torch.device | str,
                    replace_code: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> Iterator[ELBOTerms]:
    """The ELBO terms of each batch of `pixels` (uint8 (N, C, H, W)), in order, from one
    generator seeded with `seed`: the same model, data, batch size and seed draw the same t,
    z, eps and eps_0, whatever `replace_code` (elbo_terms) does with z."""
    if len(pixels) == 0:
        raise ValueError("evaluate_bits_per_dim: no images to evaluate (the test split is empty)")
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size].to(device)
        yield elbo_terms(model, batch, generator, replace_code=replace_code)
        if progress is not None:
            progress(min(start + batch_size, len(pixels)), len(pixels))


def evaluate_bits_per_dim(model, pixels: torch.Tensor, batch_size: int, seed: int,
                          device: torch.device | str,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """{'total', 'diffusion', 'prior', 'reconstruction', 'kl'} in bits/dim, plus 'images'.

    `pixels` are uint8 (N, C, H, W); 'total' is the sum of the four terms (each a mean over
    the N images).
    """
    sums = dict.fromkeys(TERMS, 0.0)
    for terms in elbo_terms_by_batch(model, pixels, batch_size, seed, device, progress=progress):
        for name in TERMS:
            sums[name] += float(getattr(terms, name).double().sum())
    n = len(pixels)
    result = {name: float(bits_per_dim(sums[name] / n, model.data_dims)) for name in TERMS}
    result["total"] = sum(result[name] for name in TERMS)
    result["images"] = n
    return result
