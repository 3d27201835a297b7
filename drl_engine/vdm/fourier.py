"""Fourier features of the eps-network's input (Kingma et al. 2021, section 4 and appendix).

Likelihood depends on the lowest bits of every pixel, which a smooth network barely sees in
z_t at low noise: a change of one pixel value moves x by 2/256. Features at frequencies
2^n pi with n = 7, 8 turn such changes into changes of order one:

    features(z) = [sin(2^n pi z), cos(2^n pi z)  for n in exponents]     (per channel)

and the network's input is concat(z, features(z)) along channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fourier_channels(image_channels: int, exponents: Sequence[int]) -> int:
    """Input channels of the eps-network: C for z plus 2 C per exponent."""
    return image_channels * (1 + 2 * len(exponents))


def with_fourier_features(z: torch.Tensor, exponents: Sequence[int]) -> torch.Tensor:
    """concat(z, sin(2^n pi z), cos(2^n pi z) for n in exponents) along dim 1, (B, C', H, W)."""
    if not exponents:
        return z
    freqs = torch.tensor([math.pi * 2.0 ** n for n in exponents], device=z.device, dtype=z.dtype)
    # (B, C, H, W) -> (B, C, F, H, W) -> (B, C F, H, W): every channel's features together.
    h = (z[:, :, None] * freqs[None, None, :, None, None]).flatten(1, 2)
    return torch.cat([z, torch.sin(h), torch.cos(h)], dim=1)
