"""The ASGI app: `api.main:app`, built by `create_app(settings)`.

The app never creates or migrates the schema (`drl serve` and the deployment run the Alembic
migrations; /readyz reports a database that is not at the newest one).

/docs (Swagger UI) and /redoc are FastAPI's pages, but their JavaScript and CSS are served by
the app itself (at /docs-static) instead of a CDN, so they work on a box without internet.
/ is the team's dashboard (api/dashboard/): HTML pages, not in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.dashboard import FORM_PATHS, install_dashboard
from api.db_sessions import limit_worker_threads
from api.deps import AppState, bearer_scheme, get_current_user
from api.docs_pages import install_docs
from api.problems import install_problem_handlers
from api.request_limits import RequestLimitsMiddleware
from api.routers import (checkpoints, code_usage, embeddings, experiments, health, jobs, metrics,
                         probes, queue, samples)
from drl_core.settings import Settings, get_settings

DESCRIPTION = """\
Train diffusion-based representation learning models and serve what they learn: embeddings
at any diffusion time t, per-t probe accuracies, and generated samples.

Errors are `application/problem+json` (RFC 9457). With authentication on, every endpoint
but /healthz, /readyz and these docs needs `Authorization: Bearer <token>` (`drl token create NAME`).
"""

# Routers whose every endpoint needs a signed-in user when auth is on.
PROTECTED = (experiments.router, checkpoints.router, jobs.router, queue.router, embeddings.router,
             probes.router, code_usage.router, metrics.router, samples.router)

def create_app(settings: Settings | None = None) -> FastAPI:
    state = AppState(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limit_worker_threads(state.settings)   # on the loop that serves: sized with the pool
        yield
        state.close()

    # docs_url, redoc_url None: FastAPI's own pages load their assets from a CDN (install_docs).
    app = FastAPI(title="drl", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.drl = state
    install_problem_handlers(app)
    app.add_middleware(RequestLimitsMiddleware, form_paths=FORM_PATHS)
    install_docs(app)
    app.include_router(health.router)
    # OpenAPI declares bearer auth on exactly the endpoints that check it: none with auth off.
    declared = [Depends(bearer_scheme)] if state.settings.auth_enabled else []
    for router in PROTECTED:
        # On the router, not on each endpoint, so no endpoint can forget it.
        app.include_router(router, dependencies=[Depends(get_current_user), *declared])
    install_dashboard(app)   # pages at /, signed in by a cookie holding the same token
    return app


def __getattr__(name: str) -> FastAPI:
    """`api.main:app`, built from the environment's settings on first access (so importing
    this module, e.g. for create_app in tests, does not connect anywhere)."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
