"""The probability-flow ODE (Song et al. 2021) integrated by an adaptive Runge-Kutta method:
torchdiffeq's dopri5 (Dormand-Prince 5(4), Chen et al. 2018's `odeint`) from t_init to eps,

    dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t),

each step accepted when its embedded error estimate is below atol + rtol |x| (`sample.atol`,
`sample.rtol`; torchdiffeq's RMS norm over the whole batch, so a batch shares its steps).
Then one denoising step at eps: x_0 = D(x_eps, eps) = (x + std^2 score) / a (Tweedie).

Two sampler steps, the integration and the denoising: progress (and a job's cancel check)
comes after each, not inside the integration. NFE is counted from the score's evaluations:
dopri5's 6 per attempted step (it reuses the last stage, FSAL), 2 to choose the first step,
and 1 to denoise. No noise after the start.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from ..spec import SampleSpec
from .base import Sampler
from .reverse_sde import probability_flow_drift

# dopri5 steps before giving up (about 6 evaluations each): tolerances no float32 network can
# meet would otherwise integrate for ever.
MAX_SOLVER_STEPS = 10_000


class AdaptiveProbabilityFlowODE(Sampler):
    name = "ode_adaptive"
    stochastic = False

    @classmethod
    def time_steps(cls, sde, spec: SampleSpec) -> list[float]:
        """The integration starts at t_init; the denoising step at eps."""
        return torch.tensor([spec.t_init, spec.eps], dtype=torch.float32).tolist()

    @classmethod
    def planned_nfe(cls, n: int, spec: SampleSpec) -> None:
        return None   # the tolerances choose the steps

    def step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        t_now = self.times[i]
        if self.is_last(i):
            return self.score.denoised(x, self.t_batch(x, t_now))
        return self.integrate(x, t_now, self.next_time(i))

    def integrate(self, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
        def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return probability_flow_drift(self.sde, self.score, x, self.t_batch(x, float(t)))
        span = torch.tensor([t_from, t_to], dtype=torch.float64, device=x.device)
        try:
            # step_t: the last step lands on eps. Left to itself dopri5 steps past the end and
            # interpolates back, asking for the score below eps, where VP's std is not defined.
            path = odeint(drift, x, span, method="dopri5", rtol=self.spec.rtol,
                          atol=self.spec.atol,
                          options={"max_num_steps": MAX_SOLVER_STEPS, "step_t": span[1:]})
        except AssertionError as err:   # torchdiffeq reports with asserts
            message = str(err)
            if message.startswith("max_num_steps"):
                raise RuntimeError(
                    f"sample.rtol / sample.atol: dopri5 took more than {MAX_SOLVER_STEPS} steps "
                    f"({self.score.calls} evaluations) at rtol {self.spec.rtol}, atol "
                    f"{self.spec.atol}; loosen them") from None
            if message.startswith(("non-finite", "underflow")):
                # A diverged network: NaN images, as a fixed-step sampler's would be, for the
                # caller's finiteness check rather than a failed run.
                return torch.full_like(x, float("nan"))
            raise
        return path[-1]
