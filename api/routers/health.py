"""/healthz (the process answers) and /readyz (it can do its work: database at the newest
migration, broker reachable, artifact store usable). Neither needs a token.

So /readyz tells anyone only which dependency failed, in words of its own: a connection
error names hosts, ports and sometimes credentials (a DSN, an S3 endpoint), which stay in the
server log. There are no admin users to show more to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from celery import Celery
from fastapi import APIRouter

from api.deps import StateDep
from api.problems import UNAVAILABLE, Problem, problem_responses
from api.schemas import HealthOut
from drl_core.db import head_revision

router = APIRouter(tags=["health"])

log = logging.getLogger("drl.api")

BROKER_TIMEOUT_S = 2.0
# What /readyz says of a dependency that failed other than with NotReady.
UNREPORTED_FAILURE = "unavailable (the server log says why)"


class NotReady(RuntimeError):
    """A dependency that answers but cannot serve yet, said in words safe to show anyone."""


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> HealthOut:
    # async: answered on the event loop, so it stays up when every worker thread is busy.
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, summary="Database, broker and artifact store are usable",
            responses=problem_responses(503))
def readyz(state: StateDep) -> HealthOut:
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: check_database(state.engine),
        "broker": lambda: check_broker(state.celery),
        "artifact_store": lambda: state.store().check(),
    }
    results: dict[str, str] = {}
    failed = []
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except NotReady as err:
            results[name] = str(err)
            failed.append(name)
        except Exception as err:  # any other failure is "not ready" too; its words are logged
            log.warning("readyz: %s unavailable: %s: %s", name, type(err).__name__, err)
            results[name] = UNREPORTED_FAILURE
            failed.append(name)
    if failed:
        detail = "not ready: " + "; ".join(f"{name}: {results[name]}" for name in failed)
        raise Problem(503, detail, type=UNAVAILABLE, title="Service unavailable",
                      checks=results, failed=failed)
    return HealthOut(status="ok", checks=results)


def check_database(engine: sa.Engine) -> None:
    """Connect, and require the schema to be at the newest migration (an API running
    against an older schema would fail on its first query)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = head_revision()
    if current != head:
        raise NotReady(f"schema at migration {current or 'none'}, expected {head}; "
                       "run the migrations (drl serve does it on start)")


def check_broker(celery_app: Celery) -> None:
    """Open a connection to the broker the app sends jobs through (Redis, or the embedded
    filesystem transport), failing within a few seconds rather than hanging."""
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                     timeout=BROKER_TIMEOUT_S)
