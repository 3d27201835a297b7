"""One runner per job kind: `run(ctx: JobContext) -> None`; raising fails the job.

Runners are imported only when a job of their kind runs, inside the pool process, so the
worker's parent process never imports torch (and never initialises CUDA).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from drl_core.job_states import JobKind
from worker.context import JobContext

Runner = Callable[[JobContext], None]

RUNNER_MODULES: dict[str, str] = {
    JobKind.TRAIN: "worker.jobs.train",
    JobKind.ENCODE: "worker.jobs.encode",
    JobKind.PROBE: "worker.jobs.probe",
    JobKind.SAMPLE: "worker.jobs.sample",
}


def runner_for(kind: str) -> Runner:
    if kind not in RUNNER_MODULES:
        raise ValueError(f"job kind {kind!r}: no runner (expected one of {', '.join(RUNNER_MODULES)})")
    return importlib.import_module(RUNNER_MODULES[kind]).run
