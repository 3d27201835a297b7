"""The one place that knows which samplers exist: `SamplerName` word -> sampler class.

Adding a sampler: its module here (one class with `name`, `stochastic`, `planned_nfe` and
`step`, the formulas in its docstring), its word in spec.SamplerName and its line below; a test
checks that the words and the keys agree.
"""

from __future__ import annotations

from .base import Sampler
from .dpm_solver_pp import DPMSolverPlusPlus2M
from .euler_maruyama import EulerMaruyama
from .heun import EDMHeun
from .ode import ProbabilityFlowODE
from .ode_adaptive import AdaptiveProbabilityFlowODE
from .pc import PredictorCorrector

SAMPLERS: dict[str, type[Sampler]] = {cls.name: cls for cls in (
    PredictorCorrector,
    EulerMaruyama,
    ProbabilityFlowODE,
    EDMHeun,
    DPMSolverPlusPlus2M,
    AdaptiveProbabilityFlowODE,
)}


def sampler_class(name: str) -> type[Sampler]:
    if name not in SAMPLERS:
        raise ValueError(f"sample.sampler: expected one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]
