"""The encoder E_phi(x0) or E_phi(x0, t): the U-Net's downsampling half and three dense layers.

    h = DownPath(x0, cond)              cond = temb(noise_cond) if time-conditioned, else None
    out = Dense(SiLU(Dense(SiLU(Dense(flatten(SiLU(GN(h))))))))
DRL: out is the code z (latent_dim). VDRL: out has 2 * latent_dim entries, split into the
mean and log-variance of q(z | x0) = N(mean, exp(logvar)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ModelSpec
from .layers import TimeEmbedding, default_init_, group_norm
from .unet import DownPath, TimeEmbeddingKind


class Encoder(nn.Module):
    def __init__(self, image_channels: int, image_size: int, spec: ModelSpec,
                 time_embedding: TimeEmbeddingKind, time_conditioned: bool, variational: bool):
        super().__init__()
        self.time_conditioned = time_conditioned
        self.variational = variational
        self.latent_dim = spec.latent_dim
        emb_dim = 4 * spec.base_channels
        self.temb = TimeEmbedding(time_embedding, spec.base_channels, emb_dim) if time_conditioned else None
        self.down = DownPath(image_channels, image_size, spec, emb_dim if time_conditioned else None,
                             "encoder")
        self.norm_out = group_norm(self.down.out_channels)
        flat = self.down.out_channels * self.down.out_side ** 2
        out_dim = spec.latent_dim * (2 if variational else 1)
        self.head = default_init_(nn.Sequential(
            nn.Linear(flat, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, out_dim)))

    def forward(self, x0: torch.Tensor, noise_cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) for VDRL, (z, None) for DRL. A static encoder ignores noise_cond."""
        cond = None
        if self.temb is not None:
            if noise_cond is None:
                raise ValueError("Encoder: a time-conditioned encoder needs noise_cond, got None")
            cond = self.temb(noise_cond)
        h, _ = self.down(x0, cond)
        out = self.head(F.silu(self.norm_out(h)).flatten(1))
        if self.variational:
            mean, logvar = out.chunk(2, dim=1)
            return mean, logvar
        return out, None
