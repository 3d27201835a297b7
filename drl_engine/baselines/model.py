"""BaselineModel: the paper's comparison methods (appendix E, figure 4) on DRL's own networks.

Every baseline uses DRL's encoder E (`nets.Encoder`: the U-Net's down-sampling half and three
dense layers to `latent_dim`) and the SDE's perturbation kernel, so "t" names the same noise
level as in DRL: x_t = mean(t) x0 + std(t) eps (VE: x0 + sigma(t) eps).

    kind          networks                           code at t (what is probed)
    ae            E, Decoder D                       E(x0)                   t-independent
    vae           E -> (mu, logvar), D               mu(x0)                  t-independent
    dae           E, D                               E(u_t), u_t = unit(x_t) noise drawn per t
    cdae          E(x0, t) time-conditioned,         E(x0, t)                deterministic
                  ScoreUNet denoiser D(u_t, t, z)
    simclr_gauss  E, projection head g               E(u_t)                  noise drawn per t

unit(x_t) = x_t / sqrt(mean(t)^2 + std(t)^2) is what a network sees of a noisy image: a fixed
per-t rescaling (the identity for VP, where mean^2 + std^2 = 1; 1 / sqrt(1 + sigma^2) for VE)
that keeps the input at unit scale when sigma(t) reaches 50. It loses no information.

For dae and simclr_gauss the code of an image at t needs a noise draw; `encode` takes it from
a generator the caller seeds (`encode.encode_at` seeds one per t from evaluate.seed), drawn
on the CPU so the same seed gives the same codes on every device. The losses are in
`losses.py`; this file only builds the networks and wires them up.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import OnSDEDataRange, square_image_shape
from ..nets import Encoder, ScoreUNet
from ..nets.layers import default_init_
from ..sde import _bcast, build_sde
from ..spec import BASELINE_KINDS, ExperimentSpec, SpecError
from .decoder import Decoder

DECODING_KINDS = ("ae", "vae", "dae")   # a Decoder D(z)
NOISY_CODE_KINDS = ("dae", "simclr_gauss")   # code at t = E(unit(x_t)): needs a noise draw


class BaselineModel(OnSDEDataRange, nn.Module):
    has_encoder = True

    def __init__(self, spec: ExperimentSpec, image_shape: tuple[int, int, int]):
        super().__init__()
        kind = spec.model.kind
        if kind not in BASELINE_KINDS:
            raise SpecError(f"model.kind: BaselineModel builds {list(BASELINE_KINDS)}, got {kind!r}")
        channels, size = square_image_shape(image_shape)
        model = spec.model

        self.spec = spec
        self.kind = kind
        self.image_shape = (channels, size, size)
        self.sde = build_sde(spec.sde)
        self.variational = kind == "vae"
        self.noisy_code = kind in NOISY_CODE_KINDS
        # Whether the code depends on t (encode_at encodes once when it does not).
        self.time_conditioned = kind in ("dae", "cdae", "simclr_gauss")
        time_embedding = "fourier" if spec.sde.kind == "ve" else "sinusoidal"
        self.encoder = Encoder(channels, size, model, time_embedding,
                               time_conditioned=kind == "cdae", variational=self.variational)
        self.decoder = Decoder(channels, size, model) if kind in DECODING_KINDS else None
        self.denoiser = ScoreUNet(channels, size, model, time_embedding) if kind == "cdae" else None
        emb_dim = 4 * model.base_channels
        # SimCLR's projection head: the contrastive loss acts on g(h), the code is h.
        self.projection = (default_init_(nn.Sequential(
            nn.Linear(model.latent_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)))
            if kind == "simclr_gauss" else None)

    def _times(self, t: torch.Tensor | float | None, x0: torch.Tensor) -> torch.Tensor:
        if t is None:
            raise ValueError(f"t: the {self.kind} code depends on the noise level, got None")
        if not torch.is_tensor(t) or t.dim() == 0:
            return torch.full((x0.shape[0],), float(t), device=x0.device, dtype=x0.dtype)
        return t

    def noisy_input(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """unit(x_t) = (mean(t) x0 + std(t) eps) / sqrt(mean(t)^2 + std(t)^2)."""
        mean, std = self.sde.marginal_prob(x0, t)
        return (mean + _bcast(std, x0) * eps) / _bcast(self._input_scale(t), x0)

    def _input_scale(self, t: torch.Tensor) -> torch.Tensor:
        """sqrt(mean(t)^2 + std(t)^2), shape (B,): the marginal_prob of a unit x0 gives mean(t)."""
        ones = torch.ones(t.shape[0], 1, device=t.device, dtype=t.dtype)
        mean, std = self.sde.marginal_prob(ones, t)
        return torch.sqrt(mean[:, 0] ** 2 + std ** 2)

    def encoder_output(self, x: torch.Tensor, t: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) for vae, (h, None) otherwise; t reaches only cdae's time-conditioned E."""
        if self.kind == "cdae":
            return self.encoder(x, self.sde.noise_condition(self._times(t, x)))
        return self.encoder(x, None)

    def encode(self, x0: torch.Tensor, t: torch.Tensor | float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The code used downstream, (B, latent_dim); see the table in the module docstring.

        ae/vae ignore t. dae/simclr_gauss need t and a CPU `generator` for the noise of x_t.
        """
        if not self.time_conditioned:
            return self.encoder_output(x0, None)[0]
        t = self._times(t, x0)
        if self.kind == "cdae":
            return self.encoder_output(x0, t)[0]
        if generator is None:
            raise ValueError(f"generator: the {self.kind} code at t is E(x_t), which needs a "
                             "seeded generator for the noise")
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
        return self.encoder_output(self.noisy_input(x0, t, eps), None)[0]

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor, t: float, generator: torch.Generator) -> torch.Tensor:
        """x0_hat in the model's data range: D(E(x0)) (ae; vae from the mean), D(E(u_t)) (dae),
        D(u_t, t, E(x0, t)) (cdae). simclr_gauss has no decoder."""
        if self.kind == "simclr_gauss":
            raise ValueError("model.kind 'simclr_gauss' has no decoder: nothing to reconstruct")
        tt = self._times(t, x0)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
        if self.kind == "cdae":
            z = self.encoder_output(x0, tt)[0]
            return self.denoiser(self.noisy_input(x0, tt, eps), self.sde.noise_condition(tt), z)
        source = self.noisy_input(x0, tt, eps) if self.kind == "dae" else x0
        return self.decoder(self.encoder_output(source, None)[0])
