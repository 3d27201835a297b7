"""From numpy arrays read out of files to an `ImageDataset`: limits, seeded splits, one copy."""

from __future__ import annotations

import numpy as np
import torch

from .core import ImageDataset


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, test_indices): a seeded permutation, the first round(n * f) go to test.

    At least one image lands on each side (n >= 2), so a tiny file still has a test split.
    """
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _first(a: np.ndarray | None, limit: int | None) -> np.ndarray | None:
    return a if a is None or limit is None else a[:limit]


def build_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray | None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    num_classes: int | None = None,
) -> ImageDataset:
    """Keep the first `train_limit` / `test_limit` rows, then copy into torch tensors.

    Images are uint8 (N, C, H, W) arrays (often read-only views of a decompressed file);
    slicing before the copy means a limited run never holds the full split twice.
    """
    def images(x: np.ndarray, limit: int | None) -> torch.Tensor:
        return torch.from_numpy(np.array(_first(x, limit), order="C", copy=True))

    def labels(y: np.ndarray | None, limit: int | None) -> torch.Tensor | None:
        return None if y is None else torch.from_numpy(_first(y, limit).astype(np.int64))

    return ImageDataset(
        name=name,
        x_train=images(x_train, train_limit),
        y_train=labels(y_train, train_limit),
        x_test=images(x_test, test_limit),
        y_test=labels(y_test, test_limit),
        declared_num_classes=num_classes,
    )
