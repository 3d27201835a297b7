"""The baselines' decoder D(z): the encoder run backwards, i.e. the U-Net's up-sampling half.

    h = reshape(Dense(SiLU(Dense(SiLU(Dense(z))))), (C_last, s_last, s_last))   (mirrors Encoder.head)
    h = UpPath(h): the U-Net's middle and up-sampling half, without skips   (nets/unet.py)
    out = conv_out(SiLU(GN(h)))                                                 (B, C, H, W)

No skip connections (there is no input to skip from) and no conditioning vector: AE, VAE and
DAE decode from z alone. Channel counts and sides are those of `DownPath` for the same model
section, so encoder and decoder are the two halves of one shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.layers import default_init_, group_norm, level_sides
from ..nets.unet import UpPath, attention_sides
from ..spec import ModelSpec


class Decoder(nn.Module):
    def __init__(self, image_channels: int, image_size: int, spec: ModelSpec):
        super().__init__()
        nf = spec.base_channels
        emb_dim = 4 * nf
        attn = attention_sides(spec, image_size, "decoder")
        self.sides = level_sides(image_size, len(spec.channel_mult))   # DownPath's sides
        ch = nf * spec.channel_mult[-1]
        self.in_channels, self.in_side = ch, self.sides[-1]
        self.head = default_init_(nn.Sequential(
            nn.Linear(spec.latent_dim, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, ch * self.in_side ** 2)))

        self.up_path = UpPath(spec, ch, self.sides, attn, emb_dim=None)
        ch = self.up_path.out_channels
        self.norm_out = group_norm(ch)
        self.conv_out = default_init_(nn.Conv2d(ch, image_channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, self.in_channels, self.in_side, self.in_side)
        h = self.up_path(h, None)
        return self.conv_out(F.silu(self.norm_out(h)))
