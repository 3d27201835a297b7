"""API benchmark against a real `drl serve` (embedded: SQLite, local artifacts, a worker).

    python bench/api.py [--requests 50] [--rows 10000] [--dim 128] [--quick] [--out FILE]

Starts `drl serve` on a free port with a fresh home, stores one (rows x dim) float32
embedding for a real experiment through the same artifact store and upsert the worker uses,
then times, one request after another over keep-alive connections:
- GET /embeddings (JSON, the whole 10,000 x 128 page) and the same page with format=npy;
- POST /experiments (a small spec; each queues a real train job);
- GET /healthz, the baseline: the server's per-request floor. Every figure's ratio is
  against it (`x_healthz_p50` = that endpoint's p50 latency / healthz's p50 latency).
Prints one JSON object: requests/s, p50 and p99 latency in milliseconds, bytes per response.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


def seed_embedding(home: Path, experiment_id: int, rows: int, dim: int) -> None:
    """Store a test-split embedding at t=0.5 exactly where the encode job would."""
    os.environ["DRL_HOME"] = str(home)
    from drl_core.artifact_keys import ArtifactKind, embedding_key, labels_key
    from drl_core.artifacts import build_store
    from drl_core.db import make_engine, session_factory
    from drl_core.settings import Settings
    from worker.context import upsert_artifact

    settings = Settings(home=home)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="few requests, small arrays: a smoke run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rows, args.dim = 5, 500, 16

    home = Path(tempfile.mkdtemp(prefix="drl-bench-api-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DRL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "drl_cli.main", "serve", "--port", str(port),
                               "--home", str(home)], env=env, stdout=subprocess.DEVNULL,
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
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

    floor = results["healthz"]["p50_ms"]
    for name, figures in results.items():
        figures["x_healthz_p50"] = figures["p50_ms"] / floor
    out = {"baseline": "GET /healthz p50 latency on the same server", "server": "drl serve (embedded)",
           "embedding_shape": [args.rows, args.dim], "quick": args.quick, **results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
