"""VDM's map between 8-bit pixel values and the model's data space [-1, 1].

Pixel k in {0, ..., 255} becomes the centre of its bin when [-1, 1] is cut into 256 equal
bins (VDM's `encode`):

    x = 2 (k + 1/2) / 256 - 1          (k = 0 -> -1 + 1/256, k = 255 -> 1 - 1/256)

so the discretised likelihood of the reconstruction term puts one Gaussian bump per bin
centre. Generated images are whole pixel values again, shown as k / 255 in [0, 1].
"""

from __future__ import annotations

import torch

VOCAB_SIZE = 256   # values an 8-bit pixel can take


def pixels_to_centres(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 bin centres 2 (k + 1/2) / 256 - 1."""
    if pixels.dtype != torch.uint8:
        # A float batch was scaled once already; scaling it again would be silently wrong.
        raise ValueError(f"pixels_to_centres: expected a uint8 tensor of pixel values 0..255, "
                         f"got {pixels.dtype}")
    return (2.0 * pixels.to(torch.float32) + 1.0) / VOCAB_SIZE - 1.0


def centres_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] -> the nearest bin's pixel value, int64 in 0..255 (inverse of the above)."""
    k = torch.floor((x.to(torch.float32) + 1.0) * (VOCAB_SIZE / 2.0))
    return k.clamp_(0, VOCAB_SIZE - 1).to(torch.int64)


def bin_centres(device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 bin centres, float32, in pixel order."""
    return pixels_to_centres(torch.arange(VOCAB_SIZE, dtype=torch.uint8, device=device))


def pixels_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 (any integer dtype) -> float32 k / 255 in [0, 1], for image grids."""
    return pixels.to(torch.float32) / 255.0
