"""Euler-Maruyama on the reverse SDE (Song et al. 2021), over the even grid:

    dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar,   stepped with dt = t_i - t_{i+1} > 0:
    x_mean = x - [f - g^2 score] dt;  x = x_mean + g sqrt(dt) z

The last step (eps -> 0) returns x_mean. NFE = n for n steps.
"""

from __future__ import annotations

import math

import torch

from ..sde import _bcast
from ..spec import SampleSpec
from .base import Sampler


class EulerMaruyama(Sampler):
    name = "euler_maruyama"
    stochastic = True

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int:
        return n

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        t_now = self.times[i]
        dt = t_now - self.next_time(i)
        t = self.t_batch(x, t_now)
        f, g = self.sde.sde(x, t)
        g2 = _bcast(g ** 2, x)
        x_mean = x - (f - g2 * self.score(x, t)) * dt
        if self.is_last(i):
            return x_mean
        return x_mean + _bcast(g, x) * math.sqrt(dt) * self.noise_like(x)
