"""drl_engine: the science of diffusion-based representation learning.

It takes an ExperimentSpec, arrays and callbacks, and returns results; it knows nothing of
HTTP, SQL or Celery (those live in api/, worker/ and drl_core/).
"""

from .spec import ExperimentSpec, SpecError, load_spec, parse_spec

__all__ = ["ExperimentSpec", "SpecError", "load_spec", "parse_spec"]
