"""End to end through HTTP: the API (TestClient) and a real Celery worker process
(tests/worker_fixtures.py) on real PostgreSQL, Redis and a local artifact store.

A tiny digits experiment is submitted, trained, encoded, probed and sampled by the worker;
what the API serves is checked against the stored checkpoint itself.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from drl_core.artifact_keys import ArtifactKind, checkpoint_step
from drl_core.models import Artifact
from drl_engine.checkpoint import load_model
from drl_engine.datasets import load_dataset
from drl_engine.encode import encode_at

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import ServiceHarness, tiny_spec, wait_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]

FINISH_TIMEOUT_S = 150
CANCEL_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def client(service: ServiceHarness) -> Iterator[TestClient]:
    with TestClient(create_app(service.settings)) as test_client:
        yield test_client


def wait_for_status(client: TestClient, experiment_id: int, wanted: set[str], timeout: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = client.get(f"/experiments/{experiment_id}").json()
        return body if body["status"] in wanted else None

    try:
        return wait_for(reached, timeout, f"experiment {experiment_id} to be {'/'.join(sorted(wanted))}",
                        interval=0.5)
    except pytest.fail.Exception:
        body = client.get(f"/experiments/{experiment_id}").json()
        pytest.fail(f"experiment {experiment_id} is {body['status']}: "
                    f"{[(j['kind'], j['status'], j['error']) for j in body['jobs']]}", pytrace=False)


def encode_from_stored_checkpoint(service: ServiceHarness, experiment_id: int, t: float,
                                  tmp_path) -> np.ndarray:
    """What the embeddings at `t` must be: the newest stored checkpoint's EMA encoder applied
    to the test split, here in the test process."""
    with service.sessions() as session:
        keys = session.scalars(sa.select(Artifact.key).where(
            Artifact.experiment_id == experiment_id, Artifact.kind == ArtifactKind.CHECKPOINT.value)).all()
    newest = max(keys, key=checkpoint_step)
    model = load_model(service.store.download(newest, tmp_path / "ckpt.pt"), device=torch.device("cpu"))
    spec = tiny_spec()
    dataset = load_dataset(spec.dataset)
    return encode_at(model, dataset.x_test, [t], spec.evaluate.batch_size, torch.device("cpu")).by_t[t]


def test_pipeline_through_the_api(client: TestClient, service: ServiceHarness, tmp_path) -> None:
    service.worker  # noqa: B018 - a worker process is running
    spec = tiny_spec().model_dump(mode="json")
    response = client.post("/experiments", json=spec, headers={"Idempotency-Key": "e2e-1"})
    assert response.status_code == 201, response.text
    experiment_id = response.json()["id"]

    body = wait_for_status(client, experiment_id, {"succeeded", "failed", "cancelled"}, FINISH_TIMEOUT_S)
    assert body["status"] == "succeeded", body
    train = body["jobs"][0]
    assert train["progress"]["step"] == train["progress"]["total"] == 30
    assert body["summary"]["last_loss"] is not None and body["summary"]["best_t"]
    assert body["summary"]["embeddings"]["test"] == [0.0, 0.5, 1.0]

    # embeddings at t = 0.5: all 100 test images x latent_dim 4, equal to a direct encode
    page = client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5}).json()
    assert (page["total"], page["dim"], len(page["items"])) == (100, 4, 100)
    served = np.array([item["vector"] for item in page["items"]], dtype=np.float32)
    expected = encode_from_stored_checkpoint(service, experiment_id, 0.5, tmp_path)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    npy = client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5, "format": "npy"})
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), served)
    labels = [item["label"] for item in page["items"]]
    assert set(labels) <= set(range(10)) and len(set(labels)) > 1

    probes = client.get(f"/experiments/{experiment_id}/probes").json()
    assert probes["t_values"] == [0.0, 0.5, 1.0]
    assert {"svc_20", "svc_50", "svc_20_std", "svc_50_std", "linear", "mlp",
            "silhouette"} <= set(probes["columns"])
    # Beside the trained encoder, its untrained control; each best t chosen on validation.
    assert [r["t"] for r in probes["control_rows"]] == probes["t_values"]
    for best, rows in ((probes["best"], probes["rows"]),
                       (probes["control_best"], probes["control_rows"])):
        assert set(best) == set(probes["columns"])
        for column, chosen in best.items():
            validation = [r[f"val_{column}"] for r in rows]
            assert chosen["t"] == rows[validation.index(max(validation))]["t"]
            assert chosen["validation"] == max(validation)
    assert body["summary"]["control_best_t"] == probes["control_best"]
    # The control's codes are served only when asked for.
    control = client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5,
                                                "encoder": "random_init"}).json()
    assert (control["encoder"], control["total"], control["dim"]) == ("random_init", 100, 4)
    assert not np.allclose(np.array([item["vector"] for item in control["items"]]), served)

    sample_job = next(j for j in body["jobs"] if j["kind"] == "sample")
    png = client.get(f"/experiments/{experiment_id}/samples/{sample_job['id']}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 28

    loss = client.get(f"/experiments/{experiment_id}/metrics", params={"key": "loss", "max_points": 2}).json()
    assert len(loss["points"]) == 2 and loss["points"][-1]["step"] == 30

    # more encodings on the trained model, as a job
    job = client.post(f"/experiments/{experiment_id}/encodings", json={"t": [0.25]})
    assert job.status_code == 202
    job_id = job.json()["id"]
    wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] in ("succeeded", "failed"),
             FINISH_TIMEOUT_S, f"encode job {job_id}", interval=0.5)
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    page = client.get("/embeddings", params={"experiment": experiment_id, "t": 0.25, "limit": 10}).json()
    assert (page["total"], len(page["items"]), page["t"]) == (100, 10, 0.25)


def test_cancel_a_running_training(client: TestClient, service: ServiceHarness) -> None:
    service.worker  # noqa: B018
    spec = tiny_spec(train={"iterations": 100_000, "log_every": 5}).model_dump(mode="json")
    experiment_id = client.post("/experiments", json=spec).json()["id"]
    wait_for(lambda: (client.get(f"/experiments/{experiment_id}").json()["jobs"][0]["progress"]["step"] or 0) > 0,
             FINISH_TIMEOUT_S, "training to report progress", interval=0.3)

    started = time.monotonic()
    response = client.post(f"/experiments/{experiment_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] in ("cancelling", "cancelled")
    body = wait_for_status(client, experiment_id, {"cancelled", "failed", "succeeded"}, CANCEL_TIMEOUT_S)
    assert body["status"] == "cancelled", body
    assert [j["status"] for j in body["jobs"]] == ["cancelled"] * 4
    print(f"cancelled within {time.monotonic() - started:.1f} s")
    assert client.delete(f"/experiments/{experiment_id}").status_code == 204
