"""Samplers for the reverse-time SDE (Song et al. 2021), conditioned on a code through the score.

The sampler knows nothing of codes: it takes a score function of (x, t) with the code
already bound, because a time-conditioned encoder needs z = E(x0, t) at every step's t while a
grid or prior code stays fixed; the caller builds that closure.

Time grid. `SampleSpec.steps` = N covers the full [eps, 1]; starting at t_init takes
n = round(N * t_init) steps over t_0 = t_init > t_1 > ... > t_{n-1} = eps (evenly spaced). Step
i moves from t_i to t_{i+1}, and the last one from t_{n-1} = eps to t_n = 0: it returns the
noise-free mean (score-SDE's noise removal) and never evaluates the score at t = 0.

Samplers (score-SDE's formulas; `sde.discretize(x, t, dt)` gives the ancestral (f, G)):
- "pc": predictor-corrector. At each t, `corrector_steps` Langevin corrector steps, then a
  reverse-diffusion predictor step.
    corrector: alpha = 1 (VE) or 1 - beta(t) dt (VP);
               step = 2 alpha (snr ||z|| / ||score||)^2   (per-sample norms, batch-averaged)
               x_mean = x + step * score;  x = x_mean + sqrt(2 step) z
    predictor: x_mean = x - f + G^2 score;  x = x_mean + G z
- "euler_maruyama": the reverse SDE dx = [f(x, t) - g(t)^2 score] dt + g(t) dw with dt < 0:
    x_mean = x - [f - g^2 score] |dt|;  x = x_mean + g sqrt(|dt|) z
- "ode": the probability-flow ODE dx/dt = f(x, t) - 1/2 g(t)^2 score, integrated with Heun's
  method (explicit trapezoid, second order) from t_i to t_{i+1}; the last step, eps -> 0, is
  score-SDE's denoising step (the reverse-diffusion predictor's mean), as in its ODE sampler.

Score evaluations per sample (`SampleResult.nfe`): pc n (1 + corrector_steps),
euler_maruyama n, ode 2 (n - 1) + 1. Everything runs under torch.no_grad() in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sde import SDE, VPSDE, _bcast
from .spec import SampleSpec

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (x (B,C,H,W), t (B,)) -> score
ProgressFn = Callable[[int, int], None]                          # (steps done, steps in all)


@dataclass
class SampleResult:
    images: torch.Tensor   # (B, C, H, W) in the model's data range (not clamped)
    nfe: int               # score-network evaluations per sample
    steps: int             # predictor steps taken


def num_steps(spec: SampleSpec) -> int:
    """n = round(steps * t_init), at least 1 (a half rounds up, not to even)."""
    return max(1, math.floor(spec.steps * spec.t_init + 0.5))


def time_grid(spec: SampleSpec) -> torch.Tensor:
    """The n float32 times at which the score is evaluated: evenly spaced from t_init to eps."""
    if spec.t_init <= spec.eps:
        raise ValueError(f"sample.t_init ({spec.t_init}) must exceed sample.eps ({spec.eps}), "
                         "where sampling ends")
    return torch.linspace(spec.t_init, spec.eps, num_steps(spec), dtype=torch.float64).float()


def initial_sample(sde: SDE, shape: tuple[int, ...], spec: SampleSpec,
                   generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """x at t_init, drawn from `spec.prior`.

    gaussian:         N(0, s^2 I), s = sigma(t_init) for VE, 1 for VP (`sde.prior_std`).
    uniform_gaussian: u ~ U(data range), x = mean of p_0t(. | u) at t_init + std(t_init) * eps
                      (paper appendix I: a data-range start makes t_init < 1 cheap and safe).
    """
    shape = _check_shape(shape)
    device = _resolve_device(generator, device)
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


def sample(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], spec: SampleSpec,
           generator: torch.Generator | None = None, device=None,
           progress: ProgressFn | None = None, x_init: torch.Tensor | None = None) -> SampleResult:
    """Draw `shape[0]` samples by integrating the reverse SDE (or ODE) from t_init to 0.

    `score_fn(x, t)` must return a tensor shaped like x; `progress(done, total)` is called
    after every step. The same generator state gives the same images. `x_init`, when given,
    is the state at t_init (e.g. a real image noised to t_init, for the denoising swap)
    instead of a draw from `spec.prior`; it must have `shape`.
    """
    if spec.sampler not in _STEPS:
        raise ValueError(f"sample.sampler: expected one of {sorted(_STEPS)}, got {spec.sampler!r}")
    step = _STEPS[spec.sampler]
    times = time_grid(spec).tolist()
    score = _CountingScore(score_fn)
    device = _resolve_device(generator, device)
    ctx = _Ctx(score, sde, spec, generator)
    with torch.no_grad():
        x = (initial_sample(sde, shape, spec, generator, device) if x_init is None
             else _given_start(x_init, shape, device))
        for i, t_now in enumerate(times):
            final = i == len(times) - 1
            t_next = 0.0 if final else times[i + 1]
            t = torch.full((x.shape[0],), t_now, device=device, dtype=torch.float32)
            x = step(ctx, x, t, t_now - t_next, t_next, final)
            if progress is not None:
                progress(i + 1, len(times))
    return SampleResult(images=x, nfe=score.calls, steps=len(times))


# ---------------------------------------------------------------------------------------------
# One step of each sampler: (ctx, x, t (B,), dt > 0, t_next, final) -> x at t_next. On the
# final step it returns the noise-free mean.


@dataclass
class _Ctx:
    score: _CountingScore
    sde: SDE
    spec: SampleSpec
    generator: torch.Generator | None

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)


def _pc_step(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor, dt: float, t_next: float,
             final: bool) -> torch.Tensor:
    # score-SDE runs the corrector before the predictor at each t.
    for _ in range(ctx.spec.corrector_steps):
        x = _langevin_corrector(ctx, x, t, dt)
    x_mean, g = _reverse_diffusion_mean(ctx, x, t, dt)
    return x_mean if final else x_mean + _bcast(g, x) * ctx.noise_like(x)


def _euler_maruyama_step(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor, dt: float, t_next: float,
                         final: bool) -> torch.Tensor:
    """x_mean = x - [f - g^2 score] dt;  x = x_mean + g sqrt(dt) z   (dt > 0, time runs back)."""
    f, g = ctx.sde.sde(x, t)
    g2 = _bcast(g ** 2, x)
    x_mean = x - (f - g2 * ctx.score(x, t)) * dt
    return x_mean if final else x_mean + _bcast(g, x) * math.sqrt(dt) * ctx.noise_like(x)


def _ode_step(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor, dt: float, t_next: float,
              final: bool) -> torch.Tensor:
    """Heun: d1 = v(x, t); x~ = x - d1 dt; x' = x - (d1 + v(x~, t_next)) dt / 2."""
    if final:
        # Heun's second evaluation would land on t = 0, where the score is singular;
        # score-SDE's ODE sampler finishes with the reverse-diffusion predictor's mean.
        return _reverse_diffusion_mean(ctx, x, t, dt)[0]
    d1 = _probability_flow_drift(ctx, x, t)
    x_euler = x - d1 * dt
    d2 = _probability_flow_drift(ctx, x_euler, torch.full_like(t, t_next))
    return x - 0.5 * (d1 + d2) * dt


_STEPS = {"pc": _pc_step, "euler_maruyama": _euler_maruyama_step, "ode": _ode_step}


# ---------------------------------------------------------------------------------------------
# The pieces the steps share.


def _reverse_diffusion_mean(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor,
                            dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor: (f, G) = discretize(x, t, dt); x_mean = x - f + G^2 score.

    Returns x_mean and G (shape (B,)); the caller adds G z unless this is the last step.
    """
    f, g = ctx.sde.discretize(x, t, dt)
    return x - f + _bcast(g ** 2, x) * ctx.score(x, t), g


def _langevin_corrector(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor, dt: float) -> torch.Tensor:
    """One Langevin step at fixed t, its size set by the signal-to-noise ratio `spec.snr`.

    alpha = 1 (VE) or 1 - beta(t) dt (VP, score-SDE's 1 - beta_i);
    step = 2 alpha (snr ||z|| / ||score||)^2, the norms taken per sample and averaged over
    the batch (as score-SDE does); x = x + step * score + sqrt(2 step) z.
    """
    score = ctx.score(x, t)
    z = ctx.noise_like(x)
    if isinstance(ctx.sde, VPSDE):
        # Floored where VPSDE.discretize caps beta(t) dt at 0.999: with few steps (dt ~ 1/20)
        # beta(t) dt passes 1 near t = 1, and a negative alpha would make sqrt(2 step) NaN.
        alpha = (1.0 - ctx.sde.beta(t) * dt).clamp(min=1e-3)
    else:
        alpha = torch.ones_like(t)
    score_norm = score.flatten(1).norm(dim=1).mean()
    noise_norm = z.flatten(1).norm(dim=1).mean()
    step = 2.0 * alpha * (ctx.spec.snr * noise_norm / score_norm) ** 2
    return x + _bcast(step, x) * score + _bcast(torch.sqrt(2.0 * step), x) * z


def _probability_flow_drift(ctx: _Ctx, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)."""
    f, g = ctx.sde.sde(x, t)
    return f - 0.5 * _bcast(g ** 2, x) * ctx.score(x, t)


class _CountingScore:
    """Wraps the caller's score function: counts evaluations and checks what comes back."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        score = self.score_fn(x, t)
        if not isinstance(score, torch.Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"score_fn: expected a tensor of shape {tuple(x.shape)} (that of x), "
                             f"got {got}")
        # A network run under autocast may answer in half precision; the sampler stays float32.
        return score.float()


def _given_start(x_init: torch.Tensor, shape: tuple[int, ...], device) -> torch.Tensor:
    shape = _check_shape(shape)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init: expected shape {shape}, got {tuple(x_init.shape)}")
    return x_init.to(device=device, dtype=torch.float32)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"shape: expected (batch, ...) of positive ints, e.g. (B, C, H, W), "
                         f"got {shape}")
    return shape


def _resolve_device(generator: torch.Generator | None, device) -> torch.device:
    """The device to sample on: `device`, else the generator's, else the CPU."""
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator: it lives on {generator.device} but device is {device}; "
                         "draw noise with a generator on the sampling device")
    return device
