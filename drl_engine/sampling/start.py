"""Where sampling starts: x at t_init, drawn from one of the two priors or given by the caller."""

from __future__ import annotations

import torch

from ..sde import SDE, _bcast
from ..spec import SampleSpec


def initial_sample(sde: SDE, shape: tuple[int, ...], spec: SampleSpec,
                   generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """x at t_init, drawn from `spec.prior`.

    gaussian:         N(0, s^2 I), s = sigma(t_init) for VE, 1 for VP (`sde.prior_std`).
    uniform_gaussian: u ~ U(data range), x = mean of p_0t(. | u) at t_init + std(t_init) * eps
                      (paper appendix I: a data-range start makes t_init < 1 cheap and safe).
    """
    shape = check_shape(shape)
    device = resolve_device(generator, device)
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    if spec.prior == "gaussian":
        return noise * float(sde.prior_std(spec.t_init))
    if spec.prior == "uniform_gaussian":
        lo, hi = sde.data_range
        u = lo + (hi - lo) * torch.rand(shape, generator=generator, device=device,
                                        dtype=torch.float32)
        t = torch.full((shape[0],), spec.t_init, device=device, dtype=torch.float32)
        mean, std = sde.marginal_prob(u, t)
        return mean + _bcast(std, noise) * noise
    raise ValueError(f"sample.prior: expected 'gaussian' or 'uniform_gaussian', got {spec.prior!r}")


def given_start(x_init: torch.Tensor, shape: tuple[int, ...], device) -> torch.Tensor:
    """The caller's x at t_init (e.g. a real image noised to t_init), checked and in float32."""
    shape = check_shape(shape)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init: expected shape {shape}, got {tuple(x_init.shape)}")
    return x_init.to(device=device, dtype=torch.float32)


def check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"shape: expected (batch, ...) of positive ints, e.g. (B, C, H, W), "
                         f"got {shape}")
    return shape


def resolve_device(generator: torch.Generator | None, device) -> torch.device:
    """The device to sample on: `device`, else the generator's, else the CPU."""
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator: it lives on {generator.device} but device is {device}; "
                         "draw noise with a generator on the sampling device")
    return device
