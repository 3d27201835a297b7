"""The API under load and with its database gone (issue 13 item 1), against real PostgreSQL
and a real uvicorn server on loopback (TestClient where no socket behaviour matters).

- a request's session is given back before its response is sent;
- every session slot busy (requests blocked in the database) -> 503 busy + Retry-After, and
  the blocked requests still finish once the database lets them;
- the connection pool exhausted by callers outside the slots -> 503 busy, not a 500;
- the database unreachable -> 503 + Retry-After;
- a burst of 100 concurrent requests (one Idempotency-Key among them) on 2 threads: no 5xx,
  one experiment (the code before the fix deadlocked on it until its pool timed out: 500s).
The full-size burst is `bench/api.py --burst` (tests/test_bench.py runs its smoke version).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.db_sessions import POOL_HEADROOM
from api.main import create_app
from api.problems import BUSY, UNAVAILABLE
from drl_core.artifact_keys import ArtifactKind, embedding_key, labels_key
from drl_core.artifacts import LocalArtifactStore
from drl_core.db import session_factory
from drl_core.models import Experiment
from drl_core.settings import Settings
from worker.context import upsert_artifact

pytest.register_assert_rewrite("worker_fixtures")
from live_server import free_port, serving  # noqa: E402
from worker_fixtures import TINY_SPEC, service_settings_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]


def make_settings(tmp_path: Path, database_url: str, **overrides) -> Settings:
    # The embedded filesystem broker under tmp_path: nobody consumes it, nothing to clean.
    return service_settings_for(database_url, tmp_path / "home", None, broker_url=None, **overrides)


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == BUSY and int(response.headers["retry-after"]) >= 1


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def seed_embedding(session: Session, store: LocalArtifactStore, experiment_id: int,
                   rows: int, dim: int) -> None:
    for kind, key, array in (
            (ArtifactKind.EMBEDDING, embedding_key(experiment_id, "test", 0.5),
             np.ones((rows, dim), np.float32)),
            (ArtifactKind.LABELS, labels_key(experiment_id, "test"), np.zeros(rows, np.int64))):
        stored = store.put_bytes(key, npy_bytes(array))
        upsert_artifact(session, experiment_id, None, kind, stored,
                        {"split": "test", "t": 0.5} if kind is ArtifactKind.EMBEDDING else {"split": "test"})
    session.commit()


@pytest.fixture
def session(pg_engine: sa.Engine) -> Iterator[Session]:
    # pg_engine: the module database's tables are emptied after each test
    with session_factory(pg_engine)() as s:
        yield s


def test_the_session_is_given_back_before_the_response_is_sent(tmp_path: Path, pg_url: str,
                                                                session: Session) -> None:
    """When the first byte of a response goes out, its request's connection is back in the
    pool (a session kept until the response is sent is what froze the API under bursts)."""
    settings = make_settings(tmp_path, pg_url)
    app = create_app(settings)
    pool = app.state.drl.engine.pool
    in_use_at_response: list[tuple[str, int]] = []

    async def watched(scope, receive, send):
        async def send_watched(message):
            if message["type"] == "http.response.start":
                in_use_at_response.append((scope["path"], pool.checkedout()))
            await send(message)
        await app(scope, receive, send_watched)

    with TestClient(watched) as client:
        experiment_id = client.post("/experiments", json=TINY_SPEC).json()["id"]
        seed_embedding(session, LocalArtifactStore(settings.resolved_artifact_dir),
                       experiment_id, rows=100, dim=8)
        assert client.get(f"/experiments/{experiment_id}").status_code == 200
        assert client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5,
                                                 "format": "npy"}).status_code == 200
        assert client.get("/experiments/999999").status_code == 404
    assert [path for path, _ in in_use_at_response] == [
        "/experiments", f"/experiments/{experiment_id}", "/embeddings", "/experiments/999999"]
    assert all(in_use == 0 for _, in_use in in_use_at_response), in_use_at_response


def test_every_session_slot_busy_is_a_503_with_retry_after(tmp_path: Path, pg_url: str,
                                                           session: Session) -> None:
    settings = make_settings(tmp_path, pg_url, api_threads=2, db_pool_timeout_s=0.5)
    # An uncommitted experiment with key "k": creates with the same key wait on its unique
    # index entry inside the database, each holding a session slot, until this rolls back.
    session.add(Experiment(name="blocker", spec={}, idempotency_key="k"))
    session.flush()
    with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        held = []

        def post() -> None:
            held.append(client.post("/experiments", json=TINY_SPEC,
                                    headers={"Idempotency-Key": "k"}))

        posts = [threading.Thread(target=post) for _ in range(2)]
        for thread in posts:
            thread.start()
        time.sleep(1.0)   # both are blocked in the database now
        assert_busy(client.get("/experiments"))
        assert_busy(client.get("/experiments/1"))
        assert client.get("/healthz").status_code == 200   # no session needed: unaffected
        session.rollback()
        for thread in posts:
            thread.join(30)
        assert sorted(r.status_code for r in held) == [200, 201]   # one created, one replayed
        assert client.get("/experiments").json()["total"] == 1


def test_an_exhausted_connection_pool_is_a_503_not_a_500(tmp_path: Path, pg_url: str,
                                                         session: Session) -> None:
    settings = make_settings(tmp_path, pg_url, api_threads=1, db_pool_timeout_s=0.5)
    app = create_app(settings)
    with TestClient(app) as client:
        # Callers outside the session slots (e.g. /readyz) have taken every connection.
        engine = app.state.drl.engine
        taken = [engine.connect() for _ in range(settings.api_threads + POOL_HEADROOM)]
        try:
            assert_busy(client.get("/experiments"))
        finally:
            for connection in taken:
                connection.close()
        assert client.get("/experiments").status_code == 200


def test_an_unreachable_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"postgresql+psycopg://drl@127.0.0.1:{free_port()}/drl")
    with TestClient(create_app(settings)) as client:
        for response in (client.get("/experiments"), client.post("/experiments", json=TINY_SPEC)):
            assert response.status_code == 503, response.text
            assert response.json()["type"] == UNAVAILABLE and response.headers["retry-after"]
            assert "127.0.0.1" not in response.text   # where it is stays in the server log


def test_a_burst_on_two_threads_gets_no_server_error(tmp_path: Path, pg_url: str,
                                                      session: Session) -> None:
    settings = make_settings(tmp_path, pg_url, api_threads=2)
    with serving(settings) as url:
        seeded = httpx.post(f"{url}/experiments", json=TINY_SPEC).json()["id"]

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
                calls = [client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "one"})
                         if i % 2 else client.get(f"/experiments/{seeded}") for i in range(100)]
                return await asyncio.gather(*calls)

        statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses == [200] * 99 + [201]
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)
                          .where(Experiment.idempotency_key == "one")) == 1
