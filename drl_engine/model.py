"""DRLModel: the score network, the encoder and the SDE that ties them together.

    z = E_phi(x0)            (static encoder)      or   E_phi(x0, t)   (time-conditioned)

`objective.parameterization: score` (the paper's):
    s_theta(x_t, t, z) = sde.score_from_output(ScoreUNet(x_t, sde.noise_condition(t), z), t)
VE uses a Gaussian-Fourier embedding of log sigma(t), VP a sinusoidal embedding of 999 t.

`objective.parameterization: edm` (edm.py has the formulas): with a = a(t), sigma =
std(t) / a and x = x_t / a, the U-Net is EDM's F in
    D(x; sigma, z) = c_skip x + c_out F(c_in x, c_noise, z),   s_theta = (a D - x_t) / std^2
and both the U-Net and a time-conditioned encoder see c_noise = ln(sigma) / 4 through a
Gaussian-Fourier embedding (for either SDE). sigma_data is a buffer, saved with the weights:
the spec's value, or (None) the training data's std, set by `fit_to_data` before training.

Either way the model exposes a score and a denoised estimate of x_0, so encoding, probes,
the samplers and the service do not depend on the parameterization.
The losses live in `objective.py`; this file only builds the networks and wires them up.
"""

from __future__ import annotations

import torch
from torch import nn

from .datasets import from_model_range, to_model_range
from .edm import edm_coefficients, edm_denoised, edm_score, sigma_data_of_pixels
from .nets import Encoder, ScoreUNet
from .sde import _bcast, build_sde
from .spec import SCORE_MODEL_KINDS, ExperimentSpec, SpecError

SUPPORTED_KINDS = SCORE_MODEL_KINDS
# Parameter names of the encoder (frozen in the decoder fine-tune phase) start with this.
ENCODER_PREFIX = "encoder."


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
        self.parameterization = spec.objective.parameterization
        if self.parameterization == "edm":
            # NaN until fit_to_data (or the checkpoint) sets it: a model used unfitted fails loudly.
            sigma_data = spec.objective.sigma_data
            self.register_buffer("sigma_data", torch.tensor(
                float("nan") if sigma_data is None else float(sigma_data)))
        time_embedding = ("fourier" if spec.sde.kind == "ve" or self.parameterization == "edm"
                          else "sinusoidal")
        self.score_net = ScoreUNet(channels, size, model, time_embedding)
        self.encoder = Encoder(channels, size, model, time_embedding,
                               time_conditioned=self.time_conditioned, variational=self.variational)

    def fit_to_data(self, pixels: torch.Tensor) -> None:
        """Set what the model takes from its training data (uint8 images) before training:
        EDM's sigma_data when the spec leaves it None. Draws no random numbers."""
        if self.parameterization == "edm" and self.spec.objective.sigma_data is None:
            self.sigma_data.fill_(sigma_data_of_pixels(pixels, self.sde.data_range))

    def noise_condition(self, t: torch.Tensor) -> torch.Tensor:
        """What the time embeddings see: the SDE's (score) or EDM's c_noise = ln(sigma) / 4."""
        if self.parameterization == "edm":
            return self.sde.edm_sigma(t).log() / 4
        return self.sde.noise_condition(t)

    def encoder_output(self, x0: torch.Tensor, t: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) for vdrl, (z, None) for drl. t (B,) is used only when time-conditioned."""
        if not self.time_conditioned:
            return self.encoder(x0, None)
        if t is None:
            raise ValueError("t: a time-conditioned encoder needs t, got None")
        return self.encoder(x0, self.noise_condition(t))

    def encode(self, x0: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """The deterministic code used downstream, (B, latent_dim): the mean for vdrl.

        A float t is broadcast over the batch; a static encoder ignores t.
        """
        if self.time_conditioned and t is not None and (not torch.is_tensor(t) or t.dim() == 0):
            t = torch.full((x0.shape[0],), float(t), device=x0.device, dtype=x0.dtype)
        mean, _ = self.encoder_output(x0, t if self.time_conditioned else None)
        return mean

    def _edm_network(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(x = x_t / a, sigma, F(c_in x, c_noise, z), sigma_data) for the edm parameterization."""
        sigma_data = float(self.sigma_data)
        if sigma_data != sigma_data:   # NaN: never fitted
            raise RuntimeError("objective.sigma_data: the edm model was not fitted to data "
                               "(call fit_to_data before training, or set objective.sigma_data)")
        x = xt / _bcast(self.sde.mean_coeff(t), xt)
        sigma = self.sde.edm_sigma(t)
        _, _, c_in, c_noise = edm_coefficients(sigma, sigma_data)
        return x, sigma, self.score_net(_bcast(c_in, x) * x, c_noise, z), sigma_data

    def score(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """s_theta(x_t, t, z): the SDE's map of the raw output (score), or (a D - x_t) / std^2 (edm)."""
        if self.parameterization == "edm":
            x, sigma, out, sigma_data = self._edm_network(xt, t, z)
            return edm_score(x, sigma, out, sigma_data) / _bcast(self.sde.mean_coeff(t), xt)
        out = self.score_net(xt, self.sde.noise_condition(t), z)
        return self.sde.score_from_output(out, t)

    def denoise(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The estimate of x_0 in the data range: EDM's D (edm), or Tweedie's formula
        (x_t + std^2 s_theta) / a for the score parameterization."""
        if self.parameterization == "edm":
            x, sigma, out, sigma_data = self._edm_network(xt, t, z)
            return edm_denoised(x, sigma, out, sigma_data)
        std, a = self.sde.marginal_std(t), self.sde.mean_coeff(t)
        return (xt + _bcast(std ** 2, xt) * self.score(xt, t, z)) / _bcast(a, xt)
