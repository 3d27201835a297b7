"""The baselines' decoder D(z): the encoder run backwards, i.e. the U-Net's up-sampling half.

    h = reshape(Dense(SiLU(Dense(SiLU(Dense(z))))), (C_last, s_last, s_last))   (mirrors Encoder.head)
    h = Res(Attn(Res(h)))                                                       (the U-Net's middle)
    per level, deepest first: num_res_blocks + 1 ResBlocks (+ attention at the configured
        sides), then Upsample to the next level's side                          (ScoreUNet.up, no skips)
    out = conv_out(SiLU(GN(h)))                                                 (B, C, H, W)

No skip connections (there is no input to skip from) and no conditioning vector: AE, VAE and
DAE decode from z alone. Channel counts and sides are those of `DownPath` for the same model
section, so encoder and decoder are the two halves of one shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.layers import AttnBlock, ResBlock, Upsample, default_init_, group_norm, level_sides
from ..nets.unet import attention_sides
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

        def res(in_ch: int, out_ch: int) -> ResBlock:
            return ResBlock(in_ch, out_ch, None, spec.dropout, spec.conditioning)

        self.mid_res1 = res(ch, ch)
        self.mid_attn = AttnBlock(ch, self.in_side) if self.in_side in attn else None
        self.mid_res2 = res(ch, ch)
        self.up = nn.ModuleList()
        for level in reversed(range(len(spec.channel_mult))):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            for _ in range(spec.num_res_blocks + 1):
                out_ch = nf * spec.channel_mult[level]
                stage.blocks.append(res(ch, out_ch))
                ch = out_ch
            stage.attn = AttnBlock(ch, self.sides[level]) if self.sides[level] in attn else None
            stage.upsample = Upsample(ch) if level > 0 else None
            stage.target_side = self.sides[level - 1] if level > 0 else None
            self.up.append(stage)
        self.norm_out = group_norm(ch)
        self.conv_out = default_init_(nn.Conv2d(ch, image_channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, self.in_channels, self.in_side, self.in_side)
        h = self.mid_res1(h, None)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_res2(h, None)
        for stage in self.up:
            for block in stage.blocks:
                h = block(h, None)
            if stage.attn is not None:
                h = stage.attn(h)
            if stage.upsample is not None:
                side = stage.target_side
                h = stage.upsample(h, (side, side))
        return self.conv_out(F.silu(self.norm_out(h)))
