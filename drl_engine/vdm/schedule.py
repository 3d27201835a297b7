"""The noise schedule gamma(t) = -log SNR(t) = log(sigma_t^2 / alpha_t^2), t in [0, 1].

The variance-preserving diffusion of VDM is
    alpha_t^2 = sigmoid(-gamma(t)),   sigma_t^2 = sigmoid(gamma(t)),   z_t = alpha_t x + sigma_t eps,
with gamma increasing from gamma_min (t = 0, almost no noise) to gamma_max (t = 1, almost
pure noise).

- `FixedLinearSchedule`: gamma(t) = gamma_min + (gamma_max - gamma_min) t.
- `LearnedSchedule`: the paper's monotone network (Kingma et al. 2021, appendix; VDM's
  `NoiseSchedule_NNet`), every weight used through its absolute value so each layer is
  non-decreasing in its input:
      l1(t)     = |w1| t + b1                                     (linear part)
      l2(t)     = |W3| (2 sigmoid(|W2| (2t - 1) + b2) - 1) / 1024  (sigmoid-gated, 1024 hidden)
      g(t)      = l1(t) + l2(t)
  and rescaled so that the endpoints are exactly the configured ones:
      gamma(t)  = gamma_min + (gamma_max - gamma_min) (g(t) - g(0)) / (g(1) - g(0)).
  With the endpoints fixed, the continuous-time ELBO does not depend on the shape in between
  (it depends on the schedule only through SNR(0) and SNR(1)); the shape only changes the
  variance of the loss estimate, and `losses.VarianceGradient` trains it to minimise that.

`gamma_and_derivative` gives gamma(t) and gamma'(t), the derivative from autograd, as the
diffusion loss needs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..spec import VDMSpec


class FixedLinearSchedule(nn.Module):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t; no parameters."""

    def __init__(self, gamma_min: float, gamma_max: float):
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


class MonotoneLinear(nn.Linear):
    """A dense layer with weights |W|: non-decreasing in every input (VDM's DenseMonotone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight.abs(), self.bias)


class LearnedSchedule(nn.Module):
    """The monotone network g(t) = l1(t) + l2(t), rescaled to [gamma_min, gamma_max] (see module doc)."""

    def __init__(self, gamma_min: float, gamma_max: float, features: int = 1024):
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        self.features = features
        self.l1 = MonotoneLinear(1, 1)
        self.l2_in = MonotoneLinear(1, features)
        self.l2_out = MonotoneLinear(features, 1, bias=False)
        # VDM's initialisation: l1 is the linear schedule, the gated part starts near zero
        # (normal weights with std 0.01, zero biases), so training starts from 'fixed'.
        with torch.no_grad():
            self.l1.weight.fill_(self.gamma_max - self.gamma_min)
            self.l1.bias.fill_(self.gamma_min)
            nn.init.normal_(self.l2_in.weight, std=0.01)
            nn.init.zeros_(self.l2_in.bias)
            nn.init.normal_(self.l2_out.weight, std=0.01)

    def unnormalised(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) = l1(t) + l2(t) for t of shape (B,), before rescaling."""
        t = t[:, None]
        gated = 2.0 * torch.sigmoid(self.l2_in(2.0 * t - 1.0)) - 1.0
        return (self.l1(t) + self.l2_out(gated) / self.features)[:, 0]

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        ends = self.unnormalised(torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype))
        # g is non-decreasing, so g(1) - g(0) >= 0; it is 0 only if every weight is 0, and the
        # floor keeps that degenerate case finite instead of dividing by zero.
        span = (ends[1] - ends[0]).clamp_min(1e-12)
        return self.gamma_min + (self.gamma_max - self.gamma_min) * (self.unnormalised(t) - ends[0]) / span


def build_schedule(spec: VDMSpec) -> nn.Module:
    if spec.schedule == "learned":
        return LearnedSchedule(spec.gamma_min, spec.gamma_max, spec.schedule_features)
    if spec.schedule == "fixed":
        return FixedLinearSchedule(spec.gamma_min, spec.gamma_max)
    raise ValueError(f"vdm.schedule: expected 'learned' or 'fixed', got {spec.schedule!r}")


def gamma_and_derivative(schedule: nn.Module, t: torch.Tensor, create_graph: bool
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma(t), gamma'(t)) for t of shape (B,), in float32; gamma' by autograd.

    Each gamma(t_b) depends on t_b alone, so the gradient of sum_b gamma(t_b) with respect to
    t is the vector of derivatives. `create_graph=True` keeps gamma' differentiable in the
    schedule's parameters (training); under torch.no_grad the derivative is still computed.
    Runs with autocast off: gamma' is a small difference of large terms, and bf16 would lose it.
    """
    with torch.enable_grad(), torch.autocast(device_type=t.device.type, enabled=False):
        t = t.detach().to(torch.float32).requires_grad_(True)
        gamma = schedule(t)
        (dgamma,) = torch.autograd.grad(gamma.sum(), t, create_graph=create_graph)
    if not create_graph:
        gamma, dgamma = gamma.detach(), dgamma.detach()
    return gamma, dgamma
