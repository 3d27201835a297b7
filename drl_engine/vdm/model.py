"""VDMModel: the noise schedule, the eps-network and (for `vdm_vae`) the encoder.

    gamma(t)                        schedule.build_schedule(spec.vdm)
    eps_hat(z_t, gamma_t, z)        z_t + ScoreUNet on concat(z_t, Fourier features of z_t),
                                    time input 1000 (gamma_t - gamma_min) / (gamma_max - gamma_min)
                                    through the sinusoidal embedding, plus code_mlp(z) (vdm_vae)
    q(z | x) = N(mu, exp(logvar))   Encoder (the U-Net's downsampling half + three dense layers),
                                    static: z does not depend on t

The eps-network is conditioned on gamma_t rather than t, as in VDM: what it must undo is the
noise level, and with a learned schedule t names a different level as training goes on.
Data live in VDM's space: pixel k -> 2 (k + 1/2) / 256 - 1 (`pixels.py`). The losses are in
`losses.py`; this file only builds the networks and wires them up.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import square_image_shape
from ..nets import Encoder, ScoreUNet
from ..spec import VDM_KINDS, ExperimentSpec, SpecError
from .fourier import fourier_channels, with_fourier_features
from .pixels import pixels_to_centres
from .schedule import build_schedule

# The scale DDPM gives its integer time steps; the sinusoidal embedding is tuned to it.
NOISE_CONDITION_SCALE = 1000.0


class VDMModel(nn.Module):
    # The code (vdm_vae) is the same for every t: encode once, probe once.
    time_conditioned = False

    def __init__(self, spec: ExperimentSpec, image_shape: tuple[int, int, int]):
        super().__init__()
        kind = spec.model.kind
        if kind not in VDM_KINDS:
            raise SpecError(f"model.kind: VDMModel builds {list(VDM_KINDS)}, got {kind!r}")
        channels, size = square_image_shape(image_shape)

        self.spec = spec
        self.kind = kind
        self.image_shape = (channels, size, size)
        self.gamma_min = spec.vdm.gamma_min
        self.gamma_max = spec.vdm.gamma_max
        self.fourier_exponents = tuple(spec.vdm.fourier_exponents)
        self.schedule = build_schedule(spec.vdm)
        self.eps_net = ScoreUNet(channels, size, spec.model, "sinusoidal",
                                 in_channels=fourier_channels(channels, self.fourier_exponents),
                                 with_code=kind == "vdm_vae")
        self.encoder = (Encoder(channels, size, spec.model, "sinusoidal", time_conditioned=False,
                                variational=True) if kind == "vdm_vae" else None)
        # VDM's output layer starts at zero, so that eps_hat = z_t (the base measure, below)
        # at initialisation: already the right answer at high noise levels.
        nn.init.zeros_(self.eps_net.conv_out.weight)
        nn.init.zeros_(self.eps_net.conv_out.bias)

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    @property
    def variational(self) -> bool:
        return self.has_encoder

    @property
    def latent_dim(self) -> int:
        return self.spec.model.latent_dim if self.has_encoder else 0

    @property
    def data_dims(self) -> int:
        """D = C * H * W, the dimension bits/dim divides by."""
        c, h, w = self.image_shape
        return c * h * w

    def pixels_to_model_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> VDM's bin centres in [-1, 1]."""
        return pixels_to_centres(pixels)

    def model_range_to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped (for images and reference grids)."""
        return ((x.to(torch.float32) + 1.0) / 2.0).clamp_(0.0, 1.0)

    def encoder_output(self, x: torch.Tensor, t: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z | x), each (B, latent_dim); t is ignored (z is t-independent)."""
        if self.encoder is None:
            raise ValueError("model.kind 'vdm' has no encoder: it has no code z")
        mean, logvar = self.encoder(x, None)
        return mean, logvar

    def encode(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """The deterministic code used downstream: the mean of q(z | x), (B, latent_dim)."""
        mean, _ = self.encoder_output(x)
        return mean

    def noise_condition(self, gamma: torch.Tensor) -> torch.Tensor:
        """What the eps-network's time embedding gets: 1000 (gamma - gamma_min) / (gamma_max - gamma_min).

        gamma_min and gamma_max are the configured values (the learned endpoints' starting
        point), as in VDM's code: a fixed scale for the network's input, whatever the schedule
        learns."""
        return NOISE_CONDITION_SCALE * (gamma - self.gamma_min) / (self.gamma_max - self.gamma_min)

    def predict_eps(self, z_t: torch.Tensor, gamma_t: torch.Tensor, code: torch.Tensor | None
                    ) -> torch.Tensor:
        """eps_hat(z_t; gamma_t, z) = z_t + U-Net(...), same shape as z_t; code None for `vdm`.

        The network predicts the correction to z_t (VDM's "base measure"): as gamma_t grows,
        z_t -> eps, so at high noise the identity is already nearly optimal.
        """
        if (code is None) == self.has_encoder:
            raise ValueError(f"code: model.kind {self.kind!r} "
                             + ("needs a code z" if self.has_encoder else "takes no code"))
        h = with_fourier_features(z_t, self.fourier_exponents)
        return z_t + self.eps_net(h, self.noise_condition(gamma_t), code)
