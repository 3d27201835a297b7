"""Building blocks of the score U-Net and the encoder (score-SDE's DDPM++ layers, in PyTorch).

Every block that takes `cond` receives the same conditioning vector of size `emb_dim`:
embed(t) + MLP(z) in the score network, embed(t) in a time-conditioned encoder, nothing
(`cond=None`) in a static encoder.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import Conditioning


def default_init_(module: nn.Module) -> nn.Module:
    """score-SDE's default_init on every conv and dense layer inside `module`.

    variance_scaling(scale=1, 'fan_avg', 'uniform'), i.e. U(-b, b) with
    b = sqrt(3 / ((fan_in + fan_out) / 2)) (Glorot uniform), and zero biases. score-SDE also
    zero-initialises the last conv of each block (init_scale=0); we do not, so that the code z
    changes the output from the first step (a zero path would hide z until the weights grow).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with score-SDE's min(C // 4, 32) groups, lowered until it divides C."""
    groups = min(max(channels // 4, 1), 32)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (NCSN++'s time embedding, used on log sigma(t)).

    emb(x) = [sin(2 pi x W), cos(2 pi x W)],  W ~ N(0, scale^2 I) drawn once and never trained.
    Output size 2 * size.
    """

    def __init__(self, size: int, scale: float = 16.0):
        super().__init__()
        # A buffer, not a parameter: fixed, yet saved in checkpoints and moved with .to().
        self.register_buffer("W", torch.randn(size) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x[:, None].to(self.W.dtype) * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """DDPM's transformer-style embedding of a scalar (used on 999 t for VP).

    freq_k = max_period ** (-k / (half - 1)), k = 0..half-1, half = dim // 2;
    emb(x) = [sin(x freq), cos(x freq)], zero-padded to `dim` when dim is odd.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device)
                      / max(half - 1, 1))
    args = x.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Noise condition -> emb_dim vector: the embedding followed by two dense layers.

    'fourier': GaussianFourierEmbedding(size) on log sigma(t) (VE, 2*size features);
    'sinusoidal': sinusoidal_embedding(., size) on 999 t (VP).
    temb = Dense(SiLU(Dense(embed(noise_cond))))
    """

    def __init__(self, kind: Literal["fourier", "sinusoidal"], size: int, emb_dim: int):
        super().__init__()
        if kind not in ("fourier", "sinusoidal"):
            raise ValueError(f"time_embedding: expected 'fourier' or 'sinusoidal', got {kind!r}")
        self.kind = kind
        self.size = size
        self.fourier = GaussianFourierEmbedding(size) if kind == "fourier" else None
        in_dim = 2 * size if kind == "fourier" else size
        self.mlp = default_init_(nn.Sequential(nn.Linear(in_dim, emb_dim), nn.SiLU(),
                                               nn.Linear(emb_dim, emb_dim)))

    def forward(self, noise_cond: torch.Tensor) -> torch.Tensor:
        if self.fourier is not None:
            emb = self.fourier(noise_cond)
        else:
            emb = sinusoidal_embedding(noise_cond, self.size)
        return self.mlp(emb)


class ResBlock(nn.Module):
    """DDPM++ residual block with the conditioning vector injected after the first conv.

    h = conv1(SiLU(GN0(x)))
    'bias':        h = h + Dense(SiLU(cond))                       (per-channel, the paper's way)
                   h = GN1(h)
    'scale_shift': scale, shift = Dense(SiLU(cond))                (AdaGN, Diffusion Autoencoders)
                   h = GN1(h) * (1 + scale) + shift
    h = conv2(Dropout(SiLU(h)))
    out = (skip(x) + h) / sqrt(2)     (skip = 1x1 conv when the channel count changes)
    With emb_dim None the block takes no conditioning (static encoder).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, dropout: float = 0.0,
                 conditioning: Conditioning = "bias"):
        super().__init__()
        if conditioning not in ("bias", "scale_shift"):
            raise ValueError(f"conditioning: expected 'bias' or 'scale_shift', got {conditioning!r}")
        self.conditioning = conditioning
        self.norm0 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        cond_out = out_ch * (2 if conditioning == "scale_shift" else 1)
        self.cond_proj = nn.Linear(emb_dim, cond_out) if emb_dim is not None else None
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        default_init_(self)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm0(x)))
        if self.cond_proj is None:
            h = self.norm1(h)
        else:
            if cond is None:
                raise ValueError("ResBlock: this block is conditioned and needs `cond`, got None")
            c = self.cond_proj(F.silu(cond))[:, :, None, None]
            if self.conditioning == "bias":
                h = self.norm1(h + c)
            else:
                scale, shift = c.chunk(2, dim=1)
                h = self.norm1(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions (DDPM's AttnBlock).

    q, k, v = 1x1 convs of GN(x);  h = softmax(q k^T / sqrt(C)) v;  out = (x + proj(h)) / sqrt(2)
    `resolution` records the feature-map side it runs at.
    """

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        default_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hgt * wid).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)           # (B, HW, C), scale 1/sqrt(C)
        h = h.transpose(1, 2).reshape(b, c, hgt, wid)
        return (x + self.proj(h)) / math.sqrt(2.0)


class Downsample(nn.Module):
    """3x3 conv with stride 2 and padding 1: side s -> ceil(s / 2) (28 -> 14 -> 7 -> 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = default_init_(nn.Conv2d(channels, channels, 3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to `size` (default 2x), then a 3x3 conv.

    Resizing to the skip connection's size rather than always doubling undoes odd-sized
    downsampling exactly (4 -> 7, 7 -> 14).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = default_init_(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


def level_sides(image_size: int, levels: int) -> list[int]:
    """Feature-map side at each U-Net level: image_size, then ceil(s / 2) per Downsample."""
    sides = [image_size]
    for _ in range(levels - 1):
        sides.append((sides[-1] + 1) // 2)
    return sides
