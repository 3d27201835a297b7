"""Experiment service functions: what the API (and the CLI) may do to an experiment.

These are the only writers of experiments and of job status outside the worker; every status
change goes through `drl_core.job_states.transition`. Functions that create runnable work
commit first and send after (the worker reads the row the message names), and a send that
fails (broker down) does not fail them: the committed job is the work, and the reaper sends
its message later (`dispatch.send_or_leave_to_reaper`). So a create either fails having saved
nothing, or succeeds. They take an optional `celery_app` (default: the app for
`get_settings()`).

The pipeline an experiment starts with: train (gpu) -> encode on the spec's t grid (gpu) ->
probe (cpu) -> sample (gpu); a kind without an encoder (`vdm`) trains and samples only, and
asking it for encodings raises `NoEncoder`. Encodings and samples requested later depend on
train alone. Samples default to `generation_sample_spec` (z from the prior for vdm_vae).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from drl_core.artifact_keys import (ArtifactKind, embedding_kind, experiment_prefix,
                                    metrics_key, t_key)
from drl_core.artifacts import ArtifactStore
from drl_core.dispatch import is_ready, send_or_leave_to_reaper
from drl_core.job_limits import check_queued_limit
from drl_core.job_states import (
    RESUMABLE,
    IllegalTransition,
    JobKind,
    JobStatus,
    StaleTransition,
    experiment_status,
    failed_job,
    transition,
)
from drl_core.models import Artifact, Experiment, Job
from drl_core.priority import Priority
from drl_core.queue import QUEUE_FOR_KIND
from drl_core.settings import get_settings
from drl_engine.spec import (TRAINED, EncoderWeights, ExperimentSpec, SpecError,
                             generation_sample_spec, has_encoder, has_sampler, parse_spec)

# A cancel that keeps losing compare-and-sets to a worker gives up after this many tries.
_CANCEL_RETRIES = 5


class IdempotencyConflict(ValueError):
    """The idempotency key was already used (by this owner) for a different spec."""


class NotReady(RuntimeError):
    """The experiment is not in a state that allows this yet (e.g. training not finished)."""


class NoEncoder(ValueError):
    """The experiment's model kind learns no code: it has no embeddings or probes, ever."""


def experiment_kind(experiment: Experiment) -> str:
    return (experiment.spec.get("model") or {}).get("kind", "drl")


def require_encoder(experiment: Experiment) -> None:
    """NoEncoder, naming the kind, for an experiment whose model has no encoder (`vdm`)."""
    kind = experiment_kind(experiment)
    if not has_encoder(kind):
        raise NoEncoder(f"experiment {experiment.id} is model.kind {kind!r}, which has no "
                        "encoder: it has no embeddings or probes")


# --- create ------------------------------------------------------------------------------


def experiment_name(spec: ExperimentSpec) -> str:
    return spec.name or f"{spec.dataset.name}-{spec.model.kind}-{spec.model.encoder}"


def new_job(experiment: Experiment, kind: JobKind, params: dict[str, Any],
            depends_on: Job | None = None) -> Job:
    return Job(experiment=experiment, kind=kind.value, queue=QUEUE_FOR_KIND[kind],
               params=params, depends_on=depends_on)


def _pipeline_jobs(experiment: Experiment, spec: ExperimentSpec) -> list[Job]:
    """train -> encode (t grid) -> probe -> sample, keeping only the stages the kind has: a
    kind without a code (`vdm`) has nothing to encode or probe (train -> sample); the
    baselines (ae, vae, dae, ...) do not generate (train -> encode -> probe)."""
    kind = spec.model.kind
    train = new_job(experiment, JobKind.TRAIN, {})
    jobs = [train]
    if has_encoder(kind):
        t_grid = sorted({t_key(t) for t in spec.evaluate.t_grid})
        encode = new_job(experiment, JobKind.ENCODE, {"t": t_grid}, train)
        jobs += [encode, new_job(experiment, JobKind.PROBE, {"t": t_grid}, encode)]
    if has_sampler(kind):
        jobs.append(new_job(experiment, JobKind.SAMPLE,
                            {"sample": generation_sample_spec(spec).model_dump(mode="json")}, jobs[-1]))
    return jobs


def find_by_idempotency_key(session: Session, owner_id: int | None, key: str) -> Experiment | None:
    owner = Experiment.owner_id.is_(None) if owner_id is None else Experiment.owner_id == owner_id
    return session.scalars(
        sa.select(Experiment).where(owner, Experiment.idempotency_key == key)
    ).one_or_none()


def _replay(existing: Experiment, spec_json: dict[str, Any],
            priority: Priority) -> tuple[Experiment, bool]:
    """The experiment an earlier request with the same key created; it sends nothing (a
    message that never went out is the reaper's to send), so a hundred retries are a hundred
    reads, not a hundred messages."""
    if existing.spec != spec_json:
        raise IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for experiment "
            f"{existing.id} with a different spec")
    if existing.priority != priority:
        raise IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for experiment "
            f"{existing.id} with priority {existing.priority}, not {priority}")
    return existing, False


def create_experiment(session: Session, spec: ExperimentSpec, owner_id: int | None,
                      idempotency_key: str | None, *,
                      celery_app: Celery | None = None,
                      check_new: Callable[[ExperimentSpec], None] | None = None,
                      priority: Priority = Priority.NORMAL,
                      queued_limit: int | None = None,
                      ) -> tuple[Experiment, bool]:
    """Create the experiment (at `priority`: who may ask for which is the API's to check)
    and its pipeline jobs, commit, send training's message (or leave it to the reaper when
    the broker is down). LimitExceeded (drl_core/job_limits.py) if its jobs would take the
    owner past `queued_limit` queued jobs (None: the settings'), checked after a replay.

    Returns (experiment, created). The same `idempotency_key` for the same owner returns the
    existing experiment with created=False (also when a concurrent request won the insert);
    with a different spec or priority it raises IdempotencyConflict. `check_new(spec)` (the API's dataset
    check) runs before anything is stored, and only for a spec that would be stored: a replay
    answers with the experiment that exists, whatever has happened to its files since.
    """
    spec_json = spec.model_dump(mode="json")
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            return _replay(existing, spec_json, priority)
    if check_new is not None:
        check_new(spec)

    experiment = Experiment(name=experiment_name(spec), owner_id=owner_id, spec=spec_json,
                            idempotency_key=idempotency_key, priority=priority.value)
    jobs = _pipeline_jobs(experiment, spec)
    check_queued_limit(session, owner_id, len(jobs), queued_limit)
    session.add(experiment)
    session.add_all(jobs)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = (None if idempotency_key is None
                    else find_by_idempotency_key(session, owner_id, idempotency_key))
        if existing is None:
            raise
        return _replay(existing, spec_json, priority)
    send_or_leave_to_reaper(jobs[0], celery_app)
    return experiment, True


# --- cancel and delete -------------------------------------------------------------------


def experiment_jobs(session: Session, experiment_id: int) -> list[Job]:
    """The experiment's jobs as the database has them now (not as this session cached them)."""
    return list(session.scalars(
        sa.select(Job).where(Job.experiment_id == experiment_id).order_by(Job.id)
        .execution_options(populate_existing=True)))


def _cancel_target(status: str) -> JobStatus | None:
    if status in (JobStatus.QUEUED, JobStatus.LOST):
        return JobStatus.CANCELLED           # nobody holds it: cancelled at once
    if status == JobStatus.RUNNING:
        return JobStatus.CANCELLING          # its worker stops at its next heartbeat
    return None                              # already cancelling, or finished


def _cancel_job(session: Session, job: Job) -> None:
    for _ in range(_CANCEL_RETRIES):
        target = _cancel_target(job.status)
        if target is None:
            return
        try:
            transition(session, job, target)
            return
        except (StaleTransition, IllegalTransition):
            # A worker or the reaper moved it meanwhile (e.g. queued -> running): decide again.
            session.refresh(job)
    raise RuntimeError(f"job {job.id}: could not cancel it, its status kept changing")


def cancel_experiment(session: Session, experiment: Experiment) -> Experiment:
    """Cancel every job that has not finished: queued (and lost) -> cancelled, running ->
    cancelling (its worker stops and moves it to cancelled). Idempotent; commits."""
    for job in experiment_jobs(session, experiment.id):
        _cancel_job(session, job)
    session.commit()
    session.refresh(experiment)
    return experiment


def resume_experiment(session: Session, experiment: Experiment, *,
                      celery_app: Celery | None = None,
                      queued_limit: int | None = None) -> list[Job]:
    """Re-open every failed or cancelled job of the experiment as a new attempt, with a fresh
    budget of attempts and transient retries; commits, then sends the ones that are ready
    (the others wait for their upstream job, which is re-opened too). A train job resumes
    from its last stored checkpoint, so the steps it had done are not trained again. Returns
    the jobs resumed. NotReady if no job is failed or cancelled (it is queued, running or
    succeeded: nothing to resume); LimitExceeded if they would take the owner past
    `queued_limit` queued jobs (None: the settings')."""
    attempts = get_settings().max_attempts
    jobs, resumed = experiment_jobs(session, experiment.id), []
    check_queued_limit(session, experiment.owner_id,
                       sum(job.status in RESUMABLE for job in jobs), queued_limit)
    for job in jobs:
        if job.status not in RESUMABLE:
            continue
        try:
            transition(session, job, JobStatus.QUEUED, max_attempts=job.attempt + attempts)
        except (StaleTransition, IllegalTransition):
            continue   # another resume got it first
        resumed.append(job)
    if not resumed:
        raise NotReady(f"experiment {experiment.id} is {experiment_status(jobs)}: "
                       "it has no failed or cancelled job to resume")
    session.commit()
    for job in resumed:
        if is_ready(job):
            send_or_leave_to_reaper(job, celery_app)
    return resumed


def delete_experiment(session: Session, store: ArtifactStore, experiment: Experiment) -> None:
    """Cancel what runs, delete the artifacts under `experiments/<id>/`, then the rows.

    Files go first so a failure can be retried (the experiment is still there to delete). A
    worker that uploads between the two steps finds its job gone at the next heartbeat and
    removes the experiment's prefix itself (worker/tasks.py).
    """
    experiment_id = experiment.id
    cancel_experiment(session, experiment)
    store.delete_prefix(experiment_prefix(experiment_id))
    # Core DELETE: the database's ON DELETE CASCADE removes jobs, artifacts and metric points
    # (the ORM would delete loaded jobs one by one, tripping over depends_on's cascade).
    session.expunge(experiment)
    session.execute(sa.delete(Experiment).where(Experiment.id == experiment_id))
    session.commit()


# --- more work on a trained model --------------------------------------------------------


def train_job(session: Session, experiment: Experiment) -> Job:
    job = session.scalars(
        sa.select(Job).where(Job.experiment_id == experiment.id, Job.kind == JobKind.TRAIN.value)
        .order_by(Job.id).limit(1).execution_options(populate_existing=True)
    ).one_or_none()
    if job is None:
        raise NotReady(f"experiment {experiment.id} has no train job")
    return job


def validate_t_values(t_values: Any) -> list[float]:
    """Sorted, distinct t (3 decimals) from a non-empty list of numbers in [0, 1]."""
    if isinstance(t_values, (str, bytes)) or not isinstance(t_values, Sequence) or not t_values:
        raise ValueError(f"t: expected a non-empty list of numbers in [0, 1], got {t_values!r}")
    bad = [t for t in t_values
           if isinstance(t, bool) or not isinstance(t, (int, float))
           or not math.isfinite(t) or not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"t: every value must be a number in [0, 1], got {bad}")
    return sorted({t_key(t) for t in t_values})


def request_encodings(session: Session, experiment: Experiment, t_values: list[float], *,
                      celery_app: Celery | None = None, queued_limit: int | None = None) -> Job:
    """An encode job for `t_values` (both splits); commits, and enqueues it now if training
    has succeeded, or when it does (as `request_samples`). NoEncoder for a kind without an
    encoder; ValueError naming `t` on bad values; NotReady if training failed or was
    cancelled (there is no model to encode with); LimitExceeded past `queued_limit` (as
    `request_samples`).
    """
    require_encoder(experiment)
    ts = validate_t_values(t_values)
    train = usable_train_job(session, experiment, "encode with")
    job = new_job(experiment, JobKind.ENCODE, {"t": ts}, train)
    return add_and_release(session, job, train, celery_app, queued_limit)


def sample_params(experiment: Experiment, params: Any) -> dict[str, Any]:
    """`params` merged over the experiment's generation settings (`generation_sample_spec`:
    spec.sample, z from the prior for vdm_vae), validated (SpecError naming `sample.<field>`,
    including the checks that involve the model, e.g. grid codes)."""
    if not isinstance(params, dict):
        raise SpecError(f"sample: expected a mapping of sample settings, got {type(params).__name__}")
    spec = dict(experiment.spec)
    defaults = generation_sample_spec(parse_spec(spec)).model_dump(mode="json")
    spec["sample"] = {**defaults, **params}
    return parse_spec(spec).sample.model_dump(mode="json")


def request_samples(session: Session, experiment: Experiment, params: dict[str, Any], *,
                    celery_app: Celery | None = None, queued_limit: int | None = None) -> Job:
    """A sample job with `params` over the spec's sample settings; commits, and enqueues it
    now if training has succeeded, or when it does. NotReady if training failed or was
    cancelled (there is no model to sample from); SpecError naming model.kind for a kind that
    does not generate (the baselines); LimitExceeded if the job would take the owner past
    `queued_limit` queued jobs (None: the settings')."""
    kind = experiment_kind(experiment)
    if not has_sampler(kind):
        raise SpecError(f"model.kind: experiment {experiment.id} is {kind!r}, which does not "
                        "generate samples")
    merged = sample_params(experiment, params)
    train = usable_train_job(session, experiment, "sample from")
    job = new_job(experiment, JobKind.SAMPLE, {"sample": merged}, train)
    return add_and_release(session, job, train, celery_app, queued_limit)


def usable_train_job(session: Session, experiment: Experiment, purpose: str) -> Job:
    """The train job a requested job waits for; NotReady once it can never give a model."""
    train = train_job(session, experiment)
    if train.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise NotReady(f"experiment {experiment.id}: training {train.status}; there is no model "
                       f"to {purpose}")
    return train


def add_and_release(session: Session, job: Job, train: Job, celery_app: Celery | None,
                    queued_limit: int | None = None) -> Job:
    """Commit a requested job (within its owner's `queued_limit`); send it at once when its
    train job already succeeded (else the train job's success releases it, like any
    dependent; a broker that is down leaves it to the reaper)."""
    check_queued_limit(session, job.experiment.owner_id, 1, queued_limit)
    session.add(job)
    session.commit()
    if train.status == JobStatus.SUCCEEDED:
        send_or_leave_to_reaper(job, celery_app)
    return job


# --- reading -----------------------------------------------------------------------------


def computed_embeddings(session: Session, experiment_id: int,
                        encoder: EncoderWeights = TRAINED) -> dict[str, list[float]]:
    """The t values with a stored embedding, per split: {"train": [...], "test": [...]}; the
    trained encoder's unless `encoder` asks for the untrained control's (random_init)."""
    rows = session.scalars(sa.select(Artifact).where(
        Artifact.experiment_id == experiment_id, Artifact.kind == embedding_kind(encoder).value))
    found: dict[str, set[float]] = {"train": set(), "test": set()}
    for row in rows:
        found.setdefault(row.meta["split"], set()).add(t_key(row.meta["t"]))
    return {split: sorted(ts) for split, ts in found.items()}


def probe_summary(session: Session, experiment_id: int) -> dict[str, Any] | None:
    """{"best": {column: {"t", "value", "validation"}}, "control_best": the same for the
    untrained control, "key": ...} from the stored probes.json's row (best t chosen on the
    validation split)."""
    row = session.scalars(sa.select(Artifact).where(
        Artifact.experiment_id == experiment_id, Artifact.kind == ArtifactKind.PROBES.value,
        Artifact.key.like("%.json"))).one_or_none()
    if row is None:
        return None
    return {"best": row.meta.get("best", {}), "control_best": row.meta.get("control_best"),
            "key": row.key}


def bits_per_dim_summary(session: Session, experiment_id: int) -> dict[str, Any] | None:
    """The test-set bits/dim a VDM kind's train job stored (total, diffusion, prior,
    reconstruction, kl, images, split, training_objective, step, key); None before (or for a
    kind that reports none)."""
    row = session.scalars(sa.select(Artifact).where(
        Artifact.experiment_id == experiment_id, Artifact.kind == ArtifactKind.METRICS.value,
        Artifact.key == metrics_key(experiment_id, "bits_per_dim"))).one_or_none()
    if row is None:
        return None
    return {**row.meta.get("values", {}), "key": row.key}


def experiment_summary(session: Session, experiment: Experiment) -> dict[str, Any]:
    """Status derived from the jobs, the failed step and why, training progress, the best t
    per probe (once probes ran), the computed embeddings, and the test-set bits/dim (VDM
    kinds, once trained)."""
    jobs = experiment_jobs(session, experiment.id)
    failed = failed_job(jobs)
    train = next((j for j in jobs if j.kind == JobKind.TRAIN), None)
    return {
        "id": experiment.id,
        "name": experiment.name,
        "owner_id": experiment.owner_id,
        "created_at": experiment.created_at,
        "status": experiment_status(jobs).value,
        "failed_step": failed.kind if failed is not None else None,
        "error": failed.error if failed is not None else None,
        "progress": None if train is None else {
            "step": train.step, "total": train.total, "loss": train.loss,
            "images_per_s": train.images_per_s, "heartbeat_at": train.heartbeat_at},
        "jobs": [{"id": j.id, "kind": j.kind, "status": j.status, "attempt": j.attempt,
                  "depends_on_id": j.depends_on_id, "error": j.error} for j in jobs],
        "probes": probe_summary(session, experiment.id),
        "embeddings": computed_embeddings(session, experiment.id),
        "has_encoder": has_encoder(experiment_kind(experiment)),
        "bits_per_dim": bits_per_dim_summary(session, experiment.id),
    }
