"""Downsampling a metric series for plotting: Largest-Triangle-Three-Buckets (LTTB).

LTTB (Steinarsson, "Downsampling Time Series for Visual Representation", 2013) keeps the
first and last points, splits the rest into `n_out - 2` equal buckets by index, and from each
bucket keeps the one point that makes the largest triangle with the point kept from the
previous bucket and the mean of the next bucket:

    area_j = |(x_a - x_avg)(y_j - y_a) - (x_a - x_j)(y_avg - y_a)| / 2

Unlike bucket means it returns real points (real steps and values), keeps spikes such as a
loss blow-up visible, and covers exactly the series' step range.
"""

from __future__ import annotations

import numpy as np


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices (increasing) of at most `n_out` points of the series (x sorted ascending)
    chosen by LTTB; every index when the series is no longer than `n_out`."""
    n = len(x)
    if n_out < 2:
        raise ValueError(f"n_out: expected at least 2 points, got {n_out}")
    if n <= n_out:
        return np.arange(n)
    if n_out == 2:
        return np.array([0, n - 1])
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    every = (n - 2) / (n_out - 2)
    chosen = np.empty(n_out, dtype=np.int64)
    chosen[0], chosen[-1] = 0, n - 1
    a = 0
    for i in range(n_out - 2):
        start = int(i * every) + 1
        stop = int((i + 1) * every) + 1
        next_start, next_stop = stop, min(int((i + 2) * every) + 1, n)
        avg_x = x[next_start:next_stop].mean()
        avg_y = y[next_start:next_stop].mean()
        area = np.abs((x[a] - avg_x) * (y[start:stop] - y[a]) - (x[a] - x[start:stop]) * (avg_y - y[a]))
        a = start + int(np.argmax(area))
        chosen[i + 1] = a
    return chosen
