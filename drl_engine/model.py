"""DRLModel: the score network, the encoder and the SDE that ties them together.

    z = E_phi(x0)            (static encoder)      or   E_phi(x0, t)   (time-conditioned)
    s_theta(x_t, t, z) = sde.score_from_output(ScoreUNet(x_t, sde.noise_condition(t), z), t)

VE uses a Gaussian-Fourier embedding of log sigma(t), VP a sinusoidal embedding of 999 t.
The losses live in `objective.py`; this file only builds the networks and wires them up.
"""

from __future__ import annotations

import torch
from torch import nn

from .datasets import from_model_range, to_model_range
from .nets import Encoder, ScoreUNet
from .sde import build_sde
from .spec import ExperimentSpec, SpecError

SUPPORTED_KINDS = ("drl", "vdrl")


def square_image_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of a (C, H, W) shape with H == W: every network here is built for
    square images (the U-Net's sides halve together)."""
    if len(image_shape) != 3 or image_shape[1] != image_shape[2] or min(image_shape) < 1:
        raise ValueError(f"image_shape: expected (C, H, W) with H == W, got {tuple(image_shape)}")
    return int(image_shape[0]), int(image_shape[1])


class OnSDEDataRange:
    """What every model working in an SDE's data range shares (DRLModel, the baselines):
    the code size and the map between uint8 pixels and that range. Needs `spec` and `sde`."""

    spec: ExperimentSpec

    @property
    def latent_dim(self) -> int:
        return self.spec.model.latent_dim

    def pixels_to_model_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the SDE's data range ([0, 1] for VE, [-1, 1] for VP)."""
        return to_model_range(pixels, self.sde.data_range)

    def model_range_to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The SDE's data range -> [0, 1], clamped (samples overshoot)."""
        return from_model_range(x, self.sde.data_range)


class DRLModel(OnSDEDataRange, nn.Module):
    has_encoder = True   # every drl/vdrl model encodes (the unconditional `vdm` does not)

    def __init__(self, spec: ExperimentSpec, image_shape: tuple[int, int, int]):
        super().__init__()
        model = spec.model
        if model.kind not in SUPPORTED_KINDS:
            raise SpecError(f"model.kind: no model for {model.kind!r}; expected one of {list(SUPPORTED_KINDS)}")
        channels, size = square_image_shape(image_shape)

        self.spec = spec
        self.image_shape = (channels, size, size)
        self.sde = build_sde(spec.sde)          # a plain object: no parameters, no state
        self.time_conditioned = model.encoder == "time_conditioned"
        self.variational = model.kind == "vdrl"
        time_embedding = "fourier" if spec.sde.kind == "ve" else "sinusoidal"
        self.score_net = ScoreUNet(channels, size, model, time_embedding)
        self.encoder = Encoder(channels, size, model, time_embedding,
                               time_conditioned=self.time_conditioned, variational=self.variational)

    def encoder_output(self, x0: torch.Tensor, t: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) for vdrl, (z, None) for drl. t (B,) is used only when time-conditioned."""
        if not self.time_conditioned:
            return self.encoder(x0, None)
        if t is None:
            raise ValueError("t: a time-conditioned encoder needs t, got None")
        return self.encoder(x0, self.sde.noise_condition(t))

    def encode(self, x0: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """The deterministic code used downstream, (B, latent_dim): the mean for vdrl.

        A float t is broadcast over the batch; a static encoder ignores t.
        """
        if self.time_conditioned and t is not None and (not torch.is_tensor(t) or t.dim() == 0):
            t = torch.full((x0.shape[0],), float(t), device=x0.device, dtype=x0.dtype)
        mean, _ = self.encoder_output(x0, t if self.time_conditioned else None)
        return mean

    def score(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """s_theta(x_t, t, z) = sde.score_from_output(score_net(x_t, noise_condition(t), z), t)."""
        out = self.score_net(xt, self.sde.noise_condition(t), z)
        return self.sde.score_from_output(out, t)
