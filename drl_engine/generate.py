"""Conditional generation: choose the codes, bind them into a score function, run a sampler.

Codes come from encoding real test images (reconstructions), from a grid over a 2-d latent
space, or from N(0, I) for VDRL. A time-conditioned encoder's code of a real image is the
curve t -> E(x0, t), so the bound score function re-encodes x0 at each step's t; grid and
prior codes are fixed vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .datasets import from_model_range, to_model_range
from .samplers import SampleResult, sample
from .spec import SampleSpec


@dataclass
class Generation:
    images: torch.Tensor            # (B, C, H, W) in [0, 1]
    references: torch.Tensor | None  # the encoded source images in [0, 1], for 'encoded'
    codes: torch.Tensor | None      # the fixed codes used ('grid', 'prior'); None for 'encoded'
    result: SampleResult


def grid_codes(count: int, grid_range: float, device) -> torch.Tensor:
    """A side x side grid over [-r, r]^2 (side = floor(sqrt(count))), row-major."""
    side = max(1, math.isqrt(count))
    axis = torch.linspace(-grid_range, grid_range, side, device=device)
    ys, xs = torch.meshgrid(axis.flip(0), axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def bind_score(model, x0: torch.Tensor | None, codes: torch.Tensor | None
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """score(x, t) with the code bound: E(x0, t) re-encoded per step, or fixed `codes`."""
    if x0 is not None and model.time_conditioned:
        return lambda x, t: model.score(x, t, model.encode(x0, t))
    if x0 is not None:
        codes = model.encode(x0, None)
    return lambda x, t: model.score(x, t, codes)


@torch.no_grad()
def generate(model, spec: SampleSpec, x_source_uint8: torch.Tensor | None, device,
             progress: Callable[[int, int], None] | None = None) -> Generation:
    """Draw samples per `spec`; `x_source_uint8` supplies the images for 'encoded' codes."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    x0 = references = codes = None
    if spec.code_source == "encoded":
        if x_source_uint8 is None or len(x_source_uint8) == 0:
            raise ValueError("sample.code_source 'encoded' needs images to encode")
        x0 = to_model_range(x_source_uint8[:spec.count].to(device), model.sde.data_range)
        references = from_model_range(x0, model.sde.data_range).cpu()
        n = len(x0)
    elif spec.code_source == "grid":
        codes = grid_codes(spec.count, spec.grid_range, device)
        n = len(codes)
    else:  # prior: VDRL's code distribution N(0, I)
        codes = torch.randn(spec.count, model.spec.model.latent_dim, generator=gen, device=device)
        n = spec.count
    result = sample(bind_score(model, x0, codes), model.sde, (n, *model.image_shape), spec,
                    generator=gen, device=device, progress=progress)
    images = from_model_range(result.images, model.sde.data_range).cpu()
    return Generation(images, references, None if codes is None else codes.cpu(), result)
