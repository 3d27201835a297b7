"""Encoding: the frozen encoder's codes E(x0, t) for a split over a list of t.

A static encoder ignores t, so its codes are computed once and the same array object is
returned for every t (`t_independent`); the probe sweep recognises the shared object and
probes it once. A vdm_vae's code is the mean of q(z|x), t-independent as well; the
unconditional vdm has no encoder, and asking it for codes is an error that says so.

The dae and simclr_gauss baselines (`model.noisy_code`) code an image at t as E(x_t): the
noise is drawn from a CPU generator seeded by (seed, t), `seed` defaulting to the spec's
evaluate.seed, and consumed batch by batch in order, so the codes are a function of the
weights, the images, the seed and evaluate.batch_size, and the same on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .spec import t_key


@dataclass
class Encodings:
    """Codes of one split: t -> (N, latent_dim) float32 array."""

    by_t: dict[float, np.ndarray]
    t_independent: bool


def require_encoder(model) -> None:
    """ValueError naming the kind when the model has no encoder (the unconditional vdm)."""
    if not model.has_encoder:
        raise ValueError(f"model.kind {model.spec.model.kind!r} has no encoder: it has no codes "
                         "to encode or probe")


def encoding_noise_generator(t: float, seed: int) -> torch.Generator:
    """The CPU generator for the noise of x_t in a noisy code at t, seeded by (seed, t)."""
    state = np.random.SeedSequence([int(seed), int(round(t_key(t) * 1000))]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


@torch.no_grad()
def encode_images(model, x_uint8: torch.Tensor, t: float | None, batch_size: int,
                  device: torch.device, seed: int | None = None) -> np.ndarray:
    """E(x0, t) for every image of x_uint8 (N, C, H, W), in batches, on `device`.

    `seed` (default: the model spec's evaluate.seed) seeds the noise of a noisy code.
    """
    require_encoder(model)
    model.eval()
    noise = None
    if getattr(model, "noisy_code", False):
        if t is None:
            raise ValueError(f"t: the {model.spec.model.kind} code at t is E(x_t), got None")
        noise = encoding_noise_generator(t, model.spec.evaluate.seed if seed is None else seed)
    out = []
    for start in range(0, len(x_uint8), batch_size):
        x0 = model.pixels_to_model_range(x_uint8[start:start + batch_size].to(device))
        tt = None if t is None else torch.full((len(x0),), float(t), device=device)
        codes = model.encode(x0, tt) if noise is None else model.encode(x0, tt, generator=noise)
        out.append(codes.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.spec.model.latent_dim), np.float32)


def encode_at(model, x_uint8: torch.Tensor, t_values: Sequence[float], batch_size: int,
              device: torch.device, progress: Callable[[int, int], None] | None = None,
              seed: int | None = None) -> Encodings:
    """Codes of x_uint8 at each t of `t_values` (rounded to 3 decimals, duplicates dropped).

    `seed` seeds a noisy code's noise (default: the model spec's evaluate.seed).
    """
    require_encoder(model)
    ts = sorted({t_key(t) for t in t_values})
    if not model.time_conditioned:
        codes = encode_images(model, x_uint8, None, batch_size, device)
        if progress:
            progress(len(ts), len(ts))
        return Encodings({t: codes for t in ts}, t_independent=True)
    by_t = {}
    for i, t in enumerate(ts):
        by_t[t] = encode_images(model, x_uint8, t, batch_size, device, seed)
        if progress:
            progress(i + 1, len(ts))
    return Encodings(by_t, t_independent=False)


def embedding_filename(split: str, t: float) -> str:
    """`<split>_t=<t with 3 decimals>.npy`, the layout `drl run` and the service share."""
    return f"{split}_t={t_key(t):.3f}.npy"
