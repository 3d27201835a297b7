"""reconstructions.png for the baselines, which have no sampler: what each decoder recovers.

Row 0 holds test images; below them one row of reconstructions per noise level: a single row
D(E(x0)) for ae and vae (t-independent), and one row per t in RECONSTRUCTION_TS for dae
(D(E(x_t))) and cdae (D(x_t, t, E(x0, t))): low, middle and high noise. The noise is seeded
(sample.seed) and drawn on the CPU. simclr_gauss has no decoder and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from pathlib import Path

import torch

from ..plots import save_image_grid
from .model import BaselineModel

RECONSTRUCTION_TS = (0.2, 0.5, 0.8)


def has_decoder(model: BaselineModel) -> bool:
    return model.kind != "simclr_gauss"


@torch.no_grad()
def save_reconstructions(model: BaselineModel, x_uint8: torch.Tensor, path: Path, count: int,
                         seed: int, device: torch.device,
                         agreement: Callable[[torch.Tensor], float | None] | None = None) -> dict:
    """Write the grid to `path`; returns {'count', 't', 'finite'} for metrics.json, plus
    'reconstruction_agreement' = agreement(reconstructions in [0, 1]) for a static code
    (one reconstruction per image) when `agreement` is given."""
    model.eval()
    x0 = model.pixels_to_model_range(x_uint8[:count].to(device))
    ts = RECONSTRUCTION_TS if model.time_conditioned else (0.0,)
    generator = torch.Generator().manual_seed(seed)
    rows = [model.model_range_to_unit(x0).cpu()]
    for t in ts:
        rows.append(model.model_range_to_unit(model.reconstruct(x0, t, generator)).cpu())
    save_image_grid(torch.cat(rows), path, nrow=len(x0))
    meta = {"count": len(x0), "t": list(ts) if model.time_conditioned else None,
            "finite": bool(all(torch.isfinite(r).all() for r in rows))}
    if agreement is not None and not model.time_conditioned:
        meta["reconstruction_agreement"] = agreement(rows[1])
    return meta
