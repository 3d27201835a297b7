"""Encoding: the frozen encoder's codes E(x0, t) for a split over a list of t.

A static encoder ignores t, so its codes are computed once and the same array object is
returned for every t (`t_independent`); the probe sweep recognises the shared object and
probes it once. A vdm_vae's code is the mean of q(z|x), t-independent as well; the
unconditional vdm has no encoder, and asking it for codes is an error that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encodings:
    """Codes of one split: t -> (N, latent_dim) float32 array."""

    by_t: dict[float, np.ndarray]
    t_independent: bool


def t_key(t: float) -> float:
    """Canonical form of a diffusion time, so 0.1 + 0.2 and 0.3 name the same encoding."""
    return round(float(t), 3)


def require_encoder(model) -> None:
    """ValueError naming the kind when the model has no encoder (the unconditional vdm)."""
    if not model.has_encoder:
        raise ValueError(f"model.kind {model.spec.model.kind!r} has no encoder: it has no codes "
                         "to encode or probe")


@torch.no_grad()
def encode_images(model, x_uint8: torch.Tensor, t: float | None, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """E(x0, t) for every image of x_uint8 (N, C, H, W), in batches, on `device`."""
    require_encoder(model)
    model.eval()
    out = []
    for start in range(0, len(x_uint8), batch_size):
        x0 = model.pixels_to_model_range(x_uint8[start:start + batch_size].to(device))
        tt = None if t is None else torch.full((len(x0),), float(t), device=device)
        out.append(model.encode(x0, tt).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.spec.model.latent_dim), np.float32)


def encode_at(model, x_uint8: torch.Tensor, t_values: Sequence[float], batch_size: int,
              device: torch.device, progress: Callable[[int, int], None] | None = None) -> Encodings:
    """Codes of x_uint8 at each t of `t_values` (rounded to 3 decimals, duplicates dropped)."""
    require_encoder(model)
    ts = sorted({t_key(t) for t in t_values})
    if not model.time_conditioned:
        codes = encode_images(model, x_uint8, None, batch_size, device)
        if progress:
            progress(len(ts), len(ts))
        return Encodings({t: codes for t in ts}, t_independent=True)
    by_t = {}
    for i, t in enumerate(ts):
        by_t[t] = encode_images(model, x_uint8, t, batch_size, device)
        if progress:
            progress(i + 1, len(ts))
    return Encodings(by_t, t_independent=False)


def embedding_filename(split: str, t: float) -> str:
    """`<split>_t=<t with 3 decimals>.npy`, the layout `drl run` and the service share."""
    return f"{split}_t={t_key(t):.3f}.npy"
