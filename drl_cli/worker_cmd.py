"""`drl worker`: a Celery worker for the service's jobs, against the configured services.

Equivalent to `celery -A worker.celery_app:celery_app worker -Q gpu,cpu --concurrency 1
--prefetch-multiplier 1 --pool prefork`, after checking that the database is reachable and
migrated (the API runs the migrations; a worker never changes the schema). Settings come
from the environment (DRL_DATABASE_URL, DRL_BROKER_URL, DRL_ARTIFACT_BACKEND, ...).
One worker per GPU: pin it with CUDA_VISIBLE_DEVICES and keep --concurrency 1.
"""

from __future__ import annotations

import argparse
import os

from .errors import CLIError

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="run a worker that executes queued jobs",
                       description="Start a Celery worker that runs the service's train, "
                                   "encode, probe and sample jobs.")
    p.add_argument("--queues", default="gpu,cpu",
                   help="comma-separated queues to consume: gpu (train, encode, sample), "
                        "cpu (probe); default gpu,cpu")
    p.add_argument("--concurrency", type=int, default=1,
                   help="jobs run at once (default 1: one per GPU)")
    p.add_argument("--name", help="worker node name (default drl-<queues>-<pid>@<host>)")
    p.add_argument("--loglevel", choices=LOG_LEVELS, default="info")
    p.set_defaults(func=run)


def parse_queues(text: str) -> list[str]:
    from drl_core.queue import QUEUES

    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise CLIError(f"--queues: expected a comma-separated subset of {','.join(QUEUES)}, "
                       f"got {text!r}")
    return list(dict.fromkeys(queues))


def check_database(url: str) -> None:
    """CLIError (one line) unless the database at `url` answers and is at the newest migration."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from drl_core.db import current_revision, head_revision

    shown = sa.make_url(url).render_as_string(hide_password=True)
    try:
        revision = current_revision(url)
    except SQLAlchemyError as err:
        first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise CLIError(f"database {shown} is not reachable: {first}") from None
    head = head_revision()
    if revision != head:
        raise CLIError(f"database {shown} is not migrated (at revision {revision or 'none'}, "
                       f"expected {head}); start the API (`drl serve`), which migrates it, first")


def celery_worker_argv(queues: list[str], concurrency: int, name: str | None,
                       loglevel: str) -> list[str]:
    # Unique by default, so several workers on one host (one per GPU) never share a name.
    node = name or f"drl-{'-'.join(queues)}-{os.getpid()}"
    return ["worker", "--queues", ",".join(queues), "--concurrency", str(concurrency),
            "--prefetch-multiplier", "1", "--pool", "prefork", "--loglevel", loglevel.upper(),
            "--hostname", node if "@" in node else f"{node}@%h",
            # No clock sync or revoke gossip between workers: the database is the authority.
            "--without-gossip", "--without-mingle"]


def run(args: argparse.Namespace) -> int:
    from drl_core.settings import Settings

    if args.concurrency < 1:
        raise CLIError(f"--concurrency: expected >= 1, got {args.concurrency}")
    queues = parse_queues(args.queues)
    check_database(Settings().resolved_database_url)
    # Imported only now: building the app creates the embedded queue folder.
    from worker.celery_app import celery_app

    celery_app.worker_main(celery_worker_argv(queues, args.concurrency, args.name, args.loglevel))
    return 0
