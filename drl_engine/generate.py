"""Conditional generation: choose the codes, bind them into a score function, run a sampler.

Codes come from encoding real test images (reconstructions), from a grid over a 2-d latent
space, or from N(0, I) for VDRL and the VDM-VAE. A time-conditioned encoder's code of a real
image is the curve t -> E(x0, t), so the bound score function re-encodes x0 at each step's t;
grid and prior codes are fixed vectors.

VDM kinds (`vdm_vae`, `vdm`) sample ancestrally with `sample.steps` steps (vdm/sampling.py);
the SDE sampler settings (sampler, t_init, prior, snr, corrector_steps, eps, rtol, atol) do
not apply to them, and the unconditional `vdm` ignores `code_source`.
`generate_interpolations` decodes codes on the segment between two images' codes (VDM-VAE);
`generate` dispatches to it for code_source 'interpolation', reading `sample.count` as
pairs x points: INTERPOLATION_POINTS points per pair, pairs = max(1, count //
INTERPOLATION_POINTS) (fewer when the source has fewer than 2 x pairs images), so the draw has
pairs x INTERPOLATION_POINTS images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .datasets import from_model_range, to_model_range
from .sampling import SampleResult, sample
from .spec import SampleSpec
from .vdm.model import VDMModel
from .vdm.pixels import pixels_to_unit
from .vdm.sampling import ancestral_sample, interpolate_codes


# Decodes along each pair's segment, both ends included (code_source 'interpolation').
INTERPOLATION_POINTS = 8


@dataclass
class Generation:
    images: torch.Tensor            # (B, C, H, W) in [0, 1]
    references: torch.Tensor | None  # the encoded source images in [0, 1], for 'encoded'
    codes: torch.Tensor | None      # the fixed codes used; None for drl/vdrl 'encoded' and for vdm
    result: SampleResult


def grid_codes(count: int, grid_range: float, device) -> torch.Tensor:
    """A side x side grid over [-r, r]^2 (side = floor(sqrt(count))), row-major."""
    return box_grid_codes(max(1, math.isqrt(count)), (-grid_range, -grid_range),
                          (grid_range, grid_range), device)


def box_grid_codes(side: int, low: tuple[float, float], high: tuple[float, float],
                   device) -> torch.Tensor:
    """A side x side grid over the box [low[0], high[0]] x [low[1], high[1]], row-major, z[0]
    growing to the right and z[1] growing upwards (as in a scatter plot of the codes)."""
    xs_axis = torch.linspace(low[0], high[0], side, device=device)
    ys_axis = torch.linspace(low[1], high[1], side, device=device)
    ys, xs = torch.meshgrid(ys_axis.flip(0), xs_axis, indexing="ij")
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
    """Draw samples per `spec`; `x_source_uint8` supplies the images for 'encoded' and
    'interpolation' codes."""
    if spec.code_source == "interpolation":
        if not isinstance(model, VDMModel):   # the spec check refuses it; a bare SampleSpec may not
            raise ValueError("sample.code_source 'interpolation' needs model.kind 'vdm_vae'")
        return generate_interpolations(model, spec, x_source_uint8, device,
                                       pairs=interpolation_pairs(spec.count))
    if isinstance(model, VDMModel):
        return generate_vdm(model, spec, x_source_uint8, device, progress)
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
    return _run_sampler(model, spec, x0, codes, n, gen, device, progress, references)


@torch.no_grad()
def decode_codes(model, spec: SampleSpec, codes: torch.Tensor, device,
                 x_init: torch.Tensor | None = None) -> Generation:
    """Samples of an SDE model for the given fixed codes, one per code, seeded by spec.seed.

    `x_init` (model data range, one per code) starts the reverse SDE from a given x at
    spec.t_init instead of a prior draw: the denoising swap's noisy real images.
    """
    model.eval()
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    return _run_sampler(model, spec, None, codes.to(device), len(codes), gen, device, None, None,
                        x_init)


def _run_sampler(model, spec: SampleSpec, x0, codes, n: int, gen, device, progress, references,
                 x_init: torch.Tensor | None = None) -> Generation:
    result = sample(bind_score(model, x0, codes), model.sde, (n, *model.image_shape), spec,
                    generator=gen, device=device, progress=progress, x_init=x_init)
    images = from_model_range(result.images, model.sde.data_range).cpu()
    return Generation(images, references, None if codes is None else codes.cpu(), result)


def _source_images(x_source_uint8: torch.Tensor | None, count: int, device) -> torch.Tensor:
    """The first `count` source images (fewer if there are fewer) on `device`; none is an error."""
    if x_source_uint8 is None or len(x_source_uint8) == 0:
        raise ValueError("sample.code_source 'encoded' needs images to encode")
    return x_source_uint8[:count].to(device)


def _vdm_generation(model: VDMModel, pixels_out: torch.Tensor, references: torch.Tensor | None,
                    codes: torch.Tensor | None, steps: int, seconds: float) -> Generation:
    """Wrap sampled pixel values: images k / 255, the result in VDM's data range, one eval per step."""
    result = SampleResult(images=model.pixels_to_model_range(pixels_out.to(torch.uint8)),
                          nfe=steps, steps=steps, seconds=seconds)
    return Generation(pixels_to_unit(pixels_out).cpu(), references,
                      None if codes is None else codes.cpu(), result)


@torch.no_grad()
def generate_vdm(model: VDMModel, spec: SampleSpec, x_source_uint8: torch.Tensor | None, device,
                 progress: Callable[[int, int], None] | None = None) -> Generation:
    """Ancestral samples of a VDM: unconditional (vdm), or with codes per `spec.code_source`."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    references = codes = None
    n = spec.count
    if model.has_encoder:
        if spec.code_source == "encoded":
            pixels = _source_images(x_source_uint8, spec.count, device)
            codes = model.encode(model.pixels_to_model_range(pixels))
            references = pixels_to_unit(pixels).cpu()
        elif spec.code_source == "grid":
            codes = grid_codes(spec.count, spec.grid_range, device)
        else:   # prior: p(z) = N(0, I)
            codes = torch.randn(spec.count, model.latent_dim, generator=gen, device=device)
        n = len(codes)
    start = time.perf_counter()
    pixels_out = ancestral_sample(model, n, codes, spec.steps, gen, device, progress=progress)
    return _vdm_generation(model, pixels_out, references, codes, spec.steps,
                           time.perf_counter() - start)


def interpolation_pairs(count: int) -> int:
    """How many image pairs a draw of `count` interpolation images walks between (>= 1)."""
    return max(1, count // INTERPOLATION_POINTS)


@torch.no_grad()
def generate_interpolations(model: VDMModel, spec: SampleSpec, x_source_uint8: torch.Tensor,
                            device, pairs: int = 4, points: int = INTERPOLATION_POINTS) -> Generation:
    """Decodes of `points` codes on the segment between the codes of images (0, 1), (2, 3), ...

    images: (pairs * points, C, H, W), pair by pair; references: (2 * pairs, ...), each pair's
    two source images. Every decode shares one draw of the sampler's noise, so the frames of
    a row differ only through their codes.
    """
    if not model.has_encoder:
        raise ValueError(f"model.kind {model.kind!r} has no encoder: there are no codes to interpolate")
    pairs = min(pairs, (0 if x_source_uint8 is None else len(x_source_uint8)) // 2)
    if pairs < 1:
        raise ValueError("interpolation: needs at least 2 source images")
    pixels = _source_images(x_source_uint8, 2 * pairs, device)
    model.eval()
    ends = model.encode(model.pixels_to_model_range(pixels))
    codes = torch.cat([interpolate_codes(ends[2 * i], ends[2 * i + 1], points) for i in range(pairs)])
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    start = time.perf_counter()
    pixels_out = ancestral_sample(model, len(codes), codes, spec.steps, gen, device, same_noise=True)
    return _vdm_generation(model, pixels_out, pixels_to_unit(pixels).cpu(), codes, spec.steps,
                           time.perf_counter() - start)
