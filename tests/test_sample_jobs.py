"""Sample jobs through the service: FD-LeNet in the sample artifact's meta, the listing
GET /experiments/{id}/samples, and VDM-VAE interpolations as a code source.

Real PostgreSQL, the API through FastAPI's TestClient, a local artifact store; the jobs run
in this process through `worker.tasks.run_job` (what a worker process calls), on the
embedded filesystem queue that nobody consumes, so each test decides what runs and when.
Tiny models on the digits dataset (16x16): seconds per training.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from drl_core.artifact_keys import ArtifactKind
from drl_core.models import Artifact, Job
from drl_core.queue import make_celery
from drl_core.settings import Settings
from drl_engine.datasets import load_dataset
from drl_engine.fd_lenet import FD_LENET, default_cache_dir
from drl_engine.generate import INTERPOLATION_POINTS
from drl_engine.spec import DatasetSpec
from worker.context import WorkerResources
from worker.tasks import run_job

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import TINY_SPEC, service_settings_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]

PROBLEM = "application/problem+json"
IMAGE_SIDE = 16     # digits
GRID_PADDING = 2    # drl_engine.plots.image_grid's default


def tiny(**sections: dict[str, Any]) -> dict[str, Any]:
    """worker_fixtures' TINY_SPEC (digits, 30 steps) with the given sections' fields replaced."""
    spec = {name: dict(values) if isinstance(values, dict) else values
            for name, values in TINY_SPEC.items()}
    for name, values in sections.items():
        spec[name] = spec.get(name, {}) | values
    return spec


VDM_VAE_SPEC = tiny(model={"kind": "vdm_vae", "channel_mult": [1], "latent_dim": 3, "dropout": 0.0},
                    vdm={"schedule_features": 16})


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The service's home, also DRL_HOME: `drl run` and the worker put the LeNet cache there."""
    path = tmp_path_factory.mktemp("drl_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRL_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def settings(pg_url: str, home: Path) -> Settings:
    # broker_url None: the embedded filesystem queue under `home`, which nobody consumes
    return service_settings_for(pg_url, home, None, broker_url=None)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerResources]:
    resources = WorkerResources(settings)
    yield resources
    resources.dispose()


@pytest.fixture(scope="module")
def celery_app(settings: Settings):
    app = make_celery(settings)
    yield app
    app.close()


@pytest.fixture(scope="module")
def unlabeled_npz(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The tiny digits images in a user .npz with no y_train / y_test."""
    digits = load_dataset(DatasetSpec(**TINY_SPEC["dataset"], data_dir=str(data_dir)))
    path = tmp_path_factory.mktemp("npz") / "unlabeled.npz"
    np.savez(path, x_train=digits.x_train[:, 0].numpy(), x_test=digits.x_test[:, 0].numpy())
    return path


# --- helpers -----------------------------------------------------------------------------


def run_in_process(worker: WorkerResources, celery_app, job_id: int) -> Job:
    """Run one job as a worker would; it must succeed (else its log tail is shown)."""
    outcome = run_job(job_id, worker, celery_app)
    with worker.sessions() as session:
        job = session.get(Job, job_id)
        assert outcome == "succeeded", (outcome, job.error, job.log_tail)
        return job


def trained_experiment(client: TestClient, worker, celery_app, spec: dict[str, Any]) -> int:
    """Submit `spec` and run its train job; the experiment's id."""
    response = client.post("/experiments", json=spec)
    assert response.status_code == 201, response.text
    body = response.json()
    train = next(j for j in body["jobs"] if j["kind"] == "train")
    run_in_process(worker, celery_app, train["id"])
    return body["id"]


def drawn_samples(client: TestClient, worker, celery_app, experiment_id: int,
                  request: dict[str, Any]) -> Job:
    """Request a sample job with `request` and run it; the finished job row."""
    response = client.post(f"/experiments/{experiment_id}/samples", json=request)
    assert response.status_code == 202, response.text
    return run_in_process(worker, celery_app, response.json()["id"])


def sample_meta(worker: WorkerResources, job_id: int) -> dict[str, Any]:
    with worker.sessions() as session:
        return session.scalars(sa.select(Artifact.meta).where(
            Artifact.job_id == job_id, Artifact.kind == ArtifactKind.SAMPLE.value)).one()


def grid_shape(png: bytes, images_per_row: int) -> tuple[int, int]:
    """(rows, columns) of an image grid of IMAGE_SIDE images with `images_per_row` columns,
    undoing save_image_grid's whole-pixel enlargement."""
    image = Image.open(io.BytesIO(png))
    base_width = images_per_row * (IMAGE_SIDE + GRID_PADDING) + GRID_PADDING
    assert image.width % base_width == 0, (image.size, base_width)
    factor = image.width // base_width
    rows, remainder = divmod(image.height // factor - GRID_PADDING, IMAGE_SIDE + GRID_PADDING)
    assert remainder == 0, image.size
    return rows, images_per_row


def assert_problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


# --- FD-LeNet and the listing ------------------------------------------------------------


@pytest.fixture(scope="module")
def drl_experiment(client, worker, celery_app) -> int:
    return trained_experiment(client, worker, celery_app, tiny())


def test_sample_job_stores_fd_lenet_and_the_listing_shows_it(client, worker, celery_app, home,
                                                             drl_experiment) -> None:
    experiment_id = drl_experiment
    job = drawn_samples(client, worker, celery_app, experiment_id, {"count": 6})

    meta = sample_meta(worker, job.id)
    fd = meta["fd_lenet"]
    assert math.isfinite(fd["value"]) and fd["value"] >= 0, fd
    assert (fd["samples"], fd["steps"], fd["name"], fd["reference"]) == (
        6, meta["steps"], FD_LENET, "test")
    assert "only 6 samples" in fd["note"] and fd["smoke"] is True   # far below 1,000: it says so
    # Its bootstrap interval, and the floor: 6 real training images against the same test split.
    assert 0.0 <= fd["ci_low"] <= fd["ci_high"] and fd["ci_level"] == 0.95
    assert fd["floor"]["samples"] == 6 and fd["floor"]["split"] == "train"
    assert 0.0 <= fd["floor"]["ci_low"] <= fd["floor"]["ci_high"]
    # pc with one corrector step: two network evaluations per step, and the sampler's seconds
    assert meta["nfe"] == 2 * meta["steps"] and meta["seconds"] > 0
    assert any(line.startswith(f"{FD_LENET} of 6 samples") for line in job.log_tail), job.log_tail
    # The LeNet went to drl run's cache ($DRL_HOME/cache), trained once for the dataset.
    assert default_cache_dir() == home / "cache"
    assert [p.name[:len("digits_1x16x16_")] for p in (home / "cache" / "fd_lenet").glob("*.pt")] == [
        "digits_1x16x16_"]

    listing = client.get(f"/experiments/{experiment_id}/samples")
    assert listing.status_code == 200, listing.text
    newest, pipeline = listing.json()   # newest first: the requested job, then the pipeline's
    assert newest["job_id"] == job.id and newest["status"] == "succeeded"
    assert newest["params"] == job.params["sample"] and newest["params"]["count"] == 6
    assert (newest["count"], newest["sampler"], newest["steps"], newest["code_source"]) == (
        6, "pc", meta["steps"], "encoded")
    assert newest["fd_lenet"]["value"] == pytest.approx(fd["value"]) and newest["fd_lenet"]["samples"] == 6
    assert (newest["fd_lenet"]["ci_low"], newest["fd_lenet"]["ci_high"]) == pytest.approx(
        (fd["ci_low"], fd["ci_high"]))
    assert newest["fd_lenet"]["smoke"] is True and newest["fd_lenet"]["floor"]["samples"] == 6
    assert (newest["nfe"], newest["seconds"]) == (meta["nfe"], pytest.approx(meta["seconds"]))
    # Encoded codes: the share of the 6 reconstructions labelled as their source's class.
    agreement = meta["reconstruction_agreement"]
    assert 0.0 <= agreement <= 1.0 and round(agreement * 6, 9) == round(agreement * 6)
    assert newest["reconstruction_agreement"] == pytest.approx(agreement)
    assert newest["url"] == f"/experiments/{experiment_id}/samples/{job.id}.png"
    png = client.get(newest["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"

    # The pipeline's own sample job waits for the probe job: settings, but no results yet.
    assert pipeline["job_id"] < job.id and pipeline["status"] == "queued"
    assert pipeline["params"]["count"] == TINY_SPEC["sample"]["count"]
    assert all(pipeline[k] is None for k in ("count", "sampler", "steps", "fd_lenet", "url")), pipeline


def test_a_single_encoded_sample_is_its_original_over_its_reconstruction(
        client, worker, celery_app, drl_experiment) -> None:
    """count 1 with encoded codes failed every sample job (a StopIteration laying out the grid)."""
    job = drawn_samples(client, worker, celery_app, drl_experiment, {"count": 1, "code_source": "encoded"})

    meta = sample_meta(worker, job.id)
    assert (meta["count"], meta["code_source"]) == (1, "encoded")
    assert "fd_lenet" not in meta   # one image: nothing to compare, and the log says so
    assert any(line.startswith(f"{FD_LENET} skipped") for line in job.log_tail), job.log_tail
    png = client.get(f"/experiments/{drl_experiment}/samples/{job.id}.png")
    assert png.status_code == 200
    # The original over its reconstruction, captioned with the digit's class and the
    # classifier's label: a picture taller than wide, its agreement 0 or 1.
    image = Image.open(io.BytesIO(png.content))
    assert image.height > image.width
    assert meta["reconstruction_agreement"] in (0.0, 1.0)


def test_listing_of_an_unknown_experiment_is_a_404_problem(client) -> None:
    body = assert_problem(client.get("/experiments/987654321/samples"), 404)
    assert "experiment 987654321 not found" in body["detail"]


def test_interpolation_is_refused_for_drl_naming_the_field(client, drl_experiment) -> None:
    response = client.post(f"/experiments/{drl_experiment}/samples",
                           json={"code_source": "interpolation"})
    body = assert_problem(response, 422)
    assert "sample.code_source" in body["detail"] and "vdm_vae" in body["detail"], body
    assert "'drl'" in body["detail"]


def test_unlabeled_dataset_gives_samples_without_fd_lenet(client, worker, celery_app,
                                                          unlabeled_npz: Path) -> None:
    spec = tiny(dataset={"name": "npz", "path": str(unlabeled_npz)})
    experiment_id = trained_experiment(client, worker, celery_app, spec)
    job = drawn_samples(client, worker, celery_app, experiment_id, {"count": 4})

    meta = sample_meta(worker, job.id)
    assert meta["count"] == 4 and "fd_lenet" not in meta
    skipped = [line for line in job.log_tail if line.startswith(f"{FD_LENET} skipped")]
    assert len(skipped) == 1 and "has no labels" in skipped[0], job.log_tail
    newest = client.get(f"/experiments/{experiment_id}/samples").json()[0]
    assert newest["status"] == "succeeded" and newest["count"] == 4 and newest["fd_lenet"] is None


# --- VDM-VAE interpolations --------------------------------------------------------------


def test_vdm_vae_interpolations_are_a_sample_job(client, worker, celery_app) -> None:
    experiment_id = trained_experiment(client, worker, celery_app, VDM_VAE_SPEC)
    pairs = 2
    job = drawn_samples(client, worker, celery_app, experiment_id,
                        {"code_source": "interpolation", "count": pairs * INTERPOLATION_POINTS + 3})

    meta = sample_meta(worker, job.id)
    # count // points pairs, each walked in INTERPOLATION_POINTS decodes
    assert (meta["count"], meta["code_source"], meta["sampler"]) == (
        pairs * INTERPOLATION_POINTS, "interpolation", "ancestral")
    assert meta["fd_lenet"]["samples"] == pairs * INTERPOLATION_POINTS

    png = client.get(f"/experiments/{experiment_id}/samples/{job.id}.png")
    assert png.status_code == 200
    # one row per pair: source a, the decodes, source b (drl run's interpolations.png)
    assert grid_shape(png.content, INTERPOLATION_POINTS + 2) == (pairs, INTERPOLATION_POINTS + 2)

    listed = client.get(f"/experiments/{experiment_id}/samples").json()[0]
    assert (listed["job_id"], listed["code_source"], listed["count"]) == (
        job.id, "interpolation", pairs * INTERPOLATION_POINTS)
