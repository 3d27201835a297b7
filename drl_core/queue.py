"""The Celery app, built from Settings: the queue that carries "run job N" and nothing else.

State lives in the database; a message is only a nudge for its queue: the task starts the
job whose turn it is there (drl_core/fair_queue.py: owners take turns, then priority, then
age), whichever job the message names, with the compare-and-set queued -> running, and drops
the message when no job may start. So there is no result backend, and a message delivered
twice is harmless.

Brokers:
- Redis (docker compose, `DRL_BROKER_URL=redis://...`), optionally with
  `DRL_BROKER_KEY_PREFIX` so several deployments or test runs can share one Redis;
- embedded default (`broker_url` None): kombu's filesystem transport, messages as files
  under `<home>/queue` (the producer's out-folder is the consumer's in-folder, so both are
  that one folder).

Delivery decisions (see also worker/tasks.py):
- `task_acks_late`: the message is acknowledged when the task returns, not when it starts.
  If a worker host vanishes between receiving a message and the queued -> running
  compare-and-set, the broker delivers it again; after that point the job row is the
  authority and the reaper takes over.
- `task_reject_on_worker_lost=False`: when the process running a job dies (SIGKILL, OOM),
  its message is acknowledged, not re-queued. The reaper alone re-runs a lost job, counting
  attempts against `max_attempts` (a job that kills its worker must not loop forever).
- `worker_prefetch_multiplier=1` with acks_late: a busy worker holds no second message
  that an idle worker could have started.
- `worker_cancel_long_running_tasks_on_connection_loss=False`: a broker blip must not kill
  a two-hour training; if the broker redelivers its message meanwhile (Redis does after
  `visibility_timeout` for any long task), the copy is a nudge like any other: a free worker
  that gets it starts the next job in turn, or drops it when none may start. The running job
  is not started twice (it is not queued).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from drl_core.job_states import JobKind
from drl_core.settings import Settings, get_settings

TASK_RUN_JOB = "drl.run_job"
EXCHANGE = "drl"   # one direct exchange; the routing key is the queue's name
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)
# Probes are scikit-learn on stored embeddings: no model, so no GPU.
QUEUE_FOR_KIND: dict[str, str] = {
    JobKind.TRAIN: GPU_QUEUE,
    JobKind.ENCODE: GPU_QUEUE,
    JobKind.PROBE: CPU_QUEUE,
    JobKind.SAMPLE: GPU_QUEUE,
}


def filesystem_queue_dir(settings: Settings) -> Path:
    """Where the embedded (filesystem) transport keeps its message files."""
    return settings.home / "queue"


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """(broker URL, transport options) for `settings`; creates the embedded queue folder."""
    if settings.broker_url is None:
        folder = filesystem_queue_dir(settings)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        # (a host part only so kombu does not warn that none was given; the transport ignores it)
        return "filesystem://localhost/", {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            # exchange -> queue bindings, shared by every process through files
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    options: dict[str, Any] = {}
    if settings.broker_key_prefix and settings.broker_url.startswith(("redis://", "rediss://")):
        options["global_keyprefix"] = settings.broker_key_prefix
    return settings.broker_url, options


def make_celery(settings: Settings) -> Celery:
    """A Celery app for `settings` (producer and worker use the same configuration)."""
    broker_url, transport_options = broker_options(settings)
    app = Celery("drl", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name, Exchange(EXCHANGE, type="direct"), routing_key=name)
                     for name in QUEUES],
        task_default_queue=GPU_QUEUE,
        task_default_exchange=EXCHANGE,
        task_default_routing_key=GPU_QUEUE,
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        # No result backend: the job row holds status, progress, error and artifacts.
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=True,
    )
    return app


@lru_cache
def default_celery() -> Celery:
    """The process-wide app for `get_settings()` (what `enqueue_job` uses by default)."""
    return make_celery(get_settings())
