"""Samplers of the reverse-time SDE and its probability-flow ODE, conditioned on a code
through the score: one module per sampler (formulas in its docstring), `registry.SAMPLERS`
from `spec.SamplerName` to its class, `run.sample` to draw.

    pc              predictor-corrector (score-SDE; the paper's)        NFE n (1 + corrector_steps)
    euler_maruyama  Euler-Maruyama on the reverse SDE                   NFE n
    ode             probability-flow ODE, Heun on the even grid         NFE 2 n - 1
    heun            EDM's Heun over EDM's rho = 7 sigmas                NFE 2 n - 1
    dpm_solver_pp   DPM-Solver++(2M), data prediction, EDM's sigmas     NFE n
    ode_adaptive    probability-flow ODE by torchdiffeq's dopri5        NFE counted (rtol, atol)

n = round(steps * t_init). Every sampler starts at t_init from either prior (start.py) or a
given x, ends with the noise-free estimate of x_0, and reports its NFE and seconds.
"""

from .base import SampleResult, Sampler
from .grid import num_steps, time_grid
from .registry import SAMPLERS, sampler_class
from .run import sample
from .score import CountedScore, ScoreFn
from .start import initial_sample

__all__ = ["SAMPLERS", "CountedScore", "SampleResult", "Sampler", "ScoreFn", "initial_sample",
           "num_steps", "sample", "sampler_class", "time_grid"]
