"""Image grids (PNG), probe-curve and code-usage plots; files only, never a window.

Plots draw on matplotlib's Agg canvas directly (`FigureCanvasAgg`), without pyplot, so no GUI
backend is ever loaded and the process-wide backend setting is left alone.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .code_usage_table import CodeUsage
from .probes import ProbeTable


def _as_numpy(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):   # a torch tensor, without importing torch here
        images = images.detach().cpu().float().numpy()
    return np.asarray(images, dtype=np.float32)


def image_grid(images: Any, nrow: int | None = None, padding: int = 2,
               pad_value: float = 0.0, caption_height: int = 0) -> np.ndarray:
    """Tile a batch into one picture, as torchvision's make_grid does.

    images: (B, C, H, W) floats in [0, 1] (torch or numpy), C = 1 or 3; VP samples in
    [-1, 1] must be mapped to [0, 1] first. Values outside [0, 1] are clipped. `nrow` images
    per row (default ceil(sqrt(B))), `padding` pixels of `pad_value` between and around them,
    and `caption_height` more below each row (room for `captioned_grid_figure`'s labels).
    Returns uint8 of shape (rows * (H + caption_height + padding) + padding,
    nrow * (W + padding) + padding), with a trailing 3 for colour.
    """
    x = _as_numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty batch of shape (B, C, H, W) with C 1 or "
                         f"3, got shape {x.shape}")
    if padding < 0 or caption_height < 0:
        raise ValueError(f"padding, caption_height: expected >= 0, got {padding}, {caption_height}")
    b, c, h, w = x.shape
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(b))
    if ncol < 1:
        raise ValueError(f"nrow: expected >= 1, got {nrow}")
    ncol = min(ncol, b)
    nrows = math.ceil(b / ncol)
    row_height = h + caption_height + padding
    grid = np.full((c, nrows * row_height + padding, ncol * (w + padding) + padding),
                   pad_value, dtype=np.float32)
    for i in range(b):
        top = padding + (i // ncol) * row_height
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


GRID_PADDING = 2          # image_grid's default
# A captioned grid is drawn at least this many screen pixels per image, so that a caption
# under a 16-px digit is readable.
MIN_CAPTIONED_CELL = 48
CAPTION_DPI = 100


def captioned_grid_figure(images: Any, nrow: int, captions: Sequence[str],
                          colours: Sequence[str], title: str | None = None) -> Figure:
    """`image_grid(images, nrow)` with one caption under each image, in its colour, and an
    optional title above; on a black background (the grid's padding) at a whole-pixel scale.

    The grid is the same picture `save_image_grid` writes, with `caption_height` rows of
    padding added below each row of images for the captions."""
    b, _, h, w = _as_numpy(images).shape
    if not len(captions) == len(colours) == b:
        raise ValueError(f"captions: expected one caption and one colour per image ({b}), got "
                         f"{len(captions)} captions and {len(colours)} colours")
    caption_height = max(8, h // 2)
    pixels = image_grid(images, nrow, GRID_PADDING, caption_height=caption_height)
    height, width = pixels.shape[:2]
    scale = max(1, MIN_GRID_WIDTH // width, math.ceil(MIN_CAPTIONED_CELL / (w + GRID_PADDING)))
    # Title lines wrapped to the figure's width (about 7 screen pixels per character at 9 pt).
    title_lines = textwrap.wrap(title, max(20, width * scale // 7)) if title else []
    line_px = 16
    header_px = line_px * len(title_lines) + (8 if title_lines else 0)
    fig_h_px = height * scale + header_px
    fig = Figure(figsize=(width * scale / CAPTION_DPI, fig_h_px / CAPTION_DPI), dpi=CAPTION_DPI,
                 facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height * scale / fig_h_px))
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_axis_off()
    ncol = min(nrow, b)
    font_pt = 0.6 * caption_height * scale * 72 / CAPTION_DPI
    for i, (caption, colour) in enumerate(zip(captions, colours)):
        x = GRID_PADDING + (i % ncol) * (w + GRID_PADDING) + (w - 1) / 2
        y = GRID_PADDING + (i // ncol) * (h + caption_height + GRID_PADDING) + h + caption_height / 2
        ax.text(x, y, caption, color=colour, ha="center", va="center", fontsize=font_pt,
                fontweight="bold")
    for j, line in enumerate(title_lines):
        fig.text(0.5, 1 - (4 + line_px * (j + 0.5)) / fig_h_px, line, color="white",
                 ha="center", va="center", fontsize=9)
    return fig


def save_captioned_grid(images: Any, path: str | Path, nrow: int, captions: Sequence[str],
                        colours: Sequence[str], title: str | None = None) -> None:
    """`captioned_grid_figure` as a PNG (parent folders are created)."""
    fig = captioned_grid_figure(images, nrow, captions, colours, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=CAPTION_DPI, facecolor="black")


def probe_curves_figure(table: ProbeTable, title: str | None = None,
                        chance: float | None = None) -> Figure:
    """Probe results (test values) against t: accuracies (svc_*, linear, mlp) in one panel,
    the silhouette in a second. A star marks each curve's best t (chosen on the validation
    split, named in the legend); the untrained control (random_init) is drawn dashed in its
    curve's colour, so a curve it matches is seen to be no learned gain; `chance` (the
    accuracy of guessing, 1 / the number of classes) is a dotted grey line on the accuracy
    panel. Legends stand beside their panel, never over a curve."""
    if not table.rows or not table.columns:
        raise ValueError("probe table: nothing to plot (no rows or no columns)")
    accuracy = [c for c in table.columns if c != "silhouette"]
    panels = [cols for cols in (accuracy, ["silhouette"] if "silhouette" in table.columns else [])
              if cols]
    best = table.best()
    ts = [row["t"] for row in table.rows]
    control_ts = [row["t"] for row in table.control_rows]

    fig = Figure(figsize=(7.5 * len(panels), 4.0), layout="constrained")
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
            if table.control_rows:
                ax.plot(control_ts, [row.get(col, math.nan) for row in table.control_rows],
                        linestyle="--", linewidth=1, color=line.get_color(),
                        gid=f"random_init:{col}")
        if table.control_rows:
            # One legend entry for every dashed curve, rather than one per column.
            ax.plot([], [], linestyle="--", linewidth=1, color="grey",
                    label="dashed: random_init (untrained)")
        if chance is not None and cols != ["silhouette"]:
            ax.axhline(chance, linestyle=":", linewidth=1.2, color="black", gid="chance",
                       label=f"chance ({chance:.3g})")
        ax.set_xlabel("diffusion time t")
        ax.set_ylabel("silhouette score" if cols == ["silhouette"] else "test accuracy")
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        fig.suptitle(title)
    return fig


def plot_probe_curves(table: ProbeTable, path: str | Path, title: str | None = None,
                      chance: float | None = None) -> None:
    """`probe_curves_figure` as a PNG (parent folders are created)."""
    fig = probe_curves_figure(table, title, chance)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def plot_code_usage(series: Sequence[CodeUsage], path: str | Path, title: str | None = None) -> None:
    """PNG of the code-usage diagnostic against t, one curve per checkpoint (darker = later):
    the share of the shuffled-code error that the true code removes (code_gain /
    error_shuffled) and, with labels, the share the class alone removes (class_gain /
    error_shuffled). Shares, not the absolute gains of code_usage.csv: the errors span orders of
    magnitude over t (~std(t)^2 near t = 0), and a share of 0 (code unused) to 1 (the code
    removes all of the error) reads the same at every t."""
    if not series or not any(usage.rows for usage in series):
        raise ValueError("code usage: nothing to plot (no checkpoints or no rows)")
    labelled = any(row.class_gain is not None for usage in series for row in usage.rows)
    panels = [("code_gain", "code_gain / error_shuffled")]
    if labelled:
        panels.append(("class_gain", "class_gain / error_shuffled"))
    colours = colormaps["viridis_r"](np.linspace(0.15, 1.0, len(series)))

    def share(row: Any, column: str) -> float:
        gain = getattr(row, column)
        return math.nan if gain is None or row.error_shuffled == 0 else gain / row.error_shuffled

    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (column, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        for usage, colour in zip(series, colours):
            ax.plot(usage.t_values, [share(row, column) for row in usage.rows], marker="o",
                    markersize=3, color=colour, label=f"step {usage.step}")
        ax.set_title(column)
        ax.set_xlabel("diffusion time t")
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
