"""Predictor-corrector (score-SDE's PC sampler, Song et al. 2021, algorithms 2 and 3): the
paper's sampler. At each t_i of the even grid, `corrector_steps` Langevin corrector steps, then
a reverse-diffusion predictor step to t_{i+1} (dt = t_i - t_{i+1}):

    corrector: alpha = 1 (VE) or 1 - beta(t) dt (VP);
               step = 2 alpha (snr ||z|| / ||score||)^2   (per-sample norms, batch-averaged)
               x = x + step * score + sqrt(2 step) z
    predictor: (f, G) = sde.discretize(x, t, dt);  x_mean = x - f + G^2 score;  x = x_mean + G z

The last step (eps -> 0) returns x_mean: score-SDE's noise removal.
NFE = n (1 + corrector_steps) for n steps.
"""

from __future__ import annotations

import torch

from ..sde import VPSDE, _bcast
from ..spec import SampleSpec
from .base import Sampler
from .reverse_sde import reverse_diffusion_mean


class PredictorCorrector(Sampler):
    name = "pc"
    stochastic = True

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> int:
        return n * (1 + spec.corrector_steps)

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        t_now = self.times[i]
        dt = t_now - self.next_time(i)
        t = self.t_batch(x, t_now)
        # score-SDE runs the corrector before the predictor at each t.
        for _ in range(self.spec.corrector_steps):
            x = self.langevin_corrector(x, t, dt)
        x_mean, g = reverse_diffusion_mean(self.sde, self.score, x, t, dt)
        return x_mean if self.is_last(i) else x_mean + _bcast(g, x) * self.noise_like(x)

    def langevin_corrector(self, x: torch.Tensor, t: torch.Tensor, dt: float) -> torch.Tensor:
        """One Langevin step at fixed t, its size set by the signal-to-noise ratio `spec.snr`.

        alpha = 1 (VE) or 1 - beta(t) dt (VP, score-SDE's 1 - beta_i);
        step = 2 alpha (snr ||z|| / ||score||)^2, the norms taken per sample and averaged over
        the batch (as score-SDE does); x = x + step * score + sqrt(2 step) z.
        """
        score = self.score(x, t)
        z = self.noise_like(x)
        if isinstance(self.sde, VPSDE):
            # Floored where VPSDE.discretize caps beta(t) dt at 0.999: with few steps (dt ~ 1/20)
            # beta(t) dt passes 1 near t = 1, and a negative alpha would make sqrt(2 step) NaN.
            alpha = (1.0 - self.sde.beta(t) * dt).clamp(min=1e-3)
        else:
            alpha = torch.ones_like(t)
        score_norm = score.flatten(1).norm(dim=1).mean()
        noise_norm = z.flatten(1).norm(dim=1).mean()
        step = 2.0 * alpha * (self.spec.snr * noise_norm / score_norm) ** 2
        return x + _bcast(step, x) * score + _bcast(torch.sqrt(2.0 * step), x) * z
