"""The noise schedule gamma(t) = -log SNR(t) = log(sigma_t^2 / alpha_t^2), t in [0, 1].

The variance-preserving diffusion of VDM is
    alpha_t^2 = sigmoid(-gamma(t)),   sigma_t^2 = sigmoid(gamma(t)),   z_t = alpha_t x + sigma_t eps,
with gamma increasing from gamma_0 = gamma(0) (almost no noise) to gamma_1 = gamma(1) (almost
pure noise). Every schedule is written as its endpoints and a monotone shape s(t) from 0 to 1:
      gamma(t)  = gamma_0 + (gamma_1 - gamma_0) s(t),    s(0) = 0, s(1) = 1, s non-decreasing.

- `FixedLinearSchedule` (vdm.schedule 'fixed'): s(t) = t, gamma_0 = vdm.gamma_min and
  gamma_1 = vdm.gamma_max fixed.
- `LearnedSchedule`: s is the paper's monotone network (Kingma et al. 2021, appendix; VDM's
  `NoiseSchedule_NNet`), every weight used through its absolute value so each layer is
  non-decreasing in its input:
      l1(t)     = |w1| t + b1                                     (linear part)
      l2(t)     = |W3| (2 sigmoid(|W2| (2t - 1) + b2) - 1) / 1024  (sigmoid-gated, 1024 hidden)
      g(t)      = l1(t) + l2(t),         s(t) = (g(t) - g(0)) / (g(1) - g(0)).
  vdm.schedule 'learned' (the paper's) also learns the endpoints: gamma_0 and
  gamma_1 = gamma_0 + exp(log_gamma_span) are parameters, initialised at vdm.gamma_min and
  vdm.gamma_max; the exponential keeps gamma_1 > gamma_0, so gamma stays increasing.
  'learned_fixed_ends' learns s alone and keeps the endpoints at the configured values (what
  'learned' meant before the endpoints were learned; checkpoint.py reads such checkpoints so).

Why the two parts are trained differently (the paper's section 5): the continuous-time ELBO
depends on the schedule only through gamma_0 and gamma_1, so the endpoints are trained on the
ELBO like every other parameter, while the shape in between only changes the variance of the
loss estimate, and `losses.VarianceGradient` trains s to minimise that. `gamma_and_derivative`
keeps the two apart: it attaches the variance gradient to s(t) and s'(t) only.

`gamma_and_derivative` gives gamma(t) and gamma'(t), the derivative from autograd, as the
diffusion loss needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..spec import VDM_KINDS, VDMSpec


class FixedLinearSchedule(nn.Module):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t: s(t) = t, fixed ends; no parameters."""

    def __init__(self, gamma_min: float, gamma_max: float):
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)

    def endpoints(self) -> tuple[Tensor, Tensor]:
        """(gamma(0), gamma(1)) as float32 scalars."""
        return torch.tensor(self.gamma_min), torch.tensor(self.gamma_max)

    def shape(self, t: Tensor) -> Tensor:
        return t.clone()   # a new tensor: gamma_and_derivative differentiates it with respect to t

    def forward(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


class MonotoneLinear(nn.Linear):
    """A dense layer with weights |W|: non-decreasing in every input (VDM's DenseMonotone)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight.abs(), self.bias)


class LearnedSchedule(nn.Module):
    """The monotone network's shape s(t) between endpoints that are learned
    (`learn_endpoints`, the paper's) or fixed at gamma_min, gamma_max (see module doc)."""

    def __init__(self, gamma_min: float, gamma_max: float, features: int = 1024,
                 learn_endpoints: bool = True):
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        self.features = features
        self.learn_endpoints = learn_endpoints
        if learn_endpoints:
            self.gamma_0 = nn.Parameter(torch.tensor(self.gamma_min))
            self.log_gamma_span = nn.Parameter(torch.tensor(math.log(self.gamma_max - self.gamma_min)))
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

    def endpoints(self) -> tuple[Tensor, Tensor]:
        """(gamma(0), gamma(1)): parameters when learned (gamma_1 > gamma_0 by construction),
        else the configured constants."""
        if not self.learn_endpoints:
            return torch.tensor(self.gamma_min), torch.tensor(self.gamma_max)
        return self.gamma_0, self.gamma_0 + self.log_gamma_span.exp()

    def unnormalised(self, t: Tensor) -> Tensor:
        """g(t) = l1(t) + l2(t) for t of shape (B,), before rescaling."""
        t = t[:, None]
        gated = 2.0 * torch.sigmoid(self.l2_in(2.0 * t - 1.0)) - 1.0
        return (self.l1(t) + self.l2_out(gated) / self.features)[:, 0]

    def shape(self, t: Tensor) -> Tensor:
        """s(t) = (g(t) - g(0)) / (g(1) - g(0)), from 0 at t = 0 to 1 at t = 1."""
        ends = self.unnormalised(torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype))
        # g is non-decreasing, so g(1) - g(0) >= 0; it is 0 only if every weight is 0, and the
        # floor keeps that degenerate case finite instead of dividing by zero.
        span = (ends[1] - ends[0]).clamp_min(1e-12)
        return (self.unnormalised(t) - ends[0]) / span

    def forward(self, t: Tensor) -> Tensor:
        gamma_0, gamma_1 = (e.to(t) for e in self.endpoints())
        return gamma_0 + (gamma_1 - gamma_0) * self.shape(t)


def build_schedule(spec: VDMSpec) -> nn.Module:
    if spec.schedule in ("learned", "learned_fixed_ends"):
        return LearnedSchedule(spec.gamma_min, spec.gamma_max, spec.schedule_features,
                               learn_endpoints=spec.schedule == "learned")
    if spec.schedule == "fixed":
        return FixedLinearSchedule(spec.gamma_min, spec.gamma_max)
    raise ValueError("vdm.schedule: expected 'learned', 'learned_fixed_ends' or 'fixed', "
                     f"got {spec.schedule!r}")


def gamma_and_derivative(schedule: nn.Module, t: Tensor, create_graph: bool,
                         attach_to_shape: Callable[[Tensor], Tensor] | None = None
                         ) -> tuple[Tensor, Tensor]:
    """(gamma(t), gamma'(t)) for t of shape (B,), in float32; gamma' by autograd.

    gamma = gamma_0 + (gamma_1 - gamma_0) s(t) and gamma' = (gamma_1 - gamma_0) s'(t). Each
    s(t_b) depends on t_b alone, so the gradient of sum_b s(t_b) with respect to t is the
    vector of derivatives. `create_graph=True` keeps s' differentiable in the schedule's
    parameters (training); under torch.no_grad the derivative is still computed.
    `attach_to_shape` (VarianceGradient.attach) wraps s(t) and s'(t) before the endpoints
    scale them, so the variance gradient reaches the shape's parameters and not the endpoints,
    which get the gradient of the bound.
    Runs with autocast off: gamma' is a small difference of large terms, and bf16 would lose it.
    """
    with torch.enable_grad(), torch.autocast(device_type=t.device.type, enabled=False):
        t = t.detach().to(torch.float32).requires_grad_(True)
        shape = schedule.shape(t)
        (dshape,) = torch.autograd.grad(shape.sum(), t, create_graph=create_graph)
    if not create_graph:
        shape, dshape = shape.detach(), dshape.detach()
    if attach_to_shape is not None:
        shape, dshape = attach_to_shape(shape), attach_to_shape(dshape)
    gamma_0, gamma_1 = (e.to(t.device, torch.float32) for e in schedule.endpoints())
    span = gamma_1 - gamma_0
    return gamma_0 + span * shape, span * dshape


def saved_spec_as_trained(spec_data: dict, weights: dict) -> dict:
    """A checkpoint's spec (as saved, JSON data) with the schedule it was trained with.

    Before the endpoints were learned, 'learned' meant a learned shape between fixed
    endpoints; such a checkpoint has no `schedule.gamma_0` weight. It is read as
    'learned_fixed_ends', which builds exactly the network it holds, so it loads (and
    samples, evaluates) as before; resuming it under 'learned' is refused as a spec change.
    """
    vdm = spec_data.get("vdm") or {}
    if (spec_data.get("model", {}).get("kind") in VDM_KINDS
            and vdm.get("schedule", "learned") == "learned"
            and "schedule.gamma_0" not in weights):
        return {**spec_data, "vdm": {**vdm, "schedule": "learned_fixed_ends"}}
    return spec_data
