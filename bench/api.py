"""API benchmark against a real `drl serve` (embedded: SQLite, local artifacts, a worker).

    python bench/api.py [--requests 50] [--rows 10000] [--dim 128] [--quick] [--out FILE]
    python bench/api.py --burst [--requests 200] [--postgres-url URL] [--quick] [--out FILE]

Starts `drl serve` on a free port with a fresh home, stores one (rows x dim) float32
embedding for a real experiment through the same artifact store and upsert the worker uses,
then times, one request after another over keep-alive connections:
- GET /embeddings (JSON, the whole 10,000 x 128 page) and the same page with format=npy;
- POST /experiments (a small spec; each queues a real train job);
- GET /healthz, the baseline: the server's per-request floor. Every figure's ratio is
  against it (`x_healthz_p50` = that endpoint's p50 latency / healthz's p50 latency).
Prints one JSON object: requests/s, p50 and p99 latency in milliseconds, bytes per response.

--burst: the shared-box figure (issue 13). `drl serve --no-worker` on a throwaway PostgreSQL
database (created from --postgres-url, dropped at the end; the embedded filesystem broker,
which nobody consumes), then every request at once, each on its own connection: a third
POST /experiments with one new Idempotency-Key, a third GET /experiments/{id}, a third GET
/embeddings as npy. Reports status counts, server errors (5xx: must be 0), p50/p99/max
latency per kind and overall, and how many experiments the key created (must be 1).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = {"name": "bench", "dataset": {"name": "digits", "train_limit": 64, "test_limit": 16},
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "latent_dim": 4},
        "train": {"iterations": 2, "batch_size": 8, "warmup": 1, "checkpoint_every": 2},
        "evaluate": {"t_grid": [0.5], "label_budgets": [10], "probe_train_limit": 32},
        "sample": {"steps": 2, "count": 1}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, n: int, call) -> dict:
    latencies, size = [], 0
    for _ in range(n):
        start = time.perf_counter()
        response = call(client)
        latencies.append(time.perf_counter() - start)
        if response.status_code >= 400:
            raise SystemExit(f"bench: {response.request.url} -> {response.status_code}: {response.text[:300]}")
        size = len(response.content)
    ms = np.array(latencies) * 1000
    return {"requests": n, "requests_per_s": n / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "bytes": size}


def seed_embedding(home: Path, experiment_id: int, rows: int, dim: int,
                   database_url: str | None = None) -> None:
    """Store a test-split embedding at t=0.5 exactly where the encode job would."""
    os.environ["DRL_HOME"] = str(home)
    from drl_core.artifact_keys import ArtifactKind, embedding_key, labels_key
    from drl_core.artifacts import build_store
    from drl_core.db import make_engine, session_factory
    from drl_core.settings import Settings
    from worker.context import upsert_artifact

    settings = Settings(home=home, database_url=database_url)
    store = build_store(settings)
    rng = np.random.default_rng(0)
    arrays = {"embedding": rng.normal(size=(rows, dim)).astype(np.float32),
              "labels": rng.integers(0, 10, rows).astype(np.int64)}
    keys = {"embedding": embedding_key(experiment_id, "test", 0.5), "labels": labels_key(experiment_id, "test")}
    session = session_factory(make_engine(settings.resolved_database_url))()
    for kind, array in arrays.items():
        buf = io.BytesIO()
        np.save(buf, array)
        stored = store.put_bytes(keys[kind], buf.getvalue())
        meta = {"split": "test", "t": 0.5} if kind == "embedding" else {"split": "test"}
        upsert_artifact(session, experiment_id, None, ArtifactKind(kind), stored, meta)
    session.commit()
    session.close()


@contextmanager
def drl_serve(home: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`drl serve` on a free port with `home`, until the block ends; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DRL_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    server = subprocess.Popen([sys.executable, "-m", "drl_cli.main", "serve", "--port", str(port),
                               "--home", str(home), *extra], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.time() + 90
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"bench: drl serve did not start: {server.stderr.read().decode()[-500:]}")
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def sequential(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="drl-bench-api-"))
    with drl_serve(home) as url, httpx.Client(base_url=url, timeout=60) as client:
        created = client.post("/experiments", json=SPEC).json()
        client.post(f"/experiments/{created['id']}/cancel")
        seed_embedding(home, created["id"], args.rows, args.dim)
        page = {"experiment": created["id"], "t": 0.5, "split": "test", "limit": args.rows}

        results = {"healthz": timed(client, args.requests, lambda c: c.get("/healthz"))}
        results["embeddings_json"] = timed(client, args.requests, lambda c: c.get("/embeddings", params=page))
        results["embeddings_npy"] = timed(client, args.requests,
                                          lambda c: c.get("/embeddings", params={**page, "format": "npy"}))
        results["post_experiments"] = timed(client, args.requests, lambda c: c.post("/experiments", json=SPEC))
        for listing in client.get("/experiments", params={"limit": 500}).json()["items"]:
            client.post(f"/experiments/{listing['id']}/cancel")

    floor = results["healthz"]["p50_ms"]
    for name, figures in results.items():
        figures["x_healthz_p50"] = figures["p50_ms"] / floor
    return {"baseline": "GET /healthz p50 latency on the same server", "server": "drl serve (embedded)",
            "embedding_shape": [args.rows, args.dim], "quick": args.quick, **results}


# --- --burst ------------------------------------------------------------------------------


@contextmanager
def throwaway_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database next to `admin_url`'s (`drl serve` migrates it);
    dropped WITH (FORCE) at the end. Yields its SQLAlchemy URL."""
    import psycopg
    import sqlalchemy as sa
    from psycopg import sql

    admin = sa.make_url(admin_url)
    libpq = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"drl_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def latency_figures(latencies_s: list[float]) -> dict:
    ms = np.array(latencies_s) * 1000
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


async def fire_burst(url: str, calls: list[tuple[str, str, dict]]) -> list[tuple[str, int | str, float]]:
    """Every (kind, method, request arguments) at once, each on its own connection (the
    client allows as many connections as there are calls); (kind, status or transport
    error, seconds) per call."""
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = asyncio.Event()

        async def one(kind: str, method: str, kwargs: dict) -> tuple[str, int | str, float]:
            await start.wait()
            began = time.perf_counter()
            try:
                response = await client.request(method, **kwargs)
                outcome: int | str = response.status_code
            except httpx.TransportError as err:
                outcome = type(err).__name__
            return kind, outcome, time.perf_counter() - began

        tasks = [asyncio.create_task(one(*call)) for call in calls]
        await asyncio.sleep(0.1)   # every task is waiting on `start`
        start.set()
        return await asyncio.gather(*tasks)


def burst(args: argparse.Namespace) -> dict:
    import sqlalchemy as sa

    home = Path(tempfile.mkdtemp(prefix="drl-bench-burst-"))
    with throwaway_postgres(args.postgres_url) as database_url:
        with drl_serve(home, "--no-worker", env={"DRL_DATABASE_URL": database_url}) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                seeded = client.post("/experiments", json=SPEC).json()["id"]
                client.post(f"/experiments/{seeded}/cancel")
            seed_embedding(home, seeded, args.rows, args.dim, database_url)
            key = f"burst-{uuid.uuid4().hex[:8]}"
            page = {"experiment": seeded, "t": 0.5, "split": "test", "limit": args.rows, "format": "npy"}
            mix = [("post_experiments_one_key", "POST",
                    {"url": "/experiments", "json": SPEC, "headers": {"Idempotency-Key": key}}),
                   ("get_experiment", "GET", {"url": f"/experiments/{seeded}"}),
                   ("get_embeddings_npy", "GET", {"url": "/embeddings", "params": page})]
            calls = [mix[i % len(mix)] for i in range(args.requests)]
            began = time.perf_counter()
            outcomes = asyncio.run(fire_burst(url, calls))
            wall_s = time.perf_counter() - began
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            with_key = connection.execute(sa.text(
                "SELECT count(*) FROM experiments WHERE idempotency_key = :key"), {"key": key}).scalar()
        engine.dispose()

    by_kind: dict = {}
    for kind in dict.fromkeys(k for k, _, _ in outcomes):
        mine = [(status, s) for k, status, s in outcomes if k == kind]
        by_kind[kind] = {**latency_figures([s for _, s in mine]),
                         "statuses": dict(Counter(str(status) for status, _ in mine))}
    statuses = Counter(str(status) for _, status, _ in outcomes)
    server_errors = sum(n for status, n in statuses.items() if not status.isdigit() or int(status) >= 500)
    return {"server": "drl serve --no-worker on PostgreSQL", "requests": len(outcomes),
            "concurrency": len(outcomes), "embedding_shape": [args.rows, args.dim],
            "quick": args.quick, "wall_s": wall_s, "statuses": dict(statuses),
            "server_errors": server_errors, "experiments_created_by_the_key": with_key,
            "all": latency_figures([s for _, _, s in outcomes]), **by_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="per endpoint (default 50); --burst: in all (default 200)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--burst", action="store_true",
                        help="every request at once against PostgreSQL (see the module docstring)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "DRL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="--burst: a server where this user may CREATE DATABASE (default $DRL_BENCH_POSTGRES_URL "
             "or the local test server)")
    parser.add_argument("--quick", action="store_true", help="few requests, small arrays: a smoke run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 200 if args.burst else 50
    if args.quick:
        args.requests, args.rows, args.dim = (30 if args.burst else 5), 500, 16

    out = burst(args) if args.burst else sequential(args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
