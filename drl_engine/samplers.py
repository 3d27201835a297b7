"""The samplers' former home, kept so that `from drl_engine.samplers import ...` still works:
they live in drl_engine/sampling/, one module each."""

from .sampling import (SAMPLERS, SampleResult, initial_sample, num_steps, sample,  # noqa: F401
                       sampler_class, time_grid)
