"""Whether torch's CPU threads will fight other work for the cores, and what to do about it.

torch runs each operation on `torch.get_num_threads()` threads (one per core by default) that
wait for each other at the end of every operation. When other processes already keep the
cores busy, one slow thread holds up the rest at every step: on the 2-core build machine,
with two other trainings running, the demo took 80 minutes with torch's default 2 threads
and 12 with OMP_NUM_THREADS=1 (issue 14). `drl run` warns before it starts in that case.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def oversubscription_warning(load: float | None, cores: int, torch_threads: int) -> str | None:
    """A one-line warning when the work already running (`load`, rounded: a load of 1.9 is two
    busy cores) plus torch's threads exceed the cores; None when they fit, when torch uses
    one thread (it cannot wait on itself), or when the load is unknown."""
    if load is None or torch_threads <= 1:
        return None
    busy = round(load)
    if busy + torch_threads <= cores:
        return None
    return (f"the CPU is oversubscribed: load average {load:.1f} on {cores} cores before this "
            f"run, and torch will use {torch_threads} threads that wait for each other at every "
            "step, so training can be several times slower than on a quiet machine; rerun with "
            "OMP_NUM_THREADS=1 (or as many threads as idle cores)")
