"""The score network s_theta(x_t, t, z): score-SDE's DDPM++ U-Net conditioned on a code z.

Conditioning (paper appendix D): every residual block receives the same vector
    cond = temb(noise_cond) + code_mlp(z)
where temb is the time embedding (Gaussian-Fourier of log sigma(t) for VE, sinusoidal of
999 t for VP) followed by two dense layers to emb_dim = 4 * base_channels, and code_mlp is
`code_mlp_layers` dense layers (SiLU between) from latent_dim to emb_dim.

Layout for base 64, channel_mult [1, 2, 2], 2 blocks, attention at 7 (the default spec is
the paper's smaller MNIST net: base 32, [1, 2], 2 blocks, no attention: levels 28 and 14):
    conv_in 28x28x64
    down:  [Res, Res] 28 -> Down -> [Res, Res] 14 -> Down -> [Res+Attn, Res+Attn] 7
    mid:   Res, Attn, Res                                   (attention only if 7 is configured)
    up:    [Res x3 (+skips)] + Attn 7 -> Up -> [Res x3] 14 -> Up -> [Res x3] 28
    out:   GN, SiLU, conv_out -> same shape as x
The output is raw: the SDE's `score_from_output` turns it into a score.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ModelSpec
from .layers import (AttnBlock, Downsample, ResBlock, TimeEmbedding, Upsample, default_init_,
                     group_norm, level_sides)

TimeEmbeddingKind = Literal["fourier", "sinusoidal"]


def attention_sides(spec: ModelSpec, image_size: int, who: str) -> set[int]:
    """The configured attention sides that this image size reaches.

    A side the network never reaches is ignored with a warning rather than an error: the
    default spec is sized for 28x28 (attention at 7), and the same model section is reused on
    16x16 and 32x32 data.
    """
    sides = level_sides(image_size, len(spec.channel_mult))
    unreachable = sorted(set(spec.attn_resolutions) - set(sides))
    if unreachable:
        warnings.warn(f"model.attn_resolutions: {unreachable} never occur in the {who} for "
                      f"{image_size}x{image_size} images (feature-map sides {sides}); "
                      "no attention is placed there", stacklevel=3)
    return set(spec.attn_resolutions) & set(sides)


def code_mlp(latent_dim: int, emb_dim: int, layers: int) -> nn.Sequential:
    """`layers` dense layers latent_dim -> emb_dim -> ... -> emb_dim with SiLU between."""
    mods: list[nn.Module] = []
    in_dim = latent_dim
    for i in range(layers):
        if i:
            mods.append(nn.SiLU())
        mods.append(nn.Linear(in_dim, emb_dim))
        in_dim = emb_dim
    return default_init_(nn.Sequential(*mods))


class DownPath(nn.Module):
    """The U-Net's downsampling half, shared by the score network and the encoder.

    conv_in, then per level `num_res_blocks` ResBlocks (each followed by attention when the
    level's side is in attn_resolutions) and a stride-2 Downsample between levels.
    forward returns the last feature map and every intermediate one (the skip connections);
    `skip_channels` lists their channel counts in the same order.
    emb_dim None builds unconditioned blocks (static encoder).
    """

    def __init__(self, image_channels: int, image_size: int, spec: ModelSpec,
                 emb_dim: int | None, who: str):
        super().__init__()
        nf = spec.base_channels
        self.sides = level_sides(image_size, len(spec.channel_mult))
        self.attn_sides = attention_sides(spec, image_size, who)
        attn = self.attn_sides
        self.conv_in = default_init_(nn.Conv2d(image_channels, nf, 3, padding=1))
        self.levels = nn.ModuleList()
        skip_channels = [nf]
        ch = nf
        for level, mult in enumerate(spec.channel_mult):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attns = nn.ModuleList()
            for _ in range(spec.num_res_blocks):
                stage.blocks.append(ResBlock(ch, nf * mult, emb_dim, spec.dropout, spec.conditioning))
                ch = nf * mult
                if self.sides[level] in attn:
                    stage.attns.append(AttnBlock(ch, self.sides[level]))
                skip_channels.append(ch)
            stage.downsample = Downsample(ch) if level < len(spec.channel_mult) - 1 else None
            if stage.downsample is not None:
                skip_channels.append(ch)
            self.levels.append(stage)
        self.skip_channels = tuple(skip_channels)
        self.out_channels = ch
        self.out_side = self.sides[-1]

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.conv_in(x)
        skips = [h]
        for stage in self.levels:
            for i, block in enumerate(stage.blocks):
                h = block(h, cond)
                if len(stage.attns):
                    h = stage.attns[i](h)
                skips.append(h)
            if stage.downsample is not None:
                h = stage.downsample(h)
                skips.append(h)
        return h, skips


class UpPath(nn.Module):
    """The U-Net's middle (Res, Attn, Res) and up-sampling half, shared by the score network
    and the baselines' decoder.

    Per level, deepest first: num_res_blocks + 1 ResBlocks (then attention when the level's
    side is configured) and an Upsample to the next level's side. With `skip_channels` (the
    score U-Net) each block first concatenates one skip connection of the DownPath, popped
    from the end; without (the decoder, which has no input to skip from) nothing is
    concatenated. emb_dim None builds unconditioned blocks.
    """

    def __init__(self, spec: ModelSpec, in_channels: int, sides: list[int], attn_sides: set[int],
                 emb_dim: int | None, skip_channels: tuple[int, ...] | None = None):
        super().__init__()
        nf = spec.base_channels
        self.sides = list(sides)
        skip_ch = list(skip_channels or ())
        self.uses_skips = skip_channels is not None

        def res(in_ch: int, out_ch: int) -> ResBlock:
            return ResBlock(in_ch, out_ch, emb_dim, spec.dropout, spec.conditioning)

        ch = in_channels
        self.mid_res1 = res(ch, ch)
        self.mid_attn = AttnBlock(ch, sides[-1]) if sides[-1] in attn_sides else None
        self.mid_res2 = res(ch, ch)
        self.up = nn.ModuleList()
        for level in reversed(range(len(spec.channel_mult))):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            for _ in range(spec.num_res_blocks + 1):
                out_ch = nf * spec.channel_mult[level]
                stage.blocks.append(res(ch + (skip_ch.pop() if self.uses_skips else 0), out_ch))
                ch = out_ch
            stage.attn = AttnBlock(ch, sides[level]) if sides[level] in attn_sides else None
            stage.upsample = Upsample(ch) if level > 0 else None
            stage.target_side = sides[level - 1] if level > 0 else None
            self.up.append(stage)
        assert not skip_ch, "every skip connection is consumed"
        self.out_channels = ch

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None,
                skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = self.mid_res1(h, cond)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_res2(h, cond)
        for stage in self.up:
            for block in stage.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1) if self.uses_skips else h, cond)
            if stage.attn is not None:
                h = stage.attn(h)
            if stage.upsample is not None:
                # Resize to the next level's side: undoes odd-sized downsampling (7 -> 14, 4 -> 7).
                side = stage.target_side
                h = stage.upsample(h, (side, side))
        return h


class ScoreUNet(nn.Module):
    """forward(x, noise_cond (B,), code (B, latent_dim)) -> raw output (B, image_channels, H, W).

    Two options serve the VDM decoder: `in_channels` > image_channels when the input carries
    extra feature channels (Fourier features of the image), and `with_code=False` for an
    unconditional network (cond = temb(noise_cond) alone, forward takes code=None).
    """

    def __init__(self, image_channels: int, image_size: int, spec: ModelSpec,
                 time_embedding: TimeEmbeddingKind, *, in_channels: int | None = None,
                 with_code: bool = True):
        super().__init__()
        self.image_channels = image_channels
        self.in_channels = image_channels if in_channels is None else in_channels
        if self.in_channels < image_channels:
            raise ValueError(f"in_channels: expected at least image_channels ({image_channels}), "
                             f"got {self.in_channels}")
        self.image_size = image_size
        self.latent_dim = spec.latent_dim if with_code else 0
        nf = spec.base_channels
        emb_dim = 4 * nf

        self.temb = TimeEmbedding(time_embedding, nf, emb_dim)
        self.code_mlp = code_mlp(spec.latent_dim, emb_dim, spec.code_mlp_layers) if with_code else None
        self.down = DownPath(self.in_channels, image_size, spec, emb_dim, "score U-Net")
        self.up_path = UpPath(spec, self.down.out_channels, self.down.sides, self.down.attn_sides,
                              emb_dim, self.down.skip_channels)
        ch = self.up_path.out_channels

        self.norm_out = group_norm(ch)
        self.conv_out = default_init_(nn.Conv2d(ch, image_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, noise_cond: torch.Tensor,
                code: torch.Tensor | None = None) -> torch.Tensor:
        if self.code_mlp is None:
            if code is not None:
                raise ValueError("code: this network is unconditional (with_code=False), got a code")
            cond = self.temb(noise_cond)
        else:
            if code is None or code.dim() != 2 or code.shape != (x.shape[0], self.latent_dim):
                got = None if code is None else tuple(code.shape)
                raise ValueError(f"code: expected shape ({x.shape[0]}, {self.latent_dim}) "
                                 f"(batch, model.latent_dim), got {got}")
            cond = self.temb(noise_cond) + self.code_mlp(code)

        h, skips = self.down(x, cond)
        h = self.up_path(h, cond, skips)
        return self.conv_out(F.silu(self.norm_out(h)))
