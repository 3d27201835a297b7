"""`vdm_vae` and `vdm` experiments through the service: the API (TestClient) and a real Celery
worker process (tests/worker_fixtures.py) on real PostgreSQL, Redis and a local store.

vdm_vae: train (with the test-set bits/dim at its end) -> encode -> probe -> sample from the
prior; its embeddings are the encoder mean of the stored checkpoint. vdm: train -> sample,
and every code endpoint answers a 422 `no-encoder` problem.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from drl_core.artifact_keys import ArtifactKind, checkpoint_step, metrics_key
from drl_core.models import Artifact
from drl_engine.checkpoint import load_model
from drl_engine.datasets import load_dataset
from drl_engine.encode import encode_at
from drl_engine.spec import ExperimentSpec

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import ServiceHarness, tiny_spec, wait_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]

FINISH_TIMEOUT_S = 150
TERMS = ("diffusion", "prior", "reconstruction", "kl")
NO_ENCODER = "urn:drl:problem:no-encoder"


def vdm_spec(kind: str) -> ExperimentSpec:
    return tiny_spec(model={"kind": kind, "channel_mult": [1], "latent_dim": 3, "dropout": 0.0},
                     vdm={"schedule_features": 16})


@pytest.fixture(scope="module")
def client(service: ServiceHarness) -> Iterator[TestClient]:
    with TestClient(create_app(service.settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def finished(client: TestClient, service: ServiceHarness) -> dict[str, dict[str, Any]]:
    """Both experiments submitted at once (the worker runs them one job at a time), run to
    the end; kind -> the final GET /experiments/{id} body."""
    service.worker  # noqa: B018 - a worker process is running
    ids = {}
    for kind in ("vdm_vae", "vdm"):
        response = client.post("/experiments", json=vdm_spec(kind).model_dump(mode="json"))
        assert response.status_code == 201, response.text
        ids[kind] = response.json()["id"]
    bodies = {}
    for kind, experiment_id in ids.items():
        service.wait_until_finished(experiment_id, FINISH_TIMEOUT_S)
        bodies[kind] = client.get(f"/experiments/{experiment_id}").json()
        assert bodies[kind]["status"] == "succeeded", [
            (j["kind"], j["status"], j["error"]) for j in bodies[kind]["jobs"]]
    return bodies


def stored_model(service: ServiceHarness, experiment_id: int, tmp_path):
    with service.sessions() as session:
        keys = session.scalars(sa.select(Artifact.key).where(
            Artifact.experiment_id == experiment_id,
            Artifact.kind == ArtifactKind.CHECKPOINT.value)).all()
    newest = max(keys, key=checkpoint_step)
    return load_model(service.store.download(newest, tmp_path / "ckpt.pt"), device=torch.device("cpu"))


def assert_bits_per_dim(body: dict[str, Any], service: ServiceHarness) -> dict[str, Any]:
    """The summary's bits/dim: finite terms adding up to the total, as the stored json says."""
    bits = body["summary"]["bits_per_dim"]
    assert bits is not None, body["summary"]
    assert all(math.isfinite(bits[term]) and bits[term] >= 0 for term in (*TERMS, "total")), bits
    assert sum(bits[term] for term in TERMS) == pytest.approx(bits["total"], rel=1e-9)
    assert (bits["split"], bits["images"], bits["step"]) == ("test", 100, 30)
    assert bits["training_objective"] == "elbo"
    assert bits["key"] == metrics_key(body["id"], "bits_per_dim")
    stored = json.loads(service.store.get_bytes(bits["key"]))
    assert {k: stored[k] for k in (*TERMS, "total")} == {k: bits[k] for k in (*TERMS, "total")}
    return bits


def test_vdm_vae_experiment(client: TestClient, service: ServiceHarness,
                            finished: dict[str, dict[str, Any]], tmp_path) -> None:
    body = finished["vdm_vae"]
    experiment_id = body["id"]
    assert [j["kind"] for j in body["jobs"]] == ["train", "encode", "probe", "sample"]
    assert body["summary"]["has_encoder"] is True
    bits = assert_bits_per_dim(body, service)
    assert bits["kl"] > 0   # q(z|x) of a trained encoder is not the prior

    # the bits/dim terms and the training stats as metric series
    test_bpd = client.get(f"/experiments/{experiment_id}/metrics", params={"key": "test_bpd"}).json()
    assert [(p["step"], p["value"]) for p in test_bpd["points"]] == [(30, pytest.approx(bits["total"]))]
    assert {"bpd", "diffusion_bpd", "prior_bpd", "reconstruction_bpd", "kl_bpd", "grad_norm",
            "loss", *(f"test_bpd_{term}" for term in TERMS)} <= set(test_bpd["keys"])
    bpd = client.get(f"/experiments/{experiment_id}/metrics", params={"key": "bpd"}).json()
    assert [p["step"] for p in bpd["points"]] == [10, 20, 30]

    # z at a t: the encoder mean of the stored checkpoint, for every test image
    page = client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5}).json()
    assert (page["total"], page["dim"], len(page["items"])) == (100, 3, 100)
    served = np.array([item["vector"] for item in page["items"]], dtype=np.float32)
    spec = vdm_spec("vdm_vae")
    expected = encode_at(stored_model(service, experiment_id, tmp_path), load_dataset(spec.dataset).x_test,
                         [0.5], spec.evaluate.batch_size, torch.device("cpu")).by_t[0.5]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert client.get(f"/experiments/{experiment_id}/probes").status_code == 200

    # the pipeline's samples draw z from the prior, ancestrally; so do requested ones by default
    sample_job = body["jobs"][-1]
    assert sample_job["params"]["sample"]["code_source"] == "prior"
    png = client.get(f"/experiments/{experiment_id}/samples/{sample_job['id']}.png")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size[0] > 8
    with service.sessions() as session:
        meta = session.scalars(sa.select(Artifact.meta).where(
            Artifact.experiment_id == experiment_id, Artifact.kind == ArtifactKind.SAMPLE.value)).one()
    assert (meta["sampler"], meta["code_source"], meta["count"]) == ("ancestral", "prior", 4)
    requested = client.post(f"/experiments/{experiment_id}/samples", json={"count": 2})
    assert requested.status_code == 202 and requested.json()["params"]["sample"]["code_source"] == "prior"
    encoded = client.post(f"/experiments/{experiment_id}/samples", json={"code_source": "encoded"})
    assert encoded.json()["params"]["sample"]["code_source"] == "encoded"


def test_vdm_experiment_has_no_codes(client: TestClient, service: ServiceHarness,
                                     finished: dict[str, dict[str, Any]]) -> None:
    body = finished["vdm"]
    experiment_id = body["id"]
    assert [j["kind"] for j in body["jobs"]] == ["train", "sample"]
    assert body["summary"]["has_encoder"] is False and body["summary"]["embeddings"] == {"train": [], "test": []}
    bits = assert_bits_per_dim(body, service)
    assert bits["kl"] == 0.0

    sample_job = body["jobs"][-1]
    png = client.get(f"/experiments/{experiment_id}/samples/{sample_job['id']}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"

    for response in (client.get("/embeddings", params={"experiment": experiment_id, "t": 0.5}),
                     client.get(f"/experiments/{experiment_id}/probes"),
                     client.post(f"/experiments/{experiment_id}/encodings", json={"t": [0.5]})):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == NO_ENCODER and problem["kind"] == "vdm"
        assert "'vdm', which has no encoder" in problem["detail"]
    assert len(client.get(f"/experiments/{experiment_id}").json()["jobs"]) == 2   # no encode job made
