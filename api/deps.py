"""Dependencies, injected with `Annotated` aliases (as full-stack-fastapi-template's
api/deps.py): `SettingsDep`, `SessionDep`, `StoreDep`, `CurrentUser`.

Everything a request needs hangs off `app.state.drl` (an `AppState` built by create_app), so
two apps with different settings (tests) never share an engine or a store.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated

import sqlalchemy as sa
from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.auth import authenticate
from api.db_sessions import SessionSlots, pool_options
from api.embedding_cache import ArrayCache
from drl_core.artifacts import ArtifactStore, build_store
from drl_core.db import make_engine, session_factory
from drl_core.models import User
from drl_core.queue import make_celery
from drl_core.settings import Settings

# Decoded .npy embeddings kept in memory across requests (bytes of array data).
EMBEDDING_CACHE_BYTES = 256 * 1024 * 1024


class AppState:
    """The app's long-lived resources: settings, database engine, artifact store, caches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: sa.Engine = make_engine(settings.resolved_database_url, **pool_options(settings))
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.session_slots = SessionSlots(self.sessions, settings.api_threads,
                                          settings.db_pool_timeout_s)
        self.embeddings = ArrayCache(EMBEDDING_CACHE_BYTES)
        # Sends "run job N" with these settings' broker (not the process-wide default).
        self.celery: Celery = make_celery(settings)
        self._store: ArtifactStore | None = None
        self._store_lock = threading.Lock()

    def store(self) -> ArtifactStore:
        """The artifact store, built on first use: an S3 endpoint that is down when the app
        starts must show up as a 503 (and in /readyz), not stop the app from starting."""
        with self._store_lock:
            if self._store is None:
                self._store = build_store(self.settings)
            return self._store

    def close(self) -> None:
        self.celery.close()
        self.engine.dispose()


def app_state(request: Request) -> AppState:
    return request.app.state.drl


def get_settings(request: Request) -> Settings:
    return app_state(request).settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request, closed once the response is built, before it is sent (scope
    "function" in SessionDep), within the API's session slots (api/db_sessions.py). Nothing
    is committed here: service functions commit their own writes, and whatever a failed
    request left uncommitted is rolled back on close."""
    async with app_state(request).session_slots.session() as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    # An ArtifactStoreError (S3 down) becomes a 503 problem (api.problems).
    return app_state(request).store()


# Only declares bearer auth in OpenAPI (so /docs has an Authorize button): create_app adds it
# to the protected routers when auth is on, and only then, so the document never asks for a
# token the server does not check. auto_error=False: it never answers a request itself.
bearer_scheme = HTTPBearer(auto_error=False, description="a token from `drl token create NAME`")


# Every user of the request's session names this one declaration, so they share one session
# (FastAPI caches a dependency per declaration and scope).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_current_user(request: Request, session: SessionDep) -> User | None:
    """The signed-in user, or None when auth is off (embedded, localhost).

    The header is read here rather than through `bearer_scheme`, which answers None for a
    wrong scheme and a missing header alike; a missing header is our 401 problem (with
    WWW-Authenticate), not FastAPI's plain 403."""
    if not app_state(request).settings.auth_enabled:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return authenticate(session, scheme if header else None, token.strip() or None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
CurrentUser = Annotated[User | None, Depends(get_current_user)]
StateDep = Annotated[AppState, Depends(app_state)]
