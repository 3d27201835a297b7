"""Stopping a worker hands its running job back to the queue instead of abandoning it.

Celery's warm shutdown (SIGTERM to the worker: `docker compose stop`, `drl serve` stopping; or
a first Ctrl-C) stops taking messages and waits for the running task, which for a training is
hours: the worker is then killed (Docker's grace period, `drl serve`'s timeout), its job is
reaped only after `heartbeat_timeout_s` and resumes from a checkpoint up to a whole
`train.checkpoint_every` old, one of its `max_attempts` spent.

Instead, when the shutdown begins the worker's main process sends SIGINT to its pool processes
(`_ask_pool_processes_to_stop`). In a pool process running a job SIGINT sets `stop_requested`
(`stop_on_sigint`, installed as each job starts: billiard sets SIGINT to SIG_IGN after
`worker_process_init`), which the running job polls (JobContext.should_stop / check): a training
stops before its next step, saves and uploads a checkpoint, and worker/tasks.py hands the job
back (running -> queued at the same attempt) and sends its message again; the next worker
resumes it at once from that checkpoint. A Ctrl-C in the worker's terminal reaches the pool
process directly too (one process group), to the same effect.

Why SIGINT: Celery's pool processes ignore it, so it is free to mean "hand your job back",
while SIGTERM keeps its meaning in them, what a cold shutdown (a second Ctrl-C, SIGQUIT)
terminates them with, at once.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from billiard.process import active_children, current_process
from celery.signals import worker_shutting_down


def stop_on_sigint(stop_requested: threading.Event) -> None:
    """In a pool process, as a job starts: SIGINT asks it to stop and be handed back. Not in a
    worker's main process (`--pool solo`), where SIGINT is Celery's own Ctrl-C."""
    if current_process().name == "MainProcess":
        return

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)


@worker_shutting_down.connect
def _ask_pool_processes_to_stop(sig: str | None = None, how: str | None = None, **_: Any) -> None:
    """In the main process, as a shutdown begins: SIGINT to each pool process, whose running
    job then stops and is handed back. Celery calls this from its signal handler, so it only
    sends signals (no logging: its lock may be held by the code the signal interrupted)."""
    for child in active_children():
        try:
            os.kill(child.pid, signal.SIGINT)
        except ProcessLookupError:   # it just exited
            continue
