"""The HTTP API against a real PostgreSQL database, a real Redis broker (a key prefix of this
module's own) and a local artifact directory, through FastAPI's TestClient.

No worker runs here: where a test needs a job to have progressed, it moves the job through
the state machine (`job_states.transition` / `heartbeat`, what a worker calls) and stores the
artifacts a worker would (store + Artifact rows at the keys of `drl_core.artifact_keys`).
The end-to-end path with a real worker process is tests/test_api_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.auth import create_token, list_tokens, revoke_tokens
from api.main import create_app
from api.request_limits import MAX_BODY_BYTES
from api.routers.health import UNREPORTED_FAILURE
from drl_core.artifact_keys import (embedding_key, experiment_prefix, labels_key, log_key,
                                    probes_key, sample_key)
from drl_core.artifacts import LocalArtifactStore
from drl_core.code_usage_metrics import code_usage_points
from drl_core.db import session_factory
from drl_core.job_states import heartbeat, transition
from drl_core.models import ApiToken, Artifact, Experiment, Job, MetricPoint
from drl_core.settings import Settings
from drl_engine.code_usage_table import CodeUsage, CodeUsageRow
from drl_engine.probes import ProbeTable

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import service_settings_for  # noqa: E402

# broker_prefix (a Redis key prefix of this module's own, deleted at the end) and redis_url
pytest_plugins = ["worker_fixtures"]

PROBLEM = "application/problem+json"

TINY_SPEC = {
    "name": "tiny",
    "dataset": {"name": "digits", "train_limit": 300},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []},
    "train": {"iterations": 30, "batch_size": 16},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 200},
    "sample": {"steps": 10, "count": 4},
}


# --- fixtures ----------------------------------------------------------------------------


def make_settings(tmp_path: Path, pg_url: str, prefix: str, **overrides) -> Settings:
    return service_settings_for(pg_url, tmp_path / "home", prefix, **overrides)


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, broker_prefix: str, pg_engine: sa.Engine) -> Settings:
    # pg_engine: the tables are emptied after each test
    return make_settings(tmp_path, pg_url, broker_prefix)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def session(pg_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(pg_engine)() as s:
        yield s


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.resolved_artifact_dir)


# --- helpers -----------------------------------------------------------------------------


def assert_problem(response, status: int, *fields: str) -> dict:
    """The response is an RFC 9457 problem with `status`, naming each of `fields`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    named = {e["field"] for e in body.get("errors", [])}
    for field in fields:
        assert field in named, f"{field!r} not among the fields named: {body}"
    return body


def submit(client: TestClient, spec: dict | None = None, **headers) -> dict:
    response = client.post("/experiments", json=spec or TINY_SPEC, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def job_of(session: Session, experiment_id: int, kind: str) -> Job:
    session.expire_all()
    return session.scalars(sa.select(Job).where(Job.experiment_id == experiment_id, Job.kind == kind)
                           .order_by(Job.id)).first()


def run_job(session: Session, job: Job, status: str = "succeeded", **progress) -> None:
    """What a worker does to a job: running, a heartbeat with progress, then `status`."""
    transition(session, job, "running", worker="test")
    if progress:
        heartbeat(session, job, **progress)
    if status != "running":
        transition(session, job, status, **({"error": "it broke"} if status == "failed" else {}))
    session.commit()


def put_artifact(session: Session, store: LocalArtifactStore, experiment_id: int, kind: str,
                 key: str, data: bytes, **meta) -> None:
    stored = store.put_bytes(key, data)
    session.add(Artifact(experiment_id=experiment_id, kind=kind, key=key, size=stored.size,
                         sha256=stored.sha256, meta=meta))
    session.commit()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- validation and problem responses ----------------------------------------------------


def test_invalid_spec_is_a_422_problem_naming_the_field(client: TestClient, session: Session) -> None:
    body = assert_problem(client.post("/experiments", json={"model": {"kind": "gan"}}), 422, "model.kind")
    assert "model.kind" in body["detail"]
    assert body["type"] == "urn:drl:problem:validation-error"
    assert_problem(client.post("/experiments", json={"modle": {}}), 422, "modle")
    assert_problem(client.post("/experiments", json={"evaluate": {"t_grid": [0.5, 1.5]}}), 422,
                   "evaluate.t_grid.1")
    assert_problem(client.post("/experiments", json={"train": {"iterations": "many"}}), 422, "train.iterations")
    # not JSON at all, and JSON that is not an object
    assert_problem(client.post("/experiments", content=b"{not json", headers={"content-type": "application/json"}),
                   422, "body")
    assert_problem(client.post("/experiments", json=[1, 2]), 422, "body")
    assert_problem(client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "k" * 201}),
                   422, "Idempotency-Key")
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 0


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    body = assert_problem(client.get("/experiments/424242"), 404)
    assert "424242" in body["detail"] and body["type"] == "urn:drl:problem:not-found"
    assert_problem(client.get("/jobs/424242"), 404)
    for path in ("/experiments/abc", "/experiments/0", "/experiments/-3", f"/experiments/{10**20}"):
        assert_problem(client.get(path), 422, "experiment_id")
    assert_problem(client.get("/jobs/1.5"), 422, "job_id")
    assert_problem(client.post("/experiments/424242/cancel"), 404)
    assert_problem(client.delete("/experiments/424242"), 404)


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/no/such/route"), 404)
    assert body["type"] == "about:blank" and body["title"] == "Not Found"
    response = client.put("/experiments")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]


def test_a_server_fault_is_a_500_problem_without_a_traceback(
    settings: Settings, session: Session, store: LocalArtifactStore
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        experiment = submit(client)
        # a corrupt artifact: the server cannot decode what it stored
        put_artifact(session, store, experiment["id"], "embedding",
                     embedding_key(experiment["id"], "test", 0.5), b"not an npy file", split="test", t=0.5)
        response = client.get("/embeddings", params={"experiment": experiment["id"], "t": 0.5})
        body = assert_problem(response, 500)
        assert body["type"] == "urn:drl:problem:internal-error"
        assert "npy" not in body["detail"] and "File" not in response.text


def test_openapi_and_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/experiments", "/embeddings", "/readyz", "/jobs/{job_id}"} <= set(paths)
    responses = paths["/experiments"]["post"]["responses"]
    assert PROBLEM in responses["422"]["content"]


def test_oversized_and_non_json_bodies_are_refused(client: TestClient, session: Session) -> None:
    json_header = {"content-type": "application/json"}
    huge = json.dumps(dict(TINY_SPEC, name="a" * MAX_BODY_BYTES)).encode()
    body = assert_problem(client.post("/experiments", content=huge, headers=json_header), 413)
    assert str(MAX_BODY_BYTES) in body["detail"] and len(client.post(
        "/experiments", content=huge, headers=json_header).content) < 1000  # nothing echoed

    def chunks():  # no Content-Length: Transfer-Encoding chunked, counted as it streams
        for start in range(0, len(huge), 64 * 1024):
            yield huge[start:start + 64 * 1024]
    assert_problem(client.post("/experiments", content=chunks(), headers=json_header), 413)

    # what `curl -d @spec.json` sends without -H: a 415 naming the header, not "body: ..."
    small = json.dumps(TINY_SPEC).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        body = assert_problem(client.post("/experiments", content=small,
                                          headers={"content-type": content_type}), 415)
        assert body["detail"].startswith("Content-Type:") and content_type in body["detail"]
    body = assert_problem(client.post("/experiments", content=small), 415)
    assert "no Content-Type header" in body["detail"]
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 0

    # within the limit: JSON with a charset, a chunked JSON body; a POST without a body
    assert client.post("/experiments", content=small,
                       headers={"content-type": "application/json; charset=utf-8"}).status_code == 201
    created = client.post("/experiments", content=iter([small[:10], small[10:]]), headers=json_header)
    assert created.status_code == 201
    assert client.post(f"/experiments/{created.json()['id']}/cancel").status_code == 200


def test_a_rejected_value_is_not_echoed_whole(client: TestClient) -> None:
    long_name = "n" * 50_000
    response = client.post("/experiments", json=dict(TINY_SPEC, name=long_name))
    body = assert_problem(response, 422, "name")
    assert len(response.content) < 2000
    assert "50002 characters" in body["detail"]  # the repr's length: what was cut


# --- experiments -------------------------------------------------------------------------


def test_create_returns_the_experiment_and_enqueues_training(
    client: TestClient, settings: Settings, broker_prefix: str
) -> None:
    queue = redis.Redis.from_url(settings.broker_url)
    before = queue.llen(f"{broker_prefix}gpu")
    response = client.post("/experiments", json=TINY_SPEC)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/experiments/{body['id']}"
    assert body["name"] == "tiny" and body["status"] == "queued"
    assert body["spec"]["model"]["base_channels"] == 8
    assert [j["kind"] for j in body["jobs"]] == ["train", "encode", "probe", "sample"]
    assert body["jobs"][0]["progress"]["step"] is None
    # "run job N" went to this app's broker (this module's Redis prefix), for the train job
    message = json.loads(queue.lindex(f"{broker_prefix}gpu", 0))
    assert queue.llen(f"{broker_prefix}gpu") == before + 1
    assert message["headers"]["argsrepr"] == f"[{body['jobs'][0]['id']}]"
    queue.close()


def test_idempotent_create(client: TestClient, session: Session) -> None:
    first = client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "abc-1"})
    again = client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "abc-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 1
    other = dict(TINY_SPEC, name="different")
    assert_problem(client.post("/experiments", json=other, headers={"Idempotency-Key": "abc-1"}),
                   422, "Idempotency-Key")
    assert client.post("/experiments", json=other, headers={"Idempotency-Key": "abc-2"}).status_code == 201
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 2


def test_pagination_and_status_filter(client: TestClient) -> None:
    ids = [submit(client, dict(TINY_SPEC, name=f"e{i}"))["id"] for i in range(5)]
    for experiment_id in ids[:2]:
        assert client.post(f"/experiments/{experiment_id}/cancel").json()["status"] == "cancelled"

    page = client.get("/experiments", params={"limit": 2}).json()
    assert page["total"] == 5 and (page["offset"], page["limit"]) == (0, 2)
    assert [e["id"] for e in page["items"]] == ids[::-1][:2]  # newest first
    last = client.get("/experiments", params={"limit": 2, "offset": 4}).json()
    assert [e["id"] for e in last["items"]] == [ids[0]]
    assert client.get("/experiments", params={"offset": 99}).json()["items"] == []

    cancelled = client.get("/experiments", params={"status": "cancelled"}).json()
    assert cancelled["total"] == 2 and {e["id"] for e in cancelled["items"]} == set(ids[:2])
    queued = client.get("/experiments", params={"status": "queued", "limit": 2, "offset": 1}).json()
    assert queued["total"] == 3 and [e["id"] for e in queued["items"]] == [ids[3], ids[2]]

    assert_problem(client.get("/experiments", params={"status": "sleeping"}), 422, "status")
    assert_problem(client.get("/experiments", params={"limit": 0}), 422, "limit")
    assert_problem(client.get("/experiments", params={"limit": 100_000}), 422, "limit")
    assert_problem(client.get("/experiments", params={"offset": -1}), 422, "offset")
    assert_problem(client.get("/experiments", params={"offset": "x"}), 422, "offset")


def test_experiment_shows_progress_failed_step_and_summary(
    client: TestClient, session: Session, store: LocalArtifactStore
) -> None:
    experiment_id = submit(client)["id"]
    train = job_of(session, experiment_id, "train")
    run_job(session, train, "running", step=12, total=30, loss=0.75, log_tail=["step 12 loss 0.75"])
    body = client.get(f"/experiments/{experiment_id}").json()
    assert body["status"] == "running"
    assert body["jobs"][0]["progress"] == {**body["jobs"][0]["progress"], "step": 12, "total": 30,
                                           "fraction": pytest.approx(0.4), "loss": 0.75}
    assert body["summary"]["last_loss"] == 0.75 and body["summary"]["best_t"] is None

    job = client.get(f"/jobs/{train.id}").json()
    assert job["attempt"] == 1 and job["log_tail"] == ["step 12 loss 0.75"]
    assert [j["kind"] for j in client.get(f"/experiments/{experiment_id}/jobs").json()] == \
        ["train", "encode", "probe", "sample"]

    transition(session, train, "failed", error="CUDA out of memory")
    session.commit()
    body = client.get(f"/experiments/{experiment_id}").json()
    assert body["status"] == "running"  # the downstream jobs are still queued: not settled here
    assert (body["failed_step"], body["error"]) == ("train", "CUDA out of memory")

    best = {"svc_20": {"t": 0.5, "value": 0.8, "validation": 0.85}}
    control_best = {"svc_20": {"t": 0.0, "value": 0.3, "validation": 0.25}}
    put_artifact(session, store, experiment_id, "probes", probes_key(experiment_id), b"{}",
                 format="json", best=best, control_best=control_best)
    summary = client.get(f"/experiments/{experiment_id}").json()["summary"]
    assert (summary["best_t"], summary["control_best_t"]) == (best, control_best)


def test_cancel_and_delete(client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    run_job(session, job_of(session, experiment_id, "train"), "running", step=1, total=30)
    put_artifact(session, store, experiment_id, "embedding", embedding_key(experiment_id, "test", 0.5),
                 npy_bytes(np.zeros((3, 2), np.float32)), split="test", t=0.5)

    body = client.post(f"/experiments/{experiment_id}/cancel").json()
    assert body["status"] == "cancelling"
    assert [j["status"] for j in body["jobs"]] == ["cancelling", "cancelled", "cancelled", "cancelled"]
    assert client.post(f"/experiments/{experiment_id}/cancel").json()["status"] == "cancelling"

    response = client.delete(f"/experiments/{experiment_id}")
    assert response.status_code == 204 and response.content == b""
    assert store.list(experiment_prefix(experiment_id)) == []
    assert_problem(client.get(f"/experiments/{experiment_id}"), 404)
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


# --- results -----------------------------------------------------------------------------


def test_metrics_are_downsampled_with_lttb(client: TestClient, session: Session) -> None:
    experiment_id = submit(client)["id"]
    train = job_of(session, experiment_id, "train")
    steps = np.arange(1000) * 10
    values = 1.0 / (1.0 + steps / 1000.0)
    values[537] = 50.0  # a loss spike: LTTB keeps extremes
    values[900] = float("nan")
    session.add_all(MetricPoint(experiment_id=experiment_id, job_id=train.id, key="loss",
                                step=int(s), value=float(v)) for s, v in zip(steps, values))
    session.add(MetricPoint(experiment_id=experiment_id, job_id=train.id, key="lr", step=0, value=1e-4))
    session.commit()

    body = client.get(f"/experiments/{experiment_id}/metrics", params={"max_points": 50}).json()
    points = body["points"]
    assert body["method"] == "lttb" and body["key"] == "loss"
    assert len(points) == 50 and body["total_points"] == 999 and body["dropped_non_finite"] == 1
    got_steps = [p["step"] for p in points]
    assert got_steps[0] == 0 and got_steps[-1] == 9990 and got_steps == sorted(got_steps)
    assert {"step": 5370, "value": 50.0} in points
    for p in points:  # real points, not averages
        assert p["value"] == pytest.approx(1.0 / (1.0 + p["step"] / 1000.0)) or p["step"] == 5370
    assert body["keys"] == ["loss", "lr"]

    everything = client.get(f"/experiments/{experiment_id}/metrics", params={"max_points": 5000}).json()
    assert len(everything["points"]) == 999
    # A key with no points: not ready while the train job (queued here) may still record it,
    # not found once it has stopped; both list the recorded keys.
    body = assert_problem(client.get(f"/experiments/{experiment_id}/metrics", params={"key": "fid"}), 409)
    assert body["type"] == "urn:drl:problem:not-ready" and body["keys"] == ["loss", "lr"]
    assert "train job" in body["detail"] and "loss, lr" in body["detail"]
    run_job(session, train)
    body = assert_problem(client.get(f"/experiments/{experiment_id}/metrics", params={"key": "fid"}), 404)
    assert body["type"] == "urn:drl:problem:not-found" and body["keys"] == ["loss", "lr"]
    assert "'fid'" in body["detail"] and "recorded keys: loss, lr" in body["detail"]
    for bad in (1, 10**6, "x"):
        assert_problem(client.get(f"/experiments/{experiment_id}/metrics", params={"max_points": bad}),
                       422, "max_points")
    assert_problem(client.get(f"/experiments/{experiment_id}/metrics", params={"key": "a b"}), 422, "key")
    assert_problem(client.get("/experiments/424242/metrics"), 404)


def test_embeddings_pages_equal_the_stored_array(
    client: TestClient, session: Session, store: LocalArtifactStore
) -> None:
    experiment_id = submit(client)["id"]
    rng = np.random.default_rng(0)
    codes = (rng.standard_normal((300, 16)) * 10.0 ** rng.integers(-6, 4, (300, 16))).astype(np.float32)
    labels = rng.integers(0, 10, 300)
    for t in (0.5, 1.0):
        put_artifact(session, store, experiment_id, "embedding", embedding_key(experiment_id, "test", t),
                     npy_bytes(codes * t), split="test", t=t)
    put_artifact(session, store, experiment_id, "labels", labels_key(experiment_id, "test"),
                 npy_bytes(labels), split="test")

    params = {"experiment": experiment_id, "t": 0.5, "offset": 100, "limit": 50}
    response = client.get("/embeddings", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-total-count"] == "300"
    page = response.json()
    assert {k: page[k] for k in ("experiment", "t", "split", "total", "offset", "limit", "dim")} == \
        {"experiment": experiment_id, "t": 0.5, "split": "test", "total": 300, "offset": 100,
         "limit": 50, "dim": 16}
    assert [item["index"] for item in page["items"]] == list(range(100, 150))
    assert [item["label"] for item in page["items"]] == labels[100:150].tolist()
    vectors = np.array([item["vector"] for item in page["items"]], dtype=np.float32)
    np.testing.assert_array_equal(vectors, codes[100:150] * np.float32(0.5))

    response = client.get("/embeddings", params=params | {"format": "npy"})
    assert response.headers["content-type"] == "application/octet-stream"
    assert (response.headers["x-total-count"], response.headers["x-offset"]) == ("300", "100")
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content)), codes[100:150] * np.float32(0.5))

    tail = client.get("/embeddings", params=params | {"offset": 290}).json()
    assert len(tail["items"]) == 10
    assert client.get("/embeddings", params=params | {"offset": 5000}).json()["items"] == []
    # a t rounded to 3 decimals names the same embedding
    assert client.get("/embeddings", params=params | {"t": 0.5000001}).json()["t"] == 0.5

    # The split's labels, row by row with its codes at every t (what drl embeddings saves).
    response = client.get("/embeddings/labels", params={"experiment": experiment_id})
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content)), labels)


def test_embeddings_errors(client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    params = {"experiment": experiment_id, "t": 0.5}
    body = assert_problem(client.get("/embeddings", params=params), 409)   # not ready
    assert body["type"] == "urn:drl:problem:not-ready"
    assert "encode job" in body["detail"] and "queued" in body["detail"]
    labels = {"experiment": experiment_id, "split": "test"}
    body = assert_problem(client.get("/embeddings/labels", params=labels), 409)
    assert body["type"] == "urn:drl:problem:not-ready" and "encode job" in body["detail"]
    for t in (0.0, 1.0):
        put_artifact(session, store, experiment_id, "embedding", embedding_key(experiment_id, "test", t),
                     npy_bytes(np.zeros((4, 2), np.float32)), split="test", t=t)
    body = assert_problem(client.get("/embeddings", params=params | {"t": 0.25}), 404)
    assert body["computed_t"] == [0.0, 1.0] and "0, 1" in body["detail"]
    # Encoded, and no labels stored: an unlabelled dataset.
    body = assert_problem(client.get("/embeddings/labels", params=labels), 404)
    assert body["type"] == "urn:drl:problem:not-found" and "no labels" in body["detail"]
    assert_problem(client.get("/embeddings", params=params | {"split": "val"}), 422, "split")
    # The test split is encoded, the train split not yet: not ready.
    assert_problem(client.get("/embeddings", params=params | {"split": "train", "t": 0.0}), 409)
    for t in (1.5, -0.1, "half", "nan"):
        assert_problem(client.get("/embeddings", params=params | {"t": t}), 422, "t")
    assert_problem(client.get("/embeddings", params={"t": 0.5}), 422, "experiment")
    assert_problem(client.get("/embeddings", params=params | {"experiment": 424242}), 404)
    assert_problem(client.get("/embeddings", params=params | {"limit": 20_000}), 422, "limit")
    assert_problem(client.get("/embeddings", params=params | {"limit": 10**6, "format": "npy"}), 422, "limit")
    assert_problem(client.get("/embeddings", params=params | {"format": "csv"}), 422, "format")
    assert_problem(client.get("/embeddings", params=params | {"offset": -1}), 422, "offset")


def test_probes(client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    body = assert_problem(client.get(f"/experiments/{experiment_id}/probes"), 409)
    assert body["type"] == "urn:drl:problem:not-ready"
    assert "probe job" in body["detail"] and "queued" in body["detail"]
    # As the probe job stores it: the test split favours t = 0.5, validation t = 1.0.
    table = ProbeTable(columns=["svc_20", "linear"], rows=[
        {"t": 0.0, "svc_20": 0.5, "val_svc_20": 0.5, "linear": 0.6, "val_linear": 0.6},
        {"t": 0.5, "svc_20": 0.9, "val_svc_20": 0.7, "linear": math.nan, "val_linear": 0.62},
        {"t": 1.0, "svc_20": 0.7, "val_svc_20": 0.8, "linear": 0.65, "val_linear": 0.61},
    ], control_rows=[
        {"t": t, "svc_20": 0.2, "val_svc_20": 0.25, "linear": 0.3, "val_linear": 0.3}
        for t in (0.0, 0.5, 1.0)]).to_dict()
    put_artifact(session, store, experiment_id, "probes", probes_key(experiment_id),
                 json.dumps(table).encode(), format="json", best=table["best"])
    body = client.get(f"/experiments/{experiment_id}/probes").json()
    assert body["t_values"] == [0.0, 0.5, 1.0]
    assert body["rows"] == table["rows"] and body["best"] == table["best"]
    assert body["best"]["svc_20"] == {"t": 1.0, "value": 0.7, "validation": 0.8}
    assert body["best"]["linear"] == {"t": 0.5, "value": None, "validation": 0.62}
    assert body["control_rows"] == table["control_rows"] and len(body["control_rows"]) == 3
    assert body["control_best"]["svc_20"] == {"t": 0.0, "value": 0.2, "validation": 0.25}

    # Probes stored before validation splits and controls existed are still served.
    old = {"columns": ["svc_20"], "rows": [{"t": 0.5, "svc_20": 0.9}],
           "best": {"svc_20": {"t": 0.5, "value": 0.9}}}
    store.put_bytes(probes_key(experiment_id), json.dumps(old).encode())
    body = client.get(f"/experiments/{experiment_id}/probes").json()
    assert body["best"] == {"svc_20": {"t": 0.5, "value": 0.9, "validation": None}}
    assert (body["control_rows"], body["control_best"]) == ([], {})


def test_control_embeddings_only_when_asked(client: TestClient, session: Session,
                                            store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    control = np.arange(8, dtype=np.float32).reshape(4, 2)
    put_artifact(session, store, experiment_id, "control_embedding",
                 embedding_key(experiment_id, "test", 0.5, "random_init"), npy_bytes(control),
                 split="test", t=0.5)
    params = {"experiment": experiment_id, "t": 0.5}
    # Not among the trained encoder's embeddings (none is stored yet)...
    body = assert_problem(client.get("/embeddings", params=params), 409)
    assert body["computed_t"] == [] and "encode job" in body["detail"]
    assert client.get(f"/experiments/{experiment_id}").json()["summary"]["embeddings"] == \
        {"train": [], "test": []}
    # ...but served when asked for.
    page = client.get("/embeddings", params=params | {"encoder": "random_init"}).json()
    assert (page["encoder"], page["total"]) == ("random_init", 4)
    np.testing.assert_array_equal(np.array([i["vector"] for i in page["items"]], np.float32), control)
    npy = client.get("/embeddings", params=params | {"encoder": "random_init", "format": "npy"})
    assert "random_init" in npy.headers["content-disposition"]
    body = assert_problem(client.get("/embeddings", params=params | {"encoder": "random_init",
                                                                    "t": 0.25}), 404)
    assert body["computed_t"] == [0.5] and "random_init control" in body["detail"]
    assert_problem(client.get("/embeddings", params=params | {"encoder": "untrained"}), 422,
                   "encoder")


def test_encodings_request(client: TestClient, session: Session) -> None:
    experiment_id = submit(client)["id"]
    # Before training finished the job waits behind it, as a sample request does.
    waiting = client.post(f"/experiments/{experiment_id}/encodings", json={"t": [0.3]})
    assert waiting.status_code == 202 and waiting.json()["status"] == "queued"
    run_job(session, job_of(session, experiment_id, "train"))
    for bad in ({"t": [1.5]}, {"t": []}, {"t": "0.3"}, {"t": [0.3], "split": "x"}):
        assert_problem(client.post(f"/experiments/{experiment_id}/encodings", json=bad), 422)
    assert_problem(client.post(f"/experiments/{experiment_id}/encodings", json={"t": [0.2, 2]}), 422, "t.1")
    response = client.post(f"/experiments/{experiment_id}/encodings", json={"t": [0.3, 0.25, 0.3]})
    assert response.status_code == 202
    job = response.json()
    assert job["kind"] == "encode" and job["status"] == "queued" and job["params"]["t"] == [0.25, 0.3]


def test_samples_request_and_png(client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    url = f"/experiments/{experiment_id}/samples"
    assert_problem(client.post(url, json={"steps": 0}), 422, "steps")
    assert_problem(client.post(url, json={"sampler": "magic"}), 422, "sampler")
    assert_problem(client.post(url, json={"stepz": 5}), 422, "stepz")
    assert_problem(client.post(url, json={"code_source": "grid"}), 422)  # needs latent_dim 2

    response = client.post(url, json={"sampler": "ode", "steps": 20, "count": 4, "seed": 3})
    assert response.status_code == 202
    job = response.json()
    assert job["kind"] == "sample" and job["params"]["sample"]["sampler"] == "ode"
    assert job["params"]["sample"]["steps"] == 20 and job["params"]["sample"]["snr"] == 0.16

    body = assert_problem(client.get(f"{url}/{job['id']}.png"), 409)
    assert body["job_status"] == "queued"
    run_job(session, job_of(session, experiment_id, "train"))
    sample_job = session.get(Job, job["id"])
    run_job(session, sample_job)
    png = b"\x89PNG\r\n\x1a\n-pretend"
    put_artifact(session, store, experiment_id, "sample", sample_key(experiment_id, job["id"]), png,
                 job_id=job["id"])
    for path in (f"{url}/{job['id']}.png", f"{url}/{job['id']}"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == png
    train_id = job_of(session, experiment_id, "train").id
    assert_problem(client.get(f"{url}/{train_id}.png"), 404)  # not a sample job
    assert_problem(client.get(f"{url}/424242.png"), 404)
    assert_problem(client.get(f"{url}/abc.png"), 422, "job_id")


def test_sample_listing_shows_nfe_seconds_and_the_fd_interval_and_still_lists_old_meta(
        client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    url = f"/experiments/{experiment_id}/samples"
    run_job(session, job_of(session, experiment_id, "train"))
    old, new = (client.post(url, json={"count": 4}).json()["id"] for _ in range(2))
    floor = {"value": 1.5, "ci_low": 0.0, "ci_high": 0.4, "samples": 1000,
             "estimated_bias": 1.2, "split": "train"}
    fd_new = {"value": 3.25, "ci_low": 1.0, "ci_high": 1.5, "samples": 1000, "estimated_bias": 2.0,
              "ci_level": 0.95, "resamples": 200, "smoke": False, "floor": floor, "steps": 10,
              "name": "FD-LeNet", "reference": "test"}
    # Meta stored before 1f3b9dc and intervals: no nfe, seconds, interval, floor or smoke.
    fd_old = {"value": 7.5, "samples": 4, "steps": 10, "name": "FD-LeNet", "reference": "test",
              "note": "only 4 samples (< 1000): biased upward"}
    for job_id, meta in ((old, {"count": 4, "sampler": "pc", "steps": 10, "code_source": "encoded",
                                "fd_lenet": fd_old}),
                         (new, {"count": 1000, "sampler": "pc", "steps": 10, "nfe": 20,
                                "seconds": 12.5, "code_source": "encoded", "fd_lenet": fd_new})):
        run_job(session, session.get(Job, job_id))
        put_artifact(session, store, experiment_id, "sample", sample_key(experiment_id, job_id),
                     b"png", job_id=job_id, **meta)

    response = client.get(url)
    assert response.status_code == 200, response.text
    listed = {s["job_id"]: s for s in response.json()}
    assert (listed[new]["nfe"], listed[new]["seconds"]) == (20, 12.5)
    fd = listed[new]["fd_lenet"]
    assert (fd["value"], fd["ci_low"], fd["ci_high"], fd["ci_level"], fd["estimated_bias"]) == (
        3.25, 1.0, 1.5, 0.95, 2.0)
    assert fd["samples"] == 1000 and fd["smoke"] is False and fd["floor"] == {
        k: floor[k] for k in ("value", "ci_low", "ci_high", "samples", "split")}
    assert listed[old]["nfe"] is None and listed[old]["seconds"] is None
    fd = listed[old]["fd_lenet"]
    assert (fd["value"], fd["samples"], fd["ci_low"], fd["ci_high"], fd["floor"]) == (
        7.5, 4, None, None, None)
    assert fd["smoke"] is True   # its note marked it


def test_job_log(client: TestClient, session: Session, store: LocalArtifactStore) -> None:
    experiment_id = submit(client)["id"]
    train = job_of(session, experiment_id, "train")
    url = f"/jobs/{train.id}/log"
    response = client.get(url)
    assert (response.status_code, response.text) == (200, "")   # queued: nothing logged yet
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert client.get(url, params={"follow": True}).text == ""  # not running: ends at once
    run_job(session, train, "running", log_tail=["loading", "step 1"])
    assert client.get(url).text == "loading\nstep 1\n"         # nothing stored yet: the tail
    store.put_bytes(log_key(experiment_id, train.id), b"=== attempt 1 ===\nloading\nstep 1\n")
    assert client.get(url).text == "=== attempt 1 ===\nloading\nstep 1\n"
    assert client.get(url, params={"offset": 26}).text == "step 1\n"
    transition(session, train, "succeeded")
    session.commit()
    followed = client.get(url, params={"follow": True, "offset": 18})
    assert followed.status_code == 200 and followed.text == "loading\nstep 1\n"
    assert client.get(url, params={"offset": 1000}).text == ""
    assert_problem(client.get("/jobs/424242/log"), 404)
    assert_problem(client.get(url, params={"offset": -1}), 422, "offset")


# --- health ------------------------------------------------------------------------------


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    body = client.get("/readyz").json()
    assert body["checks"] == {"database": "ok", "broker": "ok", "artifact_store": "ok"}


def test_readyz_names_a_broker_that_is_down(tmp_path: Path, pg_url: str, broker_prefix: str) -> None:
    settings = make_settings(tmp_path, pg_url, broker_prefix, broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(settings)) as client:
        body = assert_problem(client.get("/readyz"), 503)
        assert body["failed"] == ["broker"] and body["checks"]["database"] == "ok"
        assert "broker" in body["detail"] and body["checks"]["broker"] == UNREPORTED_FAILURE
        assert client.get("/healthz").status_code == 200


def test_readyz_says_what_is_down_but_not_where_it_is(tmp_path: Path, broker_prefix: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Anyone may read /readyz: it names the failed dependencies, never their host, port or
    credentials (a DSN's password); those go to the server log."""
    port = closed_port()
    settings = make_settings(
        tmp_path, f"postgresql+psycopg://dbuser:db-s3cret@127.0.0.1:{port}/drl", broker_prefix,
        broker_url=f"redis://:redis-s3cret@127.0.0.1:{port}/0", artifact_backend="s3",
        s3_endpoint=f"127.0.0.1:{port}", s3_secret_key="store-s3cret")
    with caplog.at_level(logging.WARNING, logger="drl.api"), TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    body = assert_problem(response, 503)
    assert body["failed"] == ["database", "broker", "artifact_store"]
    assert set(body["checks"].values()) == {UNREPORTED_FAILURE}
    for leak in (str(port), "127.0.0.1", "s3cret", "dbuser", "redis://", "postgresql"):
        assert leak not in response.text, leak
    assert str(port) in caplog.text   # the operator still learns why


def test_broker_down_on_create_is_a_201_and_the_reaper_sends_it_later(
    tmp_path: Path, pg_url: str, broker_prefix: str, settings: Settings, session: Session
) -> None:
    """Honest creates: the experiment is saved and answered as created (an error would be
    retried into a duplicate); its train job waits queued, unsent, for the reaper. A replay
    of the key sends nothing."""
    from datetime import timedelta

    from drl_core.job_states import utc_now
    from drl_core.queue import make_celery
    from worker.reaper import resend_unsent_jobs

    port = closed_port()
    down = make_settings(tmp_path, pg_url, broker_prefix, broker_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(create_app(down)) as client:
        response = client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "retry-me"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "queued"
    train = job_of(session, created["id"], "train")
    assert (train.status, train.enqueued_at) == ("queued", None)   # saved, not sent

    queue = redis.Redis.from_url(settings.broker_url)
    before = queue.llen(f"{broker_prefix}gpu")
    with TestClient(create_app(settings)) as client:
        retry = client.post("/experiments", json=TINY_SPEC, headers={"Idempotency-Key": "retry-me"})
    assert retry.status_code == 200 and retry.json()["id"] == created["id"]
    assert queue.llen(f"{broker_prefix}gpu") == before              # the replay sent nothing
    celery_app = make_celery(settings)
    later = utc_now() + timedelta(seconds=61)
    assert resend_unsent_jobs(session, later, grace_s=60, resend_after_s=3600,
                              celery_app=celery_app) == [train.id]
    assert queue.llen(f"{broker_prefix}gpu") == before + 1
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 1
    celery_app.close()
    queue.close()


def test_readyz_names_a_database_without_migrations(tmp_path: Path, empty_pg_url: str, broker_prefix: str) -> None:
    with TestClient(create_app(make_settings(tmp_path, empty_pg_url, broker_prefix))) as client:
        body = assert_problem(client.get("/readyz"), 503)
        assert body["failed"] == ["database"] and "migration" in body["detail"]


# --- authentication ----------------------------------------------------------------------


@pytest.fixture
def auth_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"auth_enabled": True}))) as test_client:
        yield test_client


@pytest.fixture
def tokens(session: Session) -> dict[str, str]:
    made = {name: create_token(session, name, "laptop") for name in ("alice", "bob")}
    session.commit()
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_requires_a_valid_token(auth_client: TestClient, tokens: dict[str, str]) -> None:
    for headers in ({}, bearer("drl_not-a-real-token"), {"Authorization": f"Basic {tokens['alice']}"}):
        response = auth_client.get("/experiments", headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in auth_client.get("/experiments", headers=bearer("drl_x")).headers["www-authenticate"]
    assert_problem(auth_client.post("/experiments", json=TINY_SPEC), 401)
    assert_problem(auth_client.get("/embeddings", params={"experiment": 1, "t": 0.5}), 401)
    assert auth_client.get("/healthz").status_code == 200
    assert auth_client.get("/readyz").status_code == 200
    assert auth_client.get("/experiments", headers=bearer(tokens["alice"])).status_code == 200


def test_only_the_owner_may_cancel_or_delete(auth_client: TestClient, tokens: dict[str, str]) -> None:
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    created = auth_client.post("/experiments", json=TINY_SPEC, headers=alice | {"Idempotency-Key": "k1"}).json()
    assert created["owner"] == "alice"
    experiment_id = created["id"]
    # idempotency keys are per owner: bob's "k1" is another experiment
    bobs = auth_client.post("/experiments", json=TINY_SPEC, headers=bob | {"Idempotency-Key": "k1"})
    assert bobs.status_code == 201 and bobs.json()["id"] != experiment_id

    assert auth_client.get(f"/experiments/{experiment_id}", headers=bob).status_code == 200  # a team reads all
    assert_problem(auth_client.post(f"/experiments/{experiment_id}/cancel", headers=bob), 403)
    assert_problem(auth_client.delete(f"/experiments/{experiment_id}", headers=bob), 403)
    assert auth_client.get(f"/experiments/{experiment_id}", headers=alice).json()["status"] == "queued"

    assert auth_client.post(f"/experiments/{experiment_id}/cancel", headers=alice).status_code == 200
    assert auth_client.delete(f"/experiments/{experiment_id}", headers=alice).status_code == 204


# Every write on an experiment: (method, path, body, the owner's status). A resume needs
# something to resume: the experiment is cancelled first.
WRITES = {
    "cancel": ("POST", "/experiments/{id}/cancel", None, 200),
    "resume": ("POST", "/experiments/{id}/resume", None, 202),
    "delete": ("DELETE", "/experiments/{id}", None, 204),
    "samples": ("POST", "/experiments/{id}/samples", {"count": 4}, 202),
    "encodings": ("POST", "/experiments/{id}/encodings", {"t": [0.3]}, 202),
}


@pytest.mark.parametrize("action", WRITES)
def test_each_write_is_the_owners_or_an_admins(auth_client: TestClient, tokens: dict[str, str],
                                              session: Session, action: str) -> None:
    method, path, body, allowed = WRITES[action]
    root = create_token(session, "root", "laptop", admin=True)
    session.commit()
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    for writer in (alice, bearer(root)):   # each on an experiment of alice's
        experiment_id = submit(auth_client, None, **alice)["id"]
        if action == "resume":
            cancelled = auth_client.post(f"/experiments/{experiment_id}/cancel", headers=alice)
            assert cancelled.status_code == 200
        url = path.format(id=experiment_id)
        refused = assert_problem(auth_client.request(method, url, json=body, headers=bob), 403)
        assert refused["owner"] == "alice" and refused["experiment"] == experiment_id
        assert (f"only the owner of experiment {experiment_id} (alice) or an admin"
                in refused["detail"])
        assert auth_client.get(f"/experiments/{experiment_id}", headers=bob).status_code == 200
        response = auth_client.request(method, url, json=body, headers=writer)
        assert response.status_code == allowed, response.text


def test_a_revoked_token_is_refused_at_once(auth_client: TestClient, tokens: dict[str, str],
                                            session: Session) -> None:
    assert auth_client.get("/experiments", headers=bearer(tokens["alice"])).status_code == 200
    assert [t.name for t in revoke_tokens(session, "alice")] == ["laptop"]
    session.commit()
    assert_problem(auth_client.get("/experiments", headers=bearer(tokens["alice"])), 401)
    assert auth_client.get("/experiments", headers=bearer(tokens["bob"])).status_code == 200
    assert [(t.user.name, t.name) for t in list_tokens(session)] == [("bob", "laptop")]
    assert [t.user.name for t in list_tokens(session, include_revoked=True)] == ["alice", "bob"]
    assert list_tokens(session, "alice") == []
    with pytest.raises(LookupError, match="'alice' has no active token"):
        revoke_tokens(session, "alice")
    with pytest.raises(LookupError, match="no user 'carol'"):
        revoke_tokens(session, "carol")


def test_tokens_are_stored_hashed(session: Session, tokens: dict[str, str]) -> None:
    rows = session.scalars(sa.select(ApiToken)).all()
    assert len(rows) == 2 and len(set(tokens.values())) == 2
    for row in rows:
        token = tokens[row.user.name]
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token.startswith(row.prefix) and len(row.prefix) < len(token) // 3
    dump = "\n".join(str(v) for row in session.execute(sa.text("SELECT * FROM api_tokens")) for v in row)
    for token in tokens.values():
        assert token not in dump


def test_with_auth_on_datasets_are_read_only_from_the_data_folder(
        settings: Settings, tokens: dict[str, str], tmp_path: Path) -> None:
    """A shared box: a spec cannot make the workers read files outside DRL_DATA_DIR."""
    data = tmp_path / "team-data"
    (data / "mine").mkdir(parents=True)
    np.savez(data / "mine" / "x.npz", x_train=np.zeros((4, 16, 16), np.uint8))
    app_settings = settings.model_copy(update={"auth_enabled": True, "data_dir": data})
    alice = bearer(tokens["alice"])
    with TestClient(create_app(app_settings)) as client:
        for field, value in (("path", "/etc/passwd"), ("path", "../outside.npz"), ("data_dir", "/")):
            dataset = {"name": "npz", "path": "x.npz"} | {field: value}
            body = assert_problem(client.post("/experiments", json={**TINY_SPEC, "dataset": dataset},
                                              headers=alice), 422, f"dataset.{field}")
            assert "data folder" in body["detail"]
        created = client.post("/experiments", headers=alice, json={
            **TINY_SPEC, "dataset": {"name": "npz", "path": "mine/x.npz"}})
        assert created.status_code == 201
        assert created.json()["spec"]["dataset"]["path"] == str((data / "mine" / "x.npz").resolve())


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_a_nul_byte_in_a_path_or_the_name_is_a_422_naming_it(
        settings: Settings, session: Session, tokens: dict[str, str], tmp_path: Path, auth: bool) -> None:
    """Was a 500 (auth on: resolving the path inside the data folder raised on the NUL; a name:
    PostgreSQL text cannot hold NUL), or, auth off, a path stored that fails its jobs later."""
    app_settings = settings.model_copy(update={"auth_enabled": auth, "data_dir": tmp_path})
    with TestClient(create_app(app_settings)) as client:
        for field, spec in (
                ("dataset.path", {**TINY_SPEC, "dataset": {"name": "npz", "path": "x\x00.npz"}}),
                ("dataset.data_dir", {**TINY_SPEC, "dataset": {"name": "digits", "data_dir": "d\x00"}}),
                ("name", {**TINY_SPEC, "name": "tiny\x00"})):
            body = assert_problem(client.post("/experiments", json=spec, headers=bearer(tokens["alice"])),
                                  422, field)
            assert "NUL byte" in body["detail"], body
    assert session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 0


def count_rows(session: Session) -> tuple[int, int]:
    return (session.scalar(sa.select(sa.func.count()).select_from(Experiment)),
            session.scalar(sa.select(sa.func.count()).select_from(Job)))


def test_a_missing_or_corrupt_dataset_file_is_a_422_naming_field_and_file(
        settings: Settings, session: Session, tmp_path: Path, data_dir: Path) -> None:
    """Checked at submit (headers only) rather than failing the train job when its turn comes;
    nothing is stored. Here the API sees the workers' data folder (DRL_DATA_DIR is a folder)."""
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (data / "mnist" / f"{stem}-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
    (data / "text.npz").write_text("x_train,y_train\n1,2\n")
    np.savez(data / "fine.npz", x_train=np.zeros((4, 16, 16), np.uint8))
    app_settings = settings.model_copy(update={"data_dir": data})
    with TestClient(create_app(app_settings)) as client:
        for dataset, field, named_file in (
                ({"name": "npz", "path": str(data / "gone.npz")}, "dataset.path", data / "gone.npz"),
                ({"name": "npz", "path": str(data / "text.npz")}, "dataset.path", data / "text.npz"),
                ({"name": "mnist"}, "dataset.name", data / "mnist" / "train-images-idx3-ubyte.gz"),
                ({"name": "cifar10", "data_dir": str(tmp_path / "elsewhere")}, "dataset.data_dir",
                 tmp_path / "elsewhere" / "cifar-10-batches-py")):
            response = client.post("/experiments", json={**TINY_SPEC, "dataset": dataset},
                                   headers={"Idempotency-Key": f"k-{field}-{named_file.name}"})
            body = assert_problem(response, 422, field)
            assert body["detail"].startswith(f"{field}: {named_file}: "), body["detail"]
            assert "\n" not in body["detail"]
        assert count_rows(session) == (0, 0)
        assert submit(client, {**TINY_SPEC, "dataset": {"name": "npz", "path": str(data / "fine.npz")}})
        assert submit(client, {**TINY_SPEC, "dataset": {"name": "mnist", "data_dir": str(data_dir)}})


def test_the_dataset_check_runs_only_where_the_api_sees_the_workers_files(
        settings: Settings, session: Session, tmp_path: Path) -> None:
    """docs/DEPLOY.md's rule: embedded (no broker URL), always; with a broker, when DRL_DATA_DIR
    is a folder on the API's machine; never with check_datasets_at_submit off. A replay of an
    idempotent create answers with the experiment, whatever happened to its file since."""
    from drl_core.data_paths import api_sees_worker_data

    missing = {**TINY_SPEC, "dataset": {"name": "npz", "path": str(tmp_path / "gone.npz")}}
    assert api_sees_worker_data(settings.model_copy(update={"broker_url": None, "data_dir": None}))
    for update in ({"data_dir": None}, {"data_dir": tmp_path / "not-here"},
                   {"data_dir": tmp_path, "check_datasets_at_submit": False}):
        assert not api_sees_worker_data(settings.model_copy(update=update))
        with TestClient(create_app(settings.model_copy(update=update))) as client:
            assert client.post("/experiments", json=missing).status_code == 201

    here = tmp_path / "here.npz"
    np.savez(here, x_train=np.zeros((4, 16, 16), np.uint8))
    spec = {**TINY_SPEC, "dataset": {"name": "npz", "path": str(here)}}
    with TestClient(create_app(settings.model_copy(update={"data_dir": tmp_path}))) as client:
        first = client.post("/experiments", json=spec, headers={"Idempotency-Key": "once"})
        assert first.status_code == 201
        here.unlink()
        again = client.post("/experiments", json=spec, headers={"Idempotency-Key": "once"})
        assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
        assert_problem(client.post("/experiments", json=spec), 422, "dataset.path")


def test_code_usage(client: TestClient, session: Session) -> None:
    experiment_id = submit(client)["id"]
    url = f"/experiments/{experiment_id}/code-usage"
    body = assert_problem(client.get(url), 409)
    assert body["type"] == "urn:drl:problem:not-ready"
    assert "train job" in body["detail"] and "queued" in body["detail"]

    # What the train job records (worker/jobs/train.py): the errors at each checkpoint's step;
    # a NaN error is not stored and reads back as null, other series are left alone.
    train = job_of(session, experiment_id, "train")
    measured = [CodeUsage(20, [CodeUsageRow(0.0, 0.5, 0.75, 0.625), CodeUsageRow(0.5, 0.25, 1.0, 0.5)]),
                CodeUsage(30, [CodeUsageRow(0.0, 0.25, 0.5, 0.5), CodeUsageRow(0.5, 0.125, math.nan, 1.0)])]
    session.add_all(MetricPoint(experiment_id=experiment_id, job_id=train.id, key=key,
                                step=usage.step, value=value)
                    for usage in measured for key, value in code_usage_points(usage).items())
    session.add(MetricPoint(experiment_id=experiment_id, job_id=train.id, key="loss", step=20, value=3.0))
    session.commit()
    body = client.get(url).json()
    assert body["experiment"] == experiment_id and body["t_values"] == [0.0, 0.5]
    assert [c["step"] for c in body["checkpoints"]] == [20, 30]
    assert body["checkpoints"][0]["rows"][0] == {
        "t": 0.0, "error_true": 0.5, "error_shuffled": 0.75, "error_class_shuffled": 0.625,
        "code_gain": 0.25, "class_gain": 0.125}
    assert body["checkpoints"][1]["rows"][1] == {
        "t": 0.5, "error_true": 0.125, "error_shuffled": None, "error_class_shuffled": 1.0,
        "code_gain": None, "class_gain": None}
    # Each error is also a plain metric series over training.
    series = client.get(f"/experiments/{experiment_id}/metrics",
                        params={"key": "code_usage/error_true/t_0.500"}).json()
    assert [(p["step"], p["value"]) for p in series["points"]] == [(20, 0.25), (30, 0.125)]

    # A kind whose score takes no code: 422; the diagnostic turned off: 404 saying so.
    baseline = submit(client, {**TINY_SPEC, "model": {**TINY_SPEC["model"], "kind": "ae"}})["id"]
    body = assert_problem(client.get(f"/experiments/{baseline}/code-usage"), 422)
    assert body["type"] == "urn:drl:problem:no-code-conditioned-score" and body["kind"] == "ae"
    off = submit(client, {**TINY_SPEC, "evaluate": {**TINY_SPEC["evaluate"], "code_usage_images": 0}})["id"]
    body = assert_problem(client.get(f"/experiments/{off}/code-usage"), 404)
    assert body["type"] == "urn:drl:problem:not-found" and "evaluate.code_usage_images" in body["detail"]
    assert_problem(client.get("/experiments/424242/code-usage"), 404)
