"""The job system end to end: a real Celery worker process on real PostgreSQL and Redis.

One worker process serves the module (tests/worker_fixtures.py); the SIGKILL test kills it
and the next test starts a new one. Training is the contract's tiny CPU config.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import socket
import subprocess
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient

from api.main import create_app
from api.schemas import Provenance
from drl_core.artifact_keys import (
    SPLITS,
    checkpoint_step,
    embedding_key,
    experiment_prefix,
    labels_key,
    log_key,
    probes_key,
    sample_key,
)
from drl_core.code_usage_metrics import code_usage_key
from drl_core.experiments import (
    cancel_experiment,
    computed_embeddings,
    create_experiment,
    delete_experiment,
    experiment_summary,
    request_encodings,
)
from drl_core.job_states import JobStatus, transition, utc_now
from drl_cli.client_cmd import format_experiment
from drl_cli.main import main
from drl_core.models import Artifact, Experiment, Job, MetricPoint
from drl_engine.checkpoint import KEEP_LAST, load_model
from drl_engine.code_usage import held_out_batch, measure_code_usage
from drl_engine.datasets import load_dataset
from drl_engine.encode import encode_at
from drl_engine.provenance import cpu_model, dataset_fingerprint
from drl_engine.registry import untrained_model
from worker.context import WorkerResources
from worker.reaper import reap_stale_jobs
from worker.tasks import run_job, send_handed_back

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import (  # noqa: E402
    REPO_ROOT,
    ServiceHarness,
    filesystem_celery,
    queued_job_ids,
    service_settings_for,
    tiny_spec,
    wait_for,
)

pytest_plugins = ["worker_fixtures"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def git_head() -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


# This checkout's commit before any worker of this module started (the code it runs).
HEAD_AT_START = git_head()
T_GRID = [0.0, 0.5, 1.0]


def create(service: ServiceHarness, spec, key: str | None = None) -> int:
    with service.sessions() as session:
        experiment, _ = create_experiment(session, spec, None, key, celery_app=service.celery_app)
        return experiment.id


def artifact_rows(service: ServiceHarness, experiment_id: int) -> list[Artifact]:
    with service.sessions() as session:
        return list(session.scalars(sa.select(Artifact).where(
            Artifact.experiment_id == experiment_id).order_by(Artifact.key)))


def metric_steps(service: ServiceHarness, experiment_id: int, key: str) -> list[int]:
    with service.sessions() as session:
        return list(session.scalars(sa.select(MetricPoint.step).where(
            MetricPoint.experiment_id == experiment_id, MetricPoint.key == key)
            .order_by(MetricPoint.step)))


def assert_one_file_per_row(service: ServiceHarness, experiment_id: int) -> list[Artifact]:
    """Every row's file exists with the recorded size and sha256, and no file lacks a row."""
    rows = artifact_rows(service, experiment_id)
    assert sorted(r.key for r in rows) == service.store.list(experiment_prefix(experiment_id))
    for row in rows:
        data = service.store.get_bytes(row.key)
        assert (row.size, row.sha256) == (len(data), hashlib.sha256(data).hexdigest()), row.key
    return rows


# --- the whole pipeline ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_experiment(service: ServiceHarness) -> int:
    """A time-conditioned tiny experiment the worker has taken through the whole pipeline."""
    spec = tiny_spec(model={"encoder": "time_conditioned"})
    experiment_id = create(service, spec, key="pipeline")
    jobs = service.wait_until_finished(experiment_id)
    assert [(j.kind, j.status) for j in jobs] == [
        ("train", "succeeded"), ("encode", "succeeded"), ("probe", "succeeded"),
        ("sample", "succeeded")], [(j.kind, j.status, j.error, j.log_tail) for j in jobs]
    return experiment_id


def test_the_experiment_records_what_trained_it(service: ServiceHarness,
                                                finished_experiment: int) -> None:
    """Its train job's provenance: this checkout's commit, the versions, this machine, the
    dataset files' sha256; on the experiment, in GET /experiments/{id} and `drl status ID`."""
    recorded = service.experiment(finished_experiment).provenance
    assert recorded is not None
    # (another engineer may commit while the module runs: then one of the two)
    assert recorded["git_commit"] in {HEAD_AT_START, git_head()}
    assert recorded["drl_version"] == metadata.version("drl")
    assert (recorded["python"], recorded["torch"]) == (platform.python_version(), torch.__version__)
    assert (recorded["device"], recorded["cuda"], recorded["cudnn"]) == ("cpu", None, None)
    assert recorded["device_model"] == cpu_model() and recorded["host"] == socket.gethostname()
    spec = tiny_spec(model={"encoder": "time_conditioned"})
    assert recorded["dataset"] == dataset_fingerprint(spec.dataset)
    (file,) = recorded["dataset"]["files"]
    assert file["sha256"] == hashlib.sha256(Path(file["path"]).read_bytes()).hexdigest()

    with TestClient(create_app(service.settings)) as client:
        shown = client.get(f"/experiments/{finished_experiment}").json()
    assert shown["provenance"] == Provenance.model_validate(recorded).model_dump(mode="json")
    status = format_experiment(shown)
    assert f"code: drl {recorded['drl_version']} at commit {recorded['git_commit']}" in status
    assert f"data: digits, sha256 {recorded['dataset']['sha256']}" in status


def test_pipeline_stores_every_artifact(service: ServiceHarness, finished_experiment: int,
                                        tmp_path) -> None:
    exp_id = finished_experiment
    jobs = service.jobs(exp_id)
    train, encode, probe, sample = jobs
    assert all(j.attempt == 1 and j.error is None and j.worker for j in jobs)
    assert (train.step, train.total) == (30, 30) and np.isfinite(train.loss)
    assert metric_steps(service, exp_id, "loss") == [10, 20, 30]
    assert metric_steps(service, exp_id, "images_per_s") == [10, 20, 30]

    rows = {r.key: r for r in assert_one_file_per_row(service, exp_id)}
    for job in jobs:   # each job's whole log: its run's header, then every line of its tail
        row = rows[log_key(exp_id, job.id)]
        lines = service.store.get_bytes(row.key).decode().splitlines()
        assert (row.kind, row.job_id, row.meta["lines"]) == ("log", job.id, len(lines))
        assert lines[0].startswith("=== attempt 1 on ")
        assert lines[-len(job.log_tail):] == job.log_tail
    checkpoints = sorted(k for k, r in rows.items() if r.kind == "checkpoint")
    assert len(checkpoints) <= KEEP_LAST and checkpoints[-1].endswith("ckpt_00000030.pt")

    for split, n in (("train", 300), ("test", 100)):
        for t in T_GRID:
            row = rows[embedding_key(exp_id, split, t)]
            assert (row.kind, row.meta, row.job_id) == ("embedding", {"split": split, "t": t}, encode.id)
            emb = np.load(service.store.download(row.key, tmp_path / "e.npy"))
            assert emb.shape == (n, 4) and emb.dtype == np.float32
            # The untrained control's codes, by the same job, under their own kind and keys.
            control = rows[embedding_key(exp_id, split, t, "random_init")]
            assert (control.kind, control.meta, control.job_id) == (
                "control_embedding", {"split": split, "t": t}, encode.id)
            assert "/embeddings/random_init/" in control.key and control.sha256 != row.sha256
        labels = np.load(service.store.download(labels_key(exp_id, split), tmp_path / "l.npy"))
        assert labels.shape == (n,) and labels.dtype == np.int64

    # The stored embeddings are exactly what the stored checkpoint encodes.
    checkpoint = service.store.download(checkpoints[-1], tmp_path / "ckpt.pt")
    model = load_model(checkpoint, device="cpu")
    dataset = load_dataset(tiny_spec().dataset)
    direct = encode_at(model, dataset.x_test, [0.5], 500, torch.device("cpu")).by_t[0.5]
    stored = np.load(service.store.download(embedding_key(exp_id, "test", 0.5), tmp_path / "s.npy"))
    assert np.allclose(stored, direct, atol=1e-5)

    # The untrained control is the model training started from: same architecture and seed.
    untrained = untrained_model(tiny_spec(model={"encoder": "time_conditioned"}), dataset)
    direct = encode_at(untrained, dataset.x_test, [0.5], 500, torch.device("cpu")).by_t[0.5]
    stored = np.load(service.store.download(embedding_key(exp_id, "test", 0.5, "random_init"),
                                            tmp_path / "c.npy"))
    assert np.allclose(stored, direct, atol=1e-5)

    table = json.loads(service.store.get_bytes(probes_key(exp_id, "json")))
    columns = ["svc_20", "svc_50", "svc_20_std", "svc_50_std", "linear", "mlp", "silhouette"]
    assert table["columns"] == columns
    validation = {f"val_{c}" for c in columns}
    for key in ("rows", "control_rows"):
        assert [r["t"] for r in table[key]] == T_GRID
        assert all(set(r) == {"t", *columns, *validation} for r in table[key])
    assert set(table["best"]) == set(table["control_best"]) == set(columns)
    assert table["rows"] != table["control_rows"]
    csv_lines = service.store.get_bytes(probes_key(exp_id, "csv")).decode().splitlines()
    assert csv_lines[0].startswith("encoder,t,svc_20,svc_50,svc_20_std,svc_50_std,linear,mlp,"
                                   "silhouette,val_svc_20")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["trained"] * 3 + ["random_init"] * 3
    assert service.store.get_bytes(probes_key(exp_id, "png"))[:8] == PNG_MAGIC
    meta = rows[probes_key(exp_id, "json")].meta
    assert (meta["best"], meta["control_best"]) == (table["best"], table["control_best"])

    assert service.store.get_bytes(sample_key(exp_id, sample.id))[:8] == PNG_MAGIC
    assert rows[sample_key(exp_id, sample.id)].meta["job_id"] == sample.id

    with service.sessions() as session:
        summary = experiment_summary(session, session.get(Experiment, exp_id))
    assert summary["status"] == "succeeded" and summary["failed_step"] is None
    assert set(summary["probes"]["best"]) == set(table["columns"])
    assert summary["probes"]["control_best"] == table["control_best"]
    assert summary["embeddings"] == {"train": T_GRID, "test": T_GRID}   # the control's not among them


def test_train_records_the_code_usage_at_each_checkpoint(service: ServiceHarness,
                                                         finished_experiment: int, tmp_path) -> None:
    exp_id = finished_experiment
    assert metric_steps(service, exp_id, code_usage_key("error_true", 0.5)) == [20, 30]
    with TestClient(create_app(service.settings)) as client:
        body = client.get(f"/experiments/{exp_id}/code-usage").json()
    assert body["t_values"] == T_GRID and [c["step"] for c in body["checkpoints"]] == [20, 30]
    final = body["checkpoints"][-1]["rows"]
    assert all(row["error_class_shuffled"] is not None for row in final)   # digits has labels

    # What the engine measures on the final checkpoint's EMA weights, on the same held-out batch.
    newest = max((r.key for r in artifact_rows(service, exp_id) if r.kind == "checkpoint"),
                 key=checkpoint_step)
    model = load_model(service.store.download(newest, tmp_path / "ckpt.pt"), device="cpu")
    spec = tiny_spec(model={"encoder": "time_conditioned"})
    dataset = load_dataset(spec.dataset)
    direct = measure_code_usage(model, held_out_batch(dataset.x_test, dataset.y_test, spec.evaluate),
                                spec, torch.device("cpu"), step=30)
    for served, measured in zip(final, direct.rows, strict=True):
        assert served["t"] == measured.t
        for measure in ("error_true", "error_shuffled", "error_class_shuffled"):
            assert served[measure] == pytest.approx(getattr(measured, measure), rel=1e-5)


def test_running_a_finished_job_again_writes_nothing(service: ServiceHarness,
                                                     finished_experiment: int) -> None:
    before = [(r.id, r.key, r.sha256, r.created_at) for r in artifact_rows(service, finished_experiment)]
    mtimes = {p: p.stat().st_mtime_ns for p in service.settings.resolved_artifact_dir.rglob("*")}
    resources = WorkerResources(service.settings)
    try:
        for job in service.jobs(finished_experiment):
            assert run_job(job.id, resources, service.celery_app) == "skipped"
    finally:
        resources.dispose()
    after = [(r.id, r.key, r.sha256, r.created_at) for r in artifact_rows(service, finished_experiment)]
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in service.settings.resolved_artifact_dir.rglob("*")} == mtimes
    assert all(j.status == "succeeded" and j.attempt == 1 for j in service.jobs(finished_experiment))


def test_request_encodings_adds_only_the_new_t(service: ServiceHarness,
                                               finished_experiment: int) -> None:
    exp_id = finished_experiment
    existing = {r.key: (r.id, r.sha256) for r in artifact_rows(service, exp_id)}
    with service.sessions() as session:
        job = request_encodings(session, session.get(Experiment, exp_id), [0.25, 0.5],
                                celery_app=service.celery_app)
        assert (job.kind, job.params, job.queue) == ("encode", {"t": [0.25, 0.5]}, "gpu")
        job_id = job.id
    service.worker  # noqa: B018
    wait_for(lambda: service.job(job_id).status in ("succeeded", "failed"), 60, "the encode job")
    assert service.job(job_id).status == "succeeded", service.job(job_id).log_tail

    rows = {r.key: r for r in assert_one_file_per_row(service, exp_id)}
    for split in SPLITS:
        for encoder in ("trained", "random_init"):
            added = rows[embedding_key(exp_id, split, 0.25, encoder)]
            assert added.job_id == job_id and added.meta == {"split": split, "t": 0.25}
    # t = 0.5 was already stored: not encoded, not written again.
    for key, (row_id, sha) in existing.items():
        assert (rows[key].id, rows[key].sha256) == (row_id, sha)
    with service.sessions() as session:
        assert computed_embeddings(session, exp_id) == {"train": [0.0, 0.25, 0.5, 1.0],
                                                        "test": [0.0, 0.25, 0.5, 1.0]}


def test_run_job_runs_only_queued_ready_jobs(service: ServiceHarness, tmp_path) -> None:
    fs_app, _ = filesystem_celery(tmp_path)   # nobody consumes it: run_job is called here
    with service.sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=fs_app)
        train, encode = experiment.jobs[0].id, experiment.jobs[1].id
    resources = WorkerResources(service.settings)
    try:
        assert run_job(encode, resources, fs_app) == "waiting"   # train has not succeeded
        with service.sessions() as session:
            cancel_experiment(session, session.get(Experiment, experiment.id))
        assert run_job(train, resources, fs_app) == "skipped"    # cancelled while queued
        assert run_job(10**9, resources, fs_app) == "missing"
    finally:
        resources.dispose()
    assert [(j.status, j.worker, j.started_at) for j in service.jobs(experiment.id)] == [
        ("cancelled", None, None)] * 4


# --- cancel, failure, a killed worker ----------------------------------------------------


def test_cancel_stops_a_running_training(service: ServiceHarness) -> None:
    spec = tiny_spec(train={"iterations": 100_000, "log_every": 5, "checkpoint_every": 100_000})
    exp_id = create(service, spec)
    train_id = service.jobs(exp_id)[0].id
    service.worker  # noqa: B018
    wait_for(lambda: (service.job(train_id).step or 0) >= 5, 60, "training to report progress")

    with service.sessions() as session:
        cancel_experiment(session, session.get(Experiment, exp_id))
    assert service.job(train_id).status in ("cancelling", "cancelled")
    wait_for(lambda: service.job(train_id).status == "cancelled", 30, "the training to stop")

    train = service.job(train_id)
    assert train.step < 100_000 and train.error is None
    assert [j.status for j in service.jobs(exp_id)] == ["cancelled"] * 4
    assert service.experiment_status(exp_id) == "cancelled"
    # Stopping saves a checkpoint, so nothing trained is thrown away (and the job's log).
    assert sorted(r.kind for r in artifact_rows(service, exp_id)) == ["checkpoint", "log"]


def test_deleting_a_running_experiment_stops_its_worker_and_leaves_no_files(
        service: ServiceHarness) -> None:
    spec = tiny_spec(train={"iterations": 100_000, "log_every": 2, "checkpoint_every": 3})
    exp_id = create(service, spec)
    train_id = service.jobs(exp_id)[0].id
    service.worker  # noqa: B018
    wait_for(lambda: (service.job(train_id).step or 0) >= 6, 60, "training to report progress")

    with service.sessions() as session:
        delete_experiment(session, service.store, session.get(Experiment, exp_id))
    # The worker notices at its next heartbeat and removes what it uploaded meanwhile.
    wait_for(lambda: f"job {train_id} attempt 1 is no longer held" in service.worker.log_text(),
             30, "the worker to drop the deleted job")
    assert service.store.list(experiment_prefix(exp_id)) == []
    assert service.jobs(exp_id) == []


def test_a_failing_step_fails_the_pipeline_and_says_why(service: ServiceHarness, tmp_path) -> None:
    missing = tmp_path / "no-such-dataset.npz"
    exp_id = create(service, tiny_spec(dataset={"name": "npz", "path": str(missing)}))
    jobs = service.wait_until_finished(exp_id, timeout=60)

    train = jobs[0]
    assert train.status == "failed"
    assert train.error.startswith("DatasetError: ") and str(missing) in train.error
    assert "\n" not in train.error
    assert any("DatasetError" in line for line in train.log_tail)
    for job in jobs[1:]:
        assert (job.status, job.error) == ("failed", f"upstream train job {train.id} failed")
    with service.sessions() as session:
        summary = experiment_summary(session, session.get(Experiment, exp_id))
    assert (summary["status"], summary["failed_step"]) == ("failed", "train")
    assert str(missing) in summary["error"]


def test_killed_worker_is_reaped_and_a_new_one_resumes(service: ServiceHarness) -> None:
    spec = tiny_spec(train={"iterations": 120, "checkpoint_every": 20, "log_every": 10})
    exp_id = create(service, spec)
    train_id = service.jobs(exp_id)[0].id
    service.worker  # noqa: B018

    def checkpoint_stored() -> bool:
        job = service.job(train_id)
        assert job.status in ("queued", "running"), (job.status, job.error)
        return any(r.kind == "checkpoint" for r in artifact_rows(service, exp_id))

    wait_for(checkpoint_stored, 60, "the first checkpoint upload")
    first_worker = service.job(train_id).worker
    killed = service.kill_worker()
    assert service.job(train_id).status == "running"   # nobody knows yet

    service.worker  # noqa: B018 - a new process; its reaper finds the silent job
    jobs = service.wait_until_finished(exp_id, timeout=120)
    assert [j.status for j in jobs] == ["succeeded"] * 4, [(j.kind, j.error) for j in jobs]
    train = jobs[0]
    assert train.attempt == 2 and train.worker != first_worker
    resumed = [int(m.group(1)) for line in train.log_tail
               if (m := re.search(r"attempt 2: resuming from checkpoint step (\d+)", line))]
    assert len(resumed) == 1 and resumed[0] >= 20, train.log_tail
    assert "lost its worker" in service.worker.log_text() or "lost its worker" in killed.log_text()

    # Re-run steps are recorded once, and every artifact exactly once.
    assert metric_steps(service, exp_id, "loss") == list(range(10, 121, 10))
    # The code usage too, at checkpoint steps: every one after the resumed checkpoint (that
    # checkpoint's own may have died with the worker).
    measured = metric_steps(service, exp_id, code_usage_key("error_true", 0.5))
    assert set(range(resumed[0] + 20, 121, 20)) <= set(measured) <= set(range(20, 121, 20))
    assert len(measured) == len(set(measured))
    rows = assert_one_file_per_row(service, exp_id)
    checkpoints = [r.key for r in rows if r.kind == "checkpoint"]
    assert len(checkpoints) <= KEEP_LAST and checkpoints[-1].endswith("ckpt_00000120.pt")
    assert sum(r.kind == "embedding" for r in rows) == 2 * len(T_GRID)


def test_a_stopped_worker_hands_its_job_back_without_spending_an_attempt(
        service: ServiceHarness) -> None:
    """SIGTERM (docker compose stop): the training stops at its next step, its checkpoint there
    is stored, the job is queued again at the same attempt, and the next worker resumes it from
    that checkpoint at once (was: the worker killed after its grace period, the job reaped after
    heartbeat_timeout_s, an attempt spent, and up to checkpoint_every steps lost)."""
    spec = tiny_spec(train={"iterations": 100_000, "log_every": 2, "checkpoint_every": 100_000})
    exp_id = create(service, spec)
    train_id = service.jobs(exp_id)[0].id
    service.worker  # noqa: B018
    wait_for(lambda: (service.job(train_id).step or 0) >= 4, 60, "training to report progress")

    stopped = service.terminate_worker()
    job = service.job(train_id)
    assert (job.status, job.attempt, job.worker, job.heartbeat_at) == ("queued", 1, None, None)
    assert "handed back to the queue" in job.log_tail[-1], job.log_tail
    (checkpoint,) = [r.key for r in artifact_rows(service, exp_id) if r.kind == "checkpoint"]
    saved_step = checkpoint_step(checkpoint)
    assert saved_step >= 4   # where it stopped: no periodic checkpoint was due
    assert "sent the messages of handed-back jobs [%d] again" % train_id in stopped.log_text()

    service.worker  # noqa: B018 - a new worker takes the message at once, no reaper involved
    wait_for(lambda: any(f"attempt 1: resuming from checkpoint step {saved_step}" in line
                         for line in service.job(train_id).log_tail or []), 60,
             "the next worker to resume the job")
    assert service.job(train_id).attempt == 1
    with service.sessions() as session:
        cancel_experiment(session, session.get(Experiment, exp_id))
    wait_for(lambda: service.job(train_id).status == "cancelled", 30, "the training to stop")


def test_a_job_in_a_stopping_process_is_handed_back_and_sent_again_as_it_exits(
        service: ServiceHarness, tmp_path) -> None:
    """run_job in a pool process whose worker is stopping (stop_requested): the training stops
    before its first step, the job is queued again at attempt 1 and its message goes out only
    from send_handed_back (the process's exit), not while the worker still consumes."""
    fs_app, fs_settings = filesystem_celery(tmp_path)   # nobody consumes it: messages are counted
    with service.sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=fs_app)
        train_id = experiment.jobs[0].id
    resources = WorkerResources(service.settings)
    resources.stop_requested.set()
    try:
        assert run_job(train_id, resources, fs_app) == "handed back"
        job = service.job(train_id)
        assert (job.status, job.attempt, job.worker, job.enqueued_at) == ("queued", 1, None, None)
        assert resources.handed_back == [train_id] and not resources.stop_requested.is_set()
        assert queued_job_ids(fs_settings, "gpu") == [train_id]          # the create's message only
        assert send_handed_back(resources, fs_app) == [train_id]
        assert queued_job_ids(fs_settings, "gpu") == [train_id, train_id]
        assert service.job(train_id).enqueued_at is not None and resources.handed_back == []
    finally:
        resources.dispose()
        with service.sessions() as session:
            cancel_experiment(session, session.get(Experiment, experiment.id))


# --- the reaper, without a worker --------------------------------------------------------


def test_reaper_requeues_until_attempts_run_out(service: ServiceHarness, tmp_path) -> None:
    # A filesystem queue nobody consumes: the messages stay where the test can count them.
    fs_app, fs_settings = filesystem_celery(tmp_path)
    timeout = service.settings.heartbeat_timeout_s
    with service.sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=fs_app)
        train = experiment.jobs[0]
        assert queued_job_ids(fs_settings, "gpu") == [train.id]

        for attempt in (1, 2, 3):
            transition(session, train, JobStatus.RUNNING, worker="ghost:1")
            session.commit()
            # A fresh heartbeat is not stale.
            assert reap_stale_jobs(session, timeout_s=timeout, celery_app=fs_app) == []
            later = utc_now() + timedelta(seconds=timeout + 1)
            assert reap_stale_jobs(session, later, timeout_s=timeout, celery_app=fs_app) == [train.id]
            session.refresh(train)
            if attempt < 3:
                assert (train.status, train.attempt, train.worker) == ("queued", attempt + 1, None)
                assert queued_job_ids(fs_settings, "gpu") == [train.id] * (attempt + 1)

        assert (train.status, train.attempt) == ("failed", 3)
        assert "worker lost on attempt 3 of 3" in train.error
        downstream = session.scalars(sa.select(Job).where(
            Job.experiment_id == experiment.id, Job.id != train.id)).all()
        assert {(j.status, j.error) for j in downstream} == {
            ("failed", f"upstream train job {train.id} failed")}
        assert experiment_summary(session, experiment)["failed_step"] == "train"


def test_reaper_cancels_a_cancelling_job_whose_worker_died(service: ServiceHarness, tmp_path) -> None:
    fs_app, _ = filesystem_celery(tmp_path)
    with service.sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=fs_app)
        train = experiment.jobs[0]
        transition(session, train, JobStatus.RUNNING, worker="ghost:1")
        session.commit()
        cancel_experiment(session, experiment)
        session.refresh(train)
        assert train.status == "cancelling"
        later = utc_now() + timedelta(seconds=service.settings.heartbeat_timeout_s + 1)
        assert reap_stale_jobs(session, later, timeout_s=service.settings.heartbeat_timeout_s,
                               celery_app=fs_app) == [train.id]
        assert experiment_summary(session, experiment)["status"] == "cancelled"


# --- the embedded transport and the command line -----------------------------------------


def test_embedded_mode_runs_a_pipeline(sqlite_url: str, tmp_path) -> None:
    """The embedded defaults: SQLite, and kombu's filesystem transport under <home>/queue
    (broker_url None) carrying messages between this process and the worker's."""
    settings = service_settings_for(sqlite_url, tmp_path / "home", None, broker_url=None)
    harness = ServiceHarness(settings, tmp_path)
    try:
        spec = tiny_spec(train={"iterations": 10}, evaluate={"t_grid": [0.5], "label_budgets": [20]})
        exp_id = create(harness, spec)
        jobs = harness.wait_until_finished(exp_id, timeout=90)
        assert [(j.kind, j.status) for j in jobs] == [
            ("train", "succeeded"), ("encode", "succeeded"), ("probe", "succeeded"),
            ("sample", "succeeded")], [(j.kind, j.error) for j in jobs]
        assert (settings.home / "queue" / "control").is_dir()
        assert harness.store.exists(probes_key(exp_id, "json"))
    finally:
        harness.close()


def test_drl_worker_refuses_an_unmigrated_database(empty_pg_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DRL_DATABASE_URL", empty_pg_url)
    with pytest.raises(SystemExit) as exit_info:
        main(["worker"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("drl: error: database ") and "is not migrated (at revision none" in error


def test_drl_worker_rejects_unknown_queues(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--queues", "gpu,tpu"])
    assert "--queues: expected a comma-separated subset of gpu,cpu, got 'gpu,tpu'" in capsys.readouterr().err
