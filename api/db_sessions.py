"""Request sessions: how many requests may hold the database at once, and for how long.

The failure this prevents (issue 13): a burst of requests froze the API for 30-60 s and
answered 500s. Sync endpoints run on a pool of worker threads, and FastAPI validates a sync
endpoint's response on *another* trip to that pool after the endpoint returns, while its
session (and connection, idle in transaction) is still open. With more threads than
connections, every thread ended up waiting for a connection held by a request that waited
for a thread to serialise its response: a deadlock broken only by the pool timeout (a 500).

Three rules make it impossible:
- at most `Settings.api_threads` requests hold a session at a time (`SessionSlots`), waiting
  for a slot on the event loop (no thread held while waiting), and the API's connection pool
  is larger than that (`pool_options`): a request that holds a slot never waits for a
  connection, so whatever it waits for (a thread) is held by requests that make progress;
- the session is closed as soon as the endpoint's response is built, before it is streamed
  to the client (the dependency's scope is "function"): a slow reader holds a socket, never
  a connection. Closing runs on a thread of its own (it may ROLLBACK over the network), never
  queued behind the busy endpoint threads;
- waiting is bounded: no slot within `db_pool_timeout_s` (or, for a caller outside the slots,
  no pooled connection) is a `DatabaseBusy` / pool `TimeoutError`, answered 503 with
  Retry-After (api/problems.py), never a 500 after a freeze.

The worker threads are sized from the same setting (`limit_worker_threads`, at startup), with
THREAD_HEADROOM more than the slots: requests without a session (/readyz) and the other sync
steps of a request never wait behind slot holders that are blocked in the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import anyio
import anyio.to_thread
import sqlalchemy as sa
from anyio.lowlevel import RunVar
from sqlalchemy.orm import Session, sessionmaker

from drl_core.settings import Settings

# Connections beyond the session slots: /readyz's check, and sessions of requests that gave
# their slot back while their close is still returning the connection.
POOL_HEADROOM = 4
# Worker threads beyond the session slots, for sync work outside a session.
THREAD_HEADROOM = 4

# One semaphore per SessionSlots per event loop (a test may run one app under several loops).
_semaphores: RunVar[WeakKeyDictionary[SessionSlots, anyio.Semaphore]] = RunVar("drl_session_slots")


class DatabaseBusy(RuntimeError):
    """Every session slot stayed taken for `db_pool_timeout_s`: the API is saturated."""


def pool_options(settings: Settings) -> dict[str, Any]:
    """Engine keyword arguments for the API's connection pool: room for every session slot
    plus POOL_HEADROOM, and a bounded wait. (SQLite in memory has no such pool.)"""
    url = sa.make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return {}
    return {"pool_size": settings.api_threads, "max_overflow": POOL_HEADROOM,
            "pool_timeout": settings.db_pool_timeout_s}


def limit_worker_threads(settings: Settings) -> None:
    """Size the threads that run sync endpoints and dependencies (anyio's default limiter,
    Starlette's threadpool): `api_threads` plus THREAD_HEADROOM. Call on the serving event
    loop (the app's lifespan)."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = settings.api_threads + THREAD_HEADROOM


class SessionSlots:
    """Hands out request sessions, at most `size` at a time (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], size: int, wait_s: float) -> None:
        self.sessions, self.size, self.wait_s = sessions, size, wait_s

    def _semaphore(self) -> anyio.Semaphore:
        try:
            semaphores = _semaphores.get()
        except LookupError:
            semaphores = WeakKeyDictionary()
            _semaphores.set(semaphores)
        if self not in semaphores:
            semaphores[self] = anyio.Semaphore(self.size)
        return semaphores[self]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A session for one request: wait (on the event loop) for a slot, yield the session,
        then close it on a thread of its own and give the slot back."""
        semaphore = self._semaphore()
        with anyio.move_on_after(self.wait_s) as waited:
            await semaphore.acquire()
        if waited.cancelled_caught:
            raise DatabaseBusy(f"all {self.size} database sessions stayed in use for "
                               f"{self.wait_s:g} s")
        try:
            session = self.sessions()   # no I/O: a connection is taken at the first query
            try:
                yield session
            finally:
                with anyio.CancelScope(shield=True):
                    # A limiter of its own: the default one may be full of endpoint threads.
                    await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
        finally:
            semaphore.release()
