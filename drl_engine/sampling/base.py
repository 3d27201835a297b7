"""The sampler interface: one object per draw, stepped from t_init down to t = 0.

As diffusers' schedulers are, a sampler is built for one run and keeps on itself whatever a
multistep method carries from one step to the next (DPM-Solver++'s previous denoised
estimate); the driver (`run.sample`) only draws the start and calls `step(x, i)` for
i = 0 .. n - 1, reporting progress after each.

A sampler class states:
- `name`: its word in `spec.SamplerName` and its key in `registry.SAMPLERS`;
- `stochastic`: whether it draws noise after the start (else the start fixes the output);
- `time_steps(sde, spec)`: the n times t_0 = t_init > ... > t_{n-1} its steps start from
  (score-SDE's even grid unless it overrides it); step i goes from t_i to t_{i+1}, the last
  from t_{n-1} to t = 0, returning the noise-free estimate of x_0;
- `planned_nfe(n, spec)`: the score evaluations a run of n steps takes (None when the method
  chooses its own steps); every run also counts them (`CountedScore.calls`).

Between steps x is always x_t, the SDE's own variable (x_t = a(t) x_0 + std(t) eps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..sde import SDE
from ..spec import SampleSpec
from .grid import check_t_init, time_grid
from .score import CountedScore


@dataclass
class SampleResult:
    images: torch.Tensor   # (B, C, H, W) in the model's data range (not clamped)
    nfe: int               # score-network evaluations per sample (counted)
    steps: int             # the sampler's steps (ode_adaptive: 2, the integration and denoising)
    seconds: float         # wall time of the draw, start included


class Sampler:
    """The base every sampler derives from: its run's pieces, its times, and small helpers."""

    name: ClassVar[str]
    stochastic: ClassVar[bool]

    def __init__(self, score: CountedScore, sde: SDE, spec: SampleSpec,
                 generator: torch.Generator | None):
        check_t_init(spec)
        self.score = score
        self.sde = sde
        self.spec = spec
        self.generator = generator
        self.times: list[float] = self.time_steps(sde, spec)

    @classmethod
    def time_steps(cls, sde: SDE, spec: SampleSpec) -> list[float]:
        """score-SDE's grid: n = round(steps t_init) times evenly spaced from t_init to eps."""
        return time_grid(spec).tolist()

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int | None:
        raise NotImplementedError

    @property
    def num_steps(self) -> int:
        return len(self.times)

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """x at times[i] -> x at times[i + 1], or the noise-free x_0 on the last step."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------

    def is_last(self, i: int) -> bool:
        return i == len(self.times) - 1

    def next_time(self, i: int) -> float:
        """t_{i+1}, or 0 after the last step."""
        return 0.0 if self.is_last(i) else self.times[i + 1]

    def t_batch(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """t as the (B,) float32 tensor the score function takes."""
        return torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
