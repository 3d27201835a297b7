"""`celery -A worker.celery_app:celery_app worker -Q gpu,cpu --concurrency 1 --prefetch-multiplier 1 --pool prefork`

The app comes from the settings (drl_core/queue.py: broker, queues, acknowledgement policy);
this module only registers the task on it. It is the same object `drl_core.dispatch` sends
with in this process, so a worker enqueues downstream jobs through its own broker connection.
"""

from __future__ import annotations

from drl_core.queue import default_celery
from drl_engine.provenance import code_commit
from worker import tasks

celery_app = default_celery()
tasks.register(celery_app)
# The commit of the code this worker imported, read now, before its pool processes fork (they
# inherit it): a checkout updated while the worker runs is not the code it runs.
code_commit()
