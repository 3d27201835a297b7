"""`sample`: one draw from the reverse SDE or ODE, by the sampler `spec.sampler` names.

The sampler knows nothing of codes: it takes a score function of (x, t) with the code already
bound, because a time-conditioned encoder needs z = E(x0, t) at every step's t while a grid or
prior code stays fixed; the caller (generate.py) builds that closure. Everything runs under
torch.no_grad() in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..sde import SDE
from ..spec import SampleSpec
from .base import SampleResult
from .registry import sampler_class
from .score import CountedScore, ScoreFn
from .start import given_start, initial_sample, resolve_device

ProgressFn = Callable[[int, int], None]   # (steps done, steps in all)


def sample(score_fn: ScoreFn, sde: SDE, shape: tuple[int, ...], spec: SampleSpec,
           generator: torch.Generator | None = None, device=None,
           progress: ProgressFn | None = None, x_init: torch.Tensor | None = None) -> SampleResult:
    """Draw `shape[0]` samples from t_init to 0 with the sampler `spec.sampler`.

    `score_fn(x, t)` must return a tensor shaped like x; `progress(done, total)` is called
    after every step. The same generator state gives the same images. `x_init`, when given,
    is the state at t_init (e.g. a real image noised to t_init, for the denoising swap)
    instead of a draw from `spec.prior`; it must have `shape`. The result counts the score
    evaluations (NFE) and the seconds the draw took.
    """
    sampler_cls = sampler_class(spec.sampler)
    score = CountedScore(score_fn, sde)
    sampler = sampler_cls(score, sde, spec, generator)
    device = resolve_device(generator, device)
    start = time.perf_counter()
    with torch.no_grad():
        x = (initial_sample(sde, shape, spec, generator, device) if x_init is None
             else given_start(x_init, shape, device))
        for i in range(sampler.num_steps):
            x = sampler.step(x, i)
            if progress is not None:
                progress(i + 1, sampler.num_steps)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)   # the seconds are the GPU's work, not its queueing
    return SampleResult(images=x, nfe=score.calls, steps=sampler.num_steps,
                        seconds=time.perf_counter() - start)
