"""The in-memory dataset every loader returns, its error type, and the pixel-range maps.

A dataset is held whole, as one uint8 tensor per split (N, C, H, W); the trainer moves it to
the device once and draws batches by index, so there is no per-item Python work and no
DataLoader. Pixels stay uint8 until a batch is drawn, then `to_model_range` maps them to the
SDE's data range ([0, 1] for VE, [-1, 1] for VP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


class DatasetError(ValueError):
    """A missing, corrupt or malformed dataset; the message names the file and what was expected."""


@dataclass
class ImageDataset:
    """Train and test images (uint8, N x C x H x W, contiguous) with optional int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    # Set by loaders that know the label set (MNIST: 10); otherwise inferred from the labels,
    # so that a small train_limit that happens to miss the last class does not shrink it.
    declared_num_classes: int | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise DatasetError(f"{self.name}: x_{split} must be a uint8 tensor (N, C, H, W), "
                                   f"got {x.dtype} with shape {tuple(x.shape)}")
            if y is not None and (y.dtype != torch.int64 or y.shape != x.shape[:1]):
                raise DatasetError(f"{self.name}: y_{split} must be an int64 tensor of shape "
                                   f"({x.shape[0]},), got {y.dtype} with shape {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(f"{self.name}: train images {tuple(self.x_train.shape[1:])} and "
                               f"test images {tuple(self.x_test.shape[1:])} differ in shape")
        if (self.y_train is None) != (self.y_test is None):
            raise DatasetError(f"{self.name}: labels must be given for both splits or for neither")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for an unlabelled dataset."""
        if self.declared_num_classes is not None:
            return self.declared_num_classes
        if self.y_train is None or self.y_test is None:
            return None
        top = max((int(y.max()) for y in (self.y_train, self.y_test) if y.numel()), default=-1)
        return top + 1

    def to(self, device: torch.device | str) -> ImageDataset:
        """The whole dataset as tensors on `device` (pixels stay uint8: 4x less memory)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                       x_test=move(self.x_test), y_test=move(self.y_test))


def _check_range(data_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range: expected (lo, hi) with hi > lo, got {tuple(data_range)}")
    return lo, hi


def to_model_range(x_uint8: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """Pixels 0..255 -> float32 in [lo, hi]: `lo + (hi - lo) * x / 255`."""
    if x_uint8.dtype != torch.uint8:
        # Catches a batch that was already scaled once: scaling it again would silently
        # squash it to ~[lo, lo + 1/255].
        raise ValueError(f"to_model_range: expected a uint8 tensor of pixel values 0..255, "
                         f"got {x_uint8.dtype}")
    lo, hi = _check_range(data_range)
    return x_uint8.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)


def from_model_range(x: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """Model-range values back to [0, 1] floats, `clamp((x - lo) / (hi - lo), 0, 1)`.

    Clamped because generated samples overshoot the data range; [0, 1] is what image
    writers and feature extractors expect.
    """
    lo, hi = _check_range(data_range)
    return ((x.to(torch.float32) - lo) / (hi - lo)).clamp_(0.0, 1.0)
