"""Image grids (PNG) and probe-curve plots; files only, never a window.

Plots draw on matplotlib's Agg canvas directly (`FigureCanvasAgg`), without pyplot, so no GUI
backend is ever loaded and the process-wide backend setting is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .probes import ProbeTable


def _as_numpy(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):   # a torch tensor, without importing torch here
        images = images.detach().cpu().float().numpy()
    return np.asarray(images, dtype=np.float32)


def image_grid(images: Any, nrow: int | None = None, padding: int = 2,
               pad_value: float = 0.0) -> np.ndarray:
    """Tile a batch into one picture, as torchvision's make_grid does.

    images: (B, C, H, W) floats in [0, 1] (torch or numpy), C = 1 or 3; VP samples in
    [-1, 1] must be mapped to [0, 1] first. Values outside [0, 1] are clipped. `nrow` images
    per row (default ceil(sqrt(B))), `padding` pixels of `pad_value` between and around them.
    Returns uint8 of shape (rows * (H + padding) + padding, nrow * (W + padding) + padding),
    with a trailing 3 for colour.
    """
    x = _as_numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty batch of shape (B, C, H, W) with C 1 or "
                         f"3, got shape {x.shape}")
    if padding < 0:
        raise ValueError(f"padding: expected >= 0, got {padding}")
    b, c, h, w = x.shape
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(b))
    if ncol < 1:
        raise ValueError(f"nrow: expected >= 1, got {nrow}")
    ncol = min(ncol, b)
    nrows = math.ceil(b / ncol)
    grid = np.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding),
                   pad_value, dtype=np.float32)
    for i in range(b):
        top = padding + (i // ncol) * (h + padding)
        left = padding + (i % ncol) * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    pixels = np.round(np.clip(np.nan_to_num(grid), 0.0, 1.0) * 255).astype(np.uint8)
    return pixels[0] if c == 1 else pixels.transpose(1, 2, 0)


# Grids of small images (16 or 28 px) are enlarged by whole pixels to about this width, so
# the PNG is readable in a browser or notebook without smoothing away the pixels.
MIN_GRID_WIDTH = 512


def save_image_grid(images: Any, path: str | Path, nrow: int | None = None) -> None:
    """Write `image_grid(images, nrow)` as a PNG (parent folders are created), enlarged by an
    integer factor with nearest-neighbour when it is narrower than MIN_GRID_WIDTH."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Image.fromarray(image_grid(images, nrow))
    factor = max(1, MIN_GRID_WIDTH // grid.width)
    if factor > 1:
        grid = grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)
    grid.save(path, format="PNG")


def plot_probe_curves(table: ProbeTable, path: str | Path, title: str | None = None) -> None:
    """PNG of probe results against t: accuracies (svc_*, linear, mlp) in one panel, the
    silhouette in a second; a star marks each curve's best t (named in the legend)."""
    if not table.rows or not table.columns:
        raise ValueError("probe table: nothing to plot (no rows or no columns)")
    accuracy = [c for c in table.columns if c != "silhouette"]
    panels = [cols for cols in (accuracy, ["silhouette"] if "silhouette" in table.columns else [])
              if cols]
    best = table.best()
    ts = [row["t"] for row in table.rows]

    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    for i, cols in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for col in cols:
            values = [row.get(col, math.nan) for row in table.rows]
            label = col
            if col in best:
                label += f" (best t={best[col]['t']:g})"
            (line,) = ax.plot(ts, values, marker="o", markersize=3, label=label)
            if col in best:
                ax.plot([best[col]["t"]], [best[col]["value"]], marker="*", markersize=12,
                        color=line.get_color(), linestyle="none")
        ax.set_xlabel("diffusion time t")
        ax.set_ylabel("silhouette score" if cols == ["silhouette"] else "test accuracy")
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
