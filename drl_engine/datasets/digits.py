"""scikit-learn's bundled 8x8 digits, upsampled to 16x16: a dataset that needs no files.

Upsampling is bilinear (align_corners=False, i.e. each output pixel a convex combination of
its nearest input pixels): nearest-neighbour would turn every pixel into a 2x2 block whose
hard edges belong to the 8x8 sensor grid, not to the digit, and a score network would spend
capacity modelling them. Values stay within 0..16 and are scaled by 255/16 and rounded.
16x16 halves cleanly down a U-Net (16 -> 8 -> 4).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from .arrays import build_dataset, seeded_split
from .core import ImageDataset

IMAGE_SIZE = 16
# Fixed in code so that every run, on every machine, sees the same split.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def digits_file() -> Path:
    """The file scikit-learn's `load_digits` reads: bundled with it, no download."""
    return Path(str(resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 1, 16, 16) images 0..255 and int64 labels 0..9."""
    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32))[:, None]   # 0..16
    big = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                        align_corners=False)
    pixels = (big * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)
    return pixels.numpy(), digits.target.astype(np.int64)


def load_digits_dataset(train_limit: int | None = None,
                        test_limit: int | None = None) -> ImageDataset:
    """Seeded 80/20 split of the upsampled digits (1,438 train, 359 test)."""
    images, labels = digits_images()
    train_idx, test_idx = seeded_split(len(images), TEST_FRACTION, SPLIT_SEED)
    return build_dataset("digits", images[train_idx], labels[train_idx], images[test_idx],
                         labels[test_idx], train_limit=train_limit, test_limit=test_limit,
                         num_classes=10)
