"""Experiment service functions, artifact keys and dispatch, on real PostgreSQL.

Messages go to the embedded filesystem transport in a temporary folder that no worker reads,
so each test can see exactly what was enqueued (job ids per queue).
"""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.artifact_keys import (
    checkpoint_key,
    checkpoint_step,
    embedding_key,
    embedding_kind,
    experiment_prefix,
    labels_key,
    probes_key,
    sample_key,
    t_key,
)
from drl_core.artifacts import LocalArtifactStore, StoredArtifact
from drl_core.dispatch import release_dependents, settle_downstream
from drl_core.experiments import (
    IdempotencyConflict,
    NotReady,
    cancel_experiment,
    computed_embeddings,
    create_experiment,
    delete_experiment,
    experiment_summary,
    request_encodings,
    request_samples,
)
from drl_core.job_states import JobStatus, transition
from drl_core.models import Artifact, Experiment, Job, MetricPoint, User
from drl_engine.encode import t_key as engine_t_key
from drl_engine.spec import SpecError, parse_spec
from worker.context import upsert_artifact

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import filesystem_celery, queued_job_ids, tiny_spec  # noqa: E402

pytest_plugins = ["worker_fixtures"]


@pytest.fixture
def queue(tmp_path):
    """(celery app, settings) of an unconsumed filesystem queue."""
    return filesystem_celery(tmp_path / "home")


def create(session: Session, queue, spec=None, owner_id=None, key=None):
    return create_experiment(session, spec or tiny_spec(), owner_id, key, celery_app=queue[0])


def run_to(session: Session, job: Job, *statuses: JobStatus, **fields) -> None:
    """Walk `job` through `statuses` as a worker would (each a legal transition)."""
    for status in statuses:
        transition(session, job, status, **(fields if status == statuses[-1] else {}))
    session.commit()


# --- create ------------------------------------------------------------------------------


def test_create_builds_the_pipeline_and_enqueues_only_training(pg_session: Session, queue) -> None:
    spec = tiny_spec(evaluate={"t_grid": [1.0, 0.5, 0.0, 0.5000001]})
    experiment, created = create(pg_session, queue, spec)
    assert created and experiment.spec == spec.model_dump(mode="json")

    train, encode, probe, sample = experiment.jobs
    assert [(j.kind, j.queue, j.status, j.attempt) for j in experiment.jobs] == [
        ("train", "gpu", "queued", 1), ("encode", "gpu", "queued", 1),
        ("probe", "cpu", "queued", 1), ("sample", "gpu", "queued", 1)]
    assert [j.depends_on_id for j in experiment.jobs] == [None, train.id, encode.id, probe.id]
    assert encode.params == probe.params == {"t": [0.0, 0.5, 1.0]}
    assert sample.params == {"sample": spec.sample.model_dump(mode="json")}
    assert queued_job_ids(queue[1], "gpu") == [train.id]
    assert queued_job_ids(queue[1], "cpu") == []


def test_create_is_idempotent_per_owner_and_key(pg_session: Session, queue) -> None:
    first, created = create(pg_session, queue, key="k1")
    again, created_again = create(pg_session, queue, key="k1")
    assert created and not created_again and again.id == first.id
    assert pg_session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 1
    # The replay sends nothing (an unsent message is the reaper's); no new jobs.
    assert queued_job_ids(queue[1], "gpu") == [first.jobs[0].id]
    assert pg_session.scalar(sa.select(sa.func.count()).select_from(Job)) == 4

    with pytest.raises(IdempotencyConflict, match="'k1'.*different spec"):
        create(pg_session, queue, tiny_spec(train={"iterations": 31}), key="k1")

    alice = User(name="alice")
    pg_session.add(alice)
    pg_session.commit()
    owned, created_owned = create(pg_session, queue, owner_id=alice.id, key="k1")
    assert created_owned and owned.id != first.id
    assert create(pg_session, queue, owner_id=alice.id, key="k1")[0].id == owned.id
    # No key: every call creates.
    assert create(pg_session, queue)[0].id != create(pg_session, queue)[0].id


def test_create_with_the_broker_down_leaves_a_queued_job_the_reaper_sends(
        pg_session: Session, queue, tmp_path) -> None:
    """Honest creates: the experiment is saved and answered as created; its train job stays
    queued with no message sent, and the reaper's resend pass sends it once the broker is
    back. A replay in between sends nothing either."""
    from datetime import timedelta

    from drl_core.job_states import utc_now
    from drl_core.queue import make_celery
    from drl_core.settings import Settings
    from worker.reaper import resend_unsent_jobs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = make_celery(Settings(home=tmp_path / "down", broker_url=f"redis://127.0.0.1:{closed}/0"))
    experiment, created = create_experiment(pg_session, tiny_spec(), None, "k", celery_app=down)
    assert created
    train = experiment.jobs[0]
    pg_session.refresh(train)
    assert (train.status, train.enqueued_at) == (JobStatus.QUEUED, None)
    assert create_experiment(pg_session, tiny_spec(), None, "k", celery_app=queue[0]) == (experiment, False)
    assert queued_job_ids(queue[1], "gpu") == []

    later = utc_now() + timedelta(seconds=61)
    assert resend_unsent_jobs(pg_session, later, grace_s=60, resend_after_s=3600,
                              celery_app=queue[0]) == [train.id]
    assert queued_job_ids(queue[1], "gpu") == [train.id]
    down.close()


def test_replay_does_not_resend_a_running_job(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue, key="k")
    run_to(pg_session, experiment.jobs[0], JobStatus.RUNNING)
    create(pg_session, queue, key="k")
    assert queued_job_ids(queue[1], "gpu") == [experiment.jobs[0].id]


# --- cancel and delete -------------------------------------------------------------------


def test_cancel_queued_and_running_jobs(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    train = experiment.jobs[0]
    run_to(pg_session, train, JobStatus.RUNNING, worker="w:1")

    cancel_experiment(pg_session, experiment)
    assert [j.status for j in experiment.jobs] == ["cancelling", "cancelled", "cancelled", "cancelled"]
    assert experiment_summary(pg_session, experiment)["status"] == "cancelling"
    cancel_experiment(pg_session, experiment)   # idempotent
    assert [j.status for j in experiment.jobs] == ["cancelling", "cancelled", "cancelled", "cancelled"]

    run_to(pg_session, train, JobStatus.CANCELLED)   # what the worker does when it stops
    assert experiment_summary(pg_session, experiment)["status"] == "cancelled"


def test_cancel_leaves_finished_jobs_alone(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    run_to(pg_session, experiment.jobs[0], JobStatus.RUNNING, JobStatus.SUCCEEDED)
    cancel_experiment(pg_session, experiment)
    assert [j.status for j in experiment.jobs] == ["succeeded", "cancelled", "cancelled", "cancelled"]


def test_delete_removes_rows_and_artifacts_of_that_experiment_only(pg_session: Session, queue,
                                                                   tmp_path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    doomed, _ = create(pg_session, queue)
    kept, _ = create(pg_session, queue)
    run_to(pg_session, doomed.jobs[0], JobStatus.RUNNING)
    for experiment in (doomed, kept):
        stored = store.put_bytes(checkpoint_key(experiment.id, 10), b"weights")
        upsert_artifact(pg_session, experiment.id, experiment.jobs[0].id, "checkpoint", stored, {})
        pg_session.add(MetricPoint(experiment_id=experiment.id, job_id=experiment.jobs[0].id,
                                   key="loss", step=10, value=1.0))
    pg_session.commit()
    doomed_id = doomed.id

    delete_experiment(pg_session, store, doomed)
    assert pg_session.get(Experiment, doomed_id) is None
    for model in (Job, Artifact, MetricPoint):
        assert pg_session.scalar(sa.select(sa.func.count()).select_from(model).where(
            model.experiment_id == doomed_id)) == 0
    assert store.list(experiment_prefix(doomed_id)) == []
    assert store.list(experiment_prefix(kept.id)) == [checkpoint_key(kept.id, 10)]
    assert len(pg_session.scalars(sa.select(Job).where(Job.experiment_id == kept.id)).all()) == 4


# --- more encodings and samples ----------------------------------------------------------


def test_request_encodings_waits_for_training_and_validates_t(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    train = experiment.jobs[0]
    # Training not finished: the job waits behind it (its success enqueues the job), as samples do.
    waiting = request_encodings(pg_session, experiment, [0.5], celery_app=queue[0])
    assert (waiting.status, waiting.depends_on_id) == ("queued", train.id)
    assert queued_job_ids(queue[1], "gpu") == [train.id]

    run_to(pg_session, train, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    for bad in ([], [1.5], [-0.1], ["0.5"], [True], [float("nan")], 0.5):
        with pytest.raises(ValueError, match=r"^t: "):
            request_encodings(pg_session, experiment, bad, celery_app=queue[0])

    job = request_encodings(pg_session, experiment, [0.5, 0.25, 0.2500001, 1],
                            celery_app=queue[0])
    assert (job.kind, job.status, job.queue, job.depends_on_id) == ("encode", "queued", "gpu", train.id)
    assert job.params == {"t": [0.25, 0.5, 1.0]}
    assert queued_job_ids(queue[1], "gpu") == [train.id, job.id]


def test_request_samples_validates_against_the_spec(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    train = experiment.jobs[0]
    with pytest.raises(SpecError, match=r"sample\.steps"):
        request_samples(pg_session, experiment, {"steps": 0}, celery_app=queue[0])
    with pytest.raises(SpecError, match=r"sample\.colour.*unknown field"):
        request_samples(pg_session, experiment, {"colour": "red"}, celery_app=queue[0])
    with pytest.raises(SpecError, match=r"sample\.code_source 'grid' needs model\.latent_dim 2"):
        request_samples(pg_session, experiment, {"code_source": "grid"}, celery_app=queue[0])

    # Training not finished: the job waits behind it (its success enqueues the job).
    waiting = request_samples(pg_session, experiment, {"count": 9, "sampler": "ode"},
                              celery_app=queue[0])
    expected = {**tiny_spec().sample.model_dump(mode="json"), "count": 9, "sampler": "ode"}
    assert waiting.params == {"sample": expected} and waiting.depends_on_id == train.id
    assert queued_job_ids(queue[1], "gpu") == [train.id]

    run_to(pg_session, train, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    released = release_dependents(pg_session, train, queue[0])
    assert released == [experiment.jobs[1].id, waiting.id]
    now = request_samples(pg_session, experiment, {}, celery_app=queue[0])
    assert queued_job_ids(queue[1], "gpu") == sorted([train.id, *released, now.id])


def test_request_samples_refuses_after_failed_training(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    run_to(pg_session, experiment.jobs[0], JobStatus.RUNNING, JobStatus.FAILED, error="boom")
    with pytest.raises(NotReady, match="training failed"):
        request_samples(pg_session, experiment, {}, celery_app=queue[0])


# --- the job graph and the summary -------------------------------------------------------


def test_failure_settles_downstream_and_the_summary_names_the_step(pg_session: Session,
                                                                   queue) -> None:
    experiment, _ = create(pg_session, queue)
    train, encode, probe, sample = experiment.jobs
    run_to(pg_session, train, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    run_to(pg_session, encode, JobStatus.RUNNING, JobStatus.FAILED, error="RuntimeError: out of memory")
    assert settle_downstream(pg_session, encode) == [probe.id, sample.id]
    pg_session.commit()
    assert [(j.status, j.error) for j in (probe, sample)] == [
        ("failed", f"upstream encode job {encode.id} failed")] * 2

    summary = experiment_summary(pg_session, experiment)
    assert (summary["status"], summary["failed_step"], summary["error"]) == (
        "failed", "encode", "RuntimeError: out of memory")
    assert summary["probes"] is None
    assert [j["status"] for j in summary["jobs"]] == ["succeeded", "failed", "failed", "failed"]


def test_summary_reports_best_t_and_computed_embeddings(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    best = {"linear": {"t": 0.5, "value": 0.9, "validation": 0.88}}
    control_best = {"linear": {"t": 0.0, "value": 0.4, "validation": 0.41}}
    rows = [("probes", probes_key(experiment.id, "json"),
             {"format": "json", "best": best, "control_best": control_best}),
            ("embedding", embedding_key(experiment.id, "test", 0.5), {"split": "test", "t": 0.5}),
            ("embedding", embedding_key(experiment.id, "test", 0.0), {"split": "test", "t": 0.0}),
            ("control_embedding", embedding_key(experiment.id, "test", 0.25, "random_init"),
             {"split": "test", "t": 0.25}),
            ("labels", labels_key(experiment.id, "test"), {"split": "test"})]
    for kind, key, meta in rows:
        upsert_artifact(pg_session, experiment.id, None, kind, StoredArtifact(key, 1, "0" * 64), meta)
    pg_session.commit()
    summary = experiment_summary(pg_session, experiment)
    assert summary["probes"] == {"best": best, "control_best": control_best,
                                 "key": probes_key(experiment.id, "json")}
    # The untrained control's codes are listed only when asked for.
    assert summary["embeddings"] == {"train": [], "test": [0.0, 0.5]}
    assert computed_embeddings(pg_session, experiment.id, "random_init") == {"train": [],
                                                                             "test": [0.25]}
    assert summary["status"] == "queued" and summary["failed_step"] is None


def test_upsert_records_a_key_once(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    key = sample_key(experiment.id, 7)
    upsert_artifact(pg_session, experiment.id, None, "sample", StoredArtifact(key, 1, "a" * 64), {})
    upsert_artifact(pg_session, experiment.id, None, "sample", StoredArtifact(key, 2, "b" * 64),
                    {"job_id": 7})
    pg_session.commit()
    row = pg_session.scalars(sa.select(Artifact).where(Artifact.key == key)).one()
    assert (row.size, row.sha256, row.meta) == (2, "b" * 64, {"job_id": 7})


# --- artifact keys -----------------------------------------------------------------------


def test_artifact_keys() -> None:
    assert experiment_prefix(3) == "experiments/3/"
    assert checkpoint_key(3, 1000) == "experiments/3/checkpoints/ckpt_00001000.pt"
    assert checkpoint_step(checkpoint_key(3, 1000)) == 1000
    assert embedding_key(3, "test", 0.5) == "experiments/3/embeddings/test/t=0.500.npy"
    assert embedding_key(3, "train", 0.1 + 0.2) == "experiments/3/embeddings/train/t=0.300.npy"
    assert embedding_key(3, "test", 0.5, "random_init") == \
        "experiments/3/embeddings/random_init/test/t=0.500.npy"
    assert (embedding_kind("trained"), embedding_kind("random_init")) == (
        "embedding", "control_embedding")
    assert labels_key(3, "train") == "experiments/3/embeddings/train/labels.npy"
    assert probes_key(3) == "experiments/3/probes/probes.json"
    assert probes_key(3, "png") == "experiments/3/probes/probes.png"
    assert sample_key(3, 12) == "experiments/3/samples/12.png"
    for t in (0.0, 0.1 + 0.2, 0.12345, 0.9996, 1.0):
        assert t_key(t) == engine_t_key(t)
    with pytest.raises(ValueError, match="split: expected one of train, test, got 'val'"):
        embedding_key(3, "val", 0.5)
    with pytest.raises(ValueError, match="encoder: expected one of trained, random_init"):
        embedding_key(3, "test", 0.5, "untrained")
    with pytest.raises(ValueError, match="not a checkpoint key"):
        checkpoint_step("experiments/3/samples/1.png")


def test_requests_after_failed_training_are_refused(pg_session: Session, queue) -> None:
    experiment, _ = create(pg_session, queue)
    run_to(pg_session, experiment.jobs[0], JobStatus.RUNNING, JobStatus.FAILED)
    with pytest.raises(NotReady, match="no model to encode with"):
        request_encodings(pg_session, experiment, [0.5], celery_app=queue[0])
    with pytest.raises(NotReady, match="no model to sample from"):
        request_samples(pg_session, experiment, {}, celery_app=queue[0])


def test_a_kind_without_a_code_gets_no_encode_or_probe_jobs(pg_session: Session, queue) -> None:
    spec = parse_spec({**tiny_spec().model_dump(mode="json"),
                       "model": {**tiny_spec().model.model_dump(mode="json"), "kind": "vdm"}})
    experiment, created = create_experiment(pg_session, spec, None, None, celery_app=queue[0])
    assert created and [j.kind for j in experiment.jobs] == ["train", "sample"]
    assert experiment.jobs[1].depends_on_id == experiment.jobs[0].id


def test_a_baseline_gets_no_sample_job_and_refuses_sample_requests(pg_session: Session, queue) -> None:
    spec = parse_spec({**tiny_spec().model_dump(mode="json"),
                       "model": {**tiny_spec().model.model_dump(mode="json"), "kind": "dae"}})
    experiment, _ = create_experiment(pg_session, spec, None, None, celery_app=queue[0])
    assert [j.kind for j in experiment.jobs] == ["train", "encode", "probe"]
    with pytest.raises(SpecError, match="model.kind: .*'dae', which does not generate"):
        request_samples(pg_session, experiment, {}, celery_app=queue[0])


def test_a_ready_job_whose_message_never_went_out_is_sent_again(pg_session: Session, queue) -> None:
    """The worker that finished training died before enqueuing the encode job: the reaper's
    resend pass finds it (enqueued_at NULL, ready for longer than the grace) and sends it."""
    from datetime import timedelta

    from drl_core.job_states import utc_now
    from worker.reaper import resend_unsent_jobs

    experiment, _ = create(pg_session, queue)
    train, encode = experiment.jobs[0], experiment.jobs[1]
    assert train.enqueued_at is not None and encode.enqueued_at is None
    run_to(pg_session, train, JobStatus.RUNNING, JobStatus.SUCCEEDED)   # no release_dependents
    pg_session.commit()
    assert queued_job_ids(queue[1], "gpu") == [train.id]

    now = utc_now()
    assert resend_unsent_jobs(pg_session, now, grace_s=60, resend_after_s=3600,
                              celery_app=queue[0]) == []          # within the grace: left alone
    later = now + timedelta(seconds=61)
    assert resend_unsent_jobs(pg_session, later, grace_s=60, resend_after_s=3600,
                              celery_app=queue[0]) == [encode.id]  # probe is not ready: not sent
    assert queued_job_ids(queue[1], "gpu") == [train.id, encode.id]
    pg_session.refresh(encode)
    assert encode.enqueued_at is not None
    # Sent: not again until resend_after_s has passed without the job starting.
    assert resend_unsent_jobs(pg_session, later + timedelta(seconds=120), grace_s=60,
                              resend_after_s=3600, celery_app=queue[0]) == []
    assert resend_unsent_jobs(pg_session, later + timedelta(seconds=3700), grace_s=60,
                              resend_after_s=3600, celery_app=queue[0]) == [encode.id]
