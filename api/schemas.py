"""Request and response models (what /docs shows). Built from the ORM rows by the `from_*`
constructors, so the routers never assemble dicts by hand."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from drl_core.artifact_keys import checkpoint_step
from drl_core.job_states import JobStatus, experiment_status, failed_job
from drl_core.models import Artifact, Experiment, Job
from drl_core.priority import Priority
from drl_core.queue_forecast import QueuePlace
from drl_engine.code_usage_table import CodeUsage
from drl_engine.spec import EncoderWeights, ExperimentSpec, SampleSpec

Split = Literal["train", "test"]

# Most t values one encode request may ask for (the default grid has 11).
MAX_T_PER_REQUEST = 101


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is reported as null."""
    return value if value is None or math.isfinite(value) else None


# --- jobs --------------------------------------------------------------------------------


class JobProgress(BaseModel):
    step: int | None = Field(description="steps done (training iterations, t values encoded, ...)")
    total: int | None
    fraction: float | None = Field(description="step / total in [0, 1], when both are known")
    loss: float | None
    images_per_s: float | None
    heartbeat_at: datetime | None


class JobOut(BaseModel):
    id: int
    experiment_id: int
    kind: str
    status: str
    attempt: int = Field(description="1 for the first run; a lost job is retried with attempt + 1 "
                                     "(one handed back by a worker that was stopped, or retried "
                                     "after a transient fault, keeps it); a resume adds 1")
    max_attempts: int
    transient_retries: int = Field(description="times the job was queued again after a transient "
                                               "fault (an outage, a full disk); not attempts")
    retry_at: datetime | None = Field(description="while waiting to retry: not before then")
    queue: str
    params: dict[str, Any]
    depends_on_id: int | None
    progress: JobProgress
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_job(cls, job: Job) -> JobOut:
        return cls(**_job_fields(job))


class JobDetail(JobOut):
    log_tail: list[str] = Field(description="the last lines of the job's log")

    @classmethod
    def from_job(cls, job: Job) -> JobDetail:
        return cls(**_job_fields(job), log_tail=list(job.log_tail or []))


def _job_fields(job: Job) -> dict[str, Any]:
    fraction = None
    if job.step is not None and job.total:
        fraction = min(1.0, max(0.0, job.step / job.total))
    return {
        "id": job.id, "experiment_id": job.experiment_id, "kind": job.kind, "status": job.status,
        "attempt": job.attempt, "max_attempts": job.max_attempts,
        "transient_retries": job.transient_retries or 0, "retry_at": job.retry_at,
        "queue": job.queue,
        "params": job.params or {}, "depends_on_id": job.depends_on_id,
        "progress": JobProgress(
            step=job.step, total=job.total, fraction=fraction, loss=finite_or_none(job.loss),
            images_per_s=finite_or_none(job.images_per_s), heartbeat_at=job.heartbeat_at,
        ),
        "error": job.error, "worker": job.worker, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
    }


# --- experiments -------------------------------------------------------------------------


class BestT(BaseModel):
    """A probe column's best t, chosen on the validation split (never on the test split)."""

    t: float
    value: float | None = Field(description="the test value at t")
    validation: float | None = Field(
        default=None, description="the validation value at t, on which t was chosen (null in "
                                  "probes computed before validation splits existed)")


class BitsPerDim(BaseModel):
    """A likelihood model's (vdm, vdm_vae) test-set negative ELBO in bits/dim, term by term:
    total = diffusion + prior + reconstruction + kl (kl is 0 for vdm). Always the ELBO at
    KL weight 1; `training_objective` says whether training optimised something else."""

    total: float | None
    diffusion: float | None
    prior: float | None
    reconstruction: float | None
    kl: float | None
    images: int = Field(description="test images the estimate averages over")
    split: str
    training_objective: str = Field(description="'elbo', or the ELBO with KL annealing / free bits")
    step: int | None = Field(description="the training step of the evaluated model")
    key: str = Field(description="artifact key of the stored bits_per_dim.json")


class ExperimentSummary(BaseModel):
    last_loss: float | None = Field(description="the training job's latest reported loss")
    train_step: int | None
    train_total: int | None
    images_per_s: float | None
    best_t: dict[str, BestT] | None = Field(
        description="per probe column, the t with the best validation value, and its test "
                    "value; null until the probes ran")
    control_best_t: dict[str, BestT] | None = Field(
        default=None, description="the same for the untrained control (random_init: the same "
                                  "architecture and seed, never trained); null until the "
                                  "probes ran")
    embeddings: dict[str, list[float]] = Field(description="computed t values per split")
    has_encoder: bool = Field(default=True, description="false for a kind without a code (vdm): "
                              "no embeddings or probes")
    bits_per_dim: BitsPerDim | None = Field(
        default=None, description="test-set bits/dim per ELBO term (vdm, vdm_vae); null until "
                                  "training finished, and for other kinds")

    @classmethod
    def from_service(cls, summary: dict[str, Any]) -> ExperimentSummary:
        """From `drl_core.experiments.experiment_summary`'s dict."""
        progress = summary.get("progress") or {}
        probes = summary.get("probes")
        return cls(
            last_loss=finite_or_none(progress.get("loss")), train_step=progress.get("step"),
            train_total=progress.get("total"), images_per_s=finite_or_none(progress.get("images_per_s")),
            best_t=probes["best"] if probes else None,
            control_best_t=probes.get("control_best") if probes else None,
            embeddings=summary.get("embeddings") or {},
            has_encoder=summary.get("has_encoder", True), bits_per_dim=summary.get("bits_per_dim"),
        )


class ExperimentBrief(BaseModel):
    id: int
    name: str
    status: str = Field(description="derived from the jobs' statuses, never stored")
    owner: str | None
    priority: Priority = Field(description="orders its jobs among its owner's own when the "
                                           "owner's turn comes (GET /queue)")
    created_at: datetime
    failed_step: str | None = Field(description="kind of the first failed job, if any")
    error: str | None
    jobs: list[JobOut]


class DatasetFileOut(BaseModel):
    path: str
    size: int
    sha256: str


class DatasetFingerprint(BaseModel):
    name: str
    sha256: str | None = Field(description="sha256 of the files' `sha256sum` lines, in the "
                                           "order the loader reads them; null if they could "
                                           "not be read (`error` says why)")
    files: list[DatasetFileOut]
    error: str | None = None


class Provenance(BaseModel):
    """What trained the experiment, recorded as its train job (its latest run) started
    (drl_engine/provenance.py)."""

    drl_version: str
    git_commit: str = Field(description="the commit of the worker's code: baked into its image, "
                                        "or read from its checkout at start-up; 'unknown' if "
                                        "neither")
    git_dirty: bool | None = Field(description="whether the checkout's tracked files differed "
                                               "from the commit; null if unknown")
    python: str
    torch: str
    cuda: str | None = Field(description="null on a CPU")
    cudnn: str | None = Field(description="null on a CPU")
    device: str
    device_model: str = Field(description="the GPU's name, or the CPU's model")
    host: str = Field(description="the worker's host name")
    dataset: DatasetFingerprint


class ExperimentOut(ExperimentBrief):
    spec: dict[str, Any]
    summary: ExperimentSummary
    provenance: Provenance | None = Field(
        default=None, description="null until its train job started")


def experiment_fields(experiment: Experiment) -> dict[str, Any]:
    jobs = list(experiment.jobs)
    failed = failed_job(jobs)
    return {
        "id": experiment.id, "name": experiment.name,
        "status": experiment_status(jobs).value,
        "owner": experiment.owner.name if experiment.owner else None,
        "priority": experiment.priority,
        "created_at": experiment.created_at,
        "failed_step": failed.kind if failed else None,
        "error": getattr(failed, "error", None),
        "jobs": [JobOut.from_job(j) for j in jobs],
    }


class ExperimentPage(BaseModel):
    items: list[ExperimentBrief]
    total: int = Field(description="experiments matching the filter, over all pages")
    offset: int
    limit: int


# --- the queue -------------------------------------------------------------------------


class QueuedJobOut(BaseModel):
    position: int = Field(description="its place on its queue: 1 starts next")
    queue: str
    job_id: int
    kind: str
    experiment_id: int
    experiment_name: str
    owner: str | None
    priority: Priority
    created_at: datetime
    ready: bool = Field(description="may start as soon as its turn comes and a worker is free; "
                                    "false: it waits for its upstream step (depends_on_id) or "
                                    "its retry time")
    depends_on_id: int | None
    estimated_start: datetime | None = Field(
        description="when it should start, by the simulation GET /queue describes; null: it "
                    "will not start (its upstream step failed or was cancelled)")

    @classmethod
    def from_place(cls, place: QueuePlace) -> QueuedJobOut:
        job = place.job
        return cls(position=place.position, queue=job.queue, job_id=job.job_id, kind=job.kind,
                   experiment_id=job.experiment_id, experiment_name=job.experiment_name,
                   owner=job.owner, priority=Priority(job.priority), created_at=job.created_at,
                   ready=place.ready, depends_on_id=job.depends_on_id,
                   estimated_start=place.estimated_start)


class QueueOut(BaseModel):
    generated_at: datetime = Field(description="the moment the estimates start from")
    items: list[QueuedJobOut] = Field(description="by queue (gpu, then cpu), then position")


# --- results -----------------------------------------------------------------------------


class MetricPointOut(BaseModel):
    step: int
    value: float


class MetricSeries(BaseModel):
    experiment: int
    key: str
    method: Literal["lttb"] = Field(
        description="Largest-Triangle-Three-Buckets: real points, first and last kept")
    max_points: int
    total_points: int = Field(description="finite points stored for this key")
    dropped_non_finite: int = Field(description="NaN/inf values left out (JSON cannot carry them)")
    keys: list[str] = Field(description="every metric key recorded for this experiment")
    points: list[MetricPointOut]


class ProbesOut(BaseModel):
    """Every probe's value at every t, for the trained encoder and for its untrained control
    (random_init: the same architecture and seed before any training step, probed on the same
    splits), so that an untrained code is never mistaken for a learned one."""

    experiment: int
    columns: list[str]
    rows: list[dict[str, float | None]] = Field(
        description="the trained encoder, one row per t: {t, column: test value, "
                    "val_<column>: validation value}")
    best: dict[str, BestT] = Field(description="per column, the t with the best validation value")
    control_rows: list[dict[str, float | None]] = Field(
        default_factory=list, description="the untrained control's rows, in the same form "
                                          "(empty in probes computed before controls existed)")
    control_best: dict[str, BestT] = Field(default_factory=dict,
                                           description="the untrained control's best t per column")
    t_values: list[float]


class CodeUsageRowOut(BaseModel):
    """The code-usage diagnostic at one t: mean squared error per pixel (in the model's data
    range) of the denoised estimate of held-out test images, with three codes."""

    t: float
    error_true: float | None = Field(description="with each image's own code")
    error_shuffled: float | None = Field(description="with codes permuted across the batch")
    error_class_shuffled: float | None = Field(
        description="with codes permuted within each class; null without labels")
    code_gain: float | None = Field(description="error_shuffled - error_true: how much the code "
                                                "helps at t")
    class_gain: float | None = Field(description="error_shuffled - error_class_shuffled: how much "
                                                 "of that the class explains; null without labels")


class CodeUsageCheckpoint(BaseModel):
    step: int = Field(description="the training step the EMA weights were measured at")
    rows: list[CodeUsageRowOut] = Field(description="one row per t, in t order")


class CodeUsageOut(BaseModel):
    """At which noise levels the score model uses its code, at every checkpoint of training
    (drl_engine/code_usage.py has the formulas)."""

    experiment: int
    t_values: list[float]
    checkpoints: list[CodeUsageCheckpoint] = Field(description="in step order, the last one "
                                                               "the trained model's")

    @classmethod
    def from_series(cls, experiment_id: int, series: list[CodeUsage]) -> CodeUsageOut:
        return cls(experiment=experiment_id,
                   t_values=sorted({t for usage in series for t in usage.t_values}),
                   checkpoints=[CodeUsageCheckpoint(step=usage.step, rows=usage.to_dict()["rows"])
                                for usage in series])


INTERVAL_NOTE = ("95% basic-bootstrap interval for the population FD (drl_engine/fd_interval.py); "
                 "the plug-in value may lie above it, by its upward bias")


class FDFloorOut(BaseModel):
    """The real-vs-real floor: as many real images as samples against the same test split."""

    value: float | None = Field(description="the distance (>= 0); null if not finite")
    ci_low: float | None = Field(default=None, description=INTERVAL_NOTE)
    ci_high: float | None = None
    samples: int = Field(description="real images compared")
    split: str = Field(description="where they come from (disjoint from the test split)")

    @classmethod
    def from_meta(cls, floor: dict[str, Any]) -> FDFloorOut:
        return cls(**{**floor, **{k: finite_or_none(floor.get(k))
                                  for k in ("value", "ci_low", "ci_high")}})


class FDLeNetOut(BaseModel):
    """A sample job's FD-LeNet (drl_engine/fd_lenet.py): the Frechet distance between the
    drawn images and the test split in a small classifier's features; not an FID. Jobs
    stored before intervals were measured have null ci_low, ci_high and floor."""

    value: float | None = Field(description="the distance (>= 0); null if not finite")
    ci_low: float | None = Field(default=None, description=INTERVAL_NOTE)
    ci_high: float | None = None
    ci_level: float | None = None
    estimated_bias: float | None = Field(default=None, description="the bootstrap's estimate of "
                                         "the value's upward bias (why it may exceed ci_high)")
    samples: int = Field(description="images the estimate used")
    smoke: bool = Field(description="fewer than 1,000 samples: a smoke test, not a result")
    floor: FDFloorOut | None = Field(default=None, description="the real-vs-real floor beside it")
    steps: int
    name: str = Field(description="always 'FD-LeNet'")
    reference: str = Field(description="the split compared against")
    note: str | None = Field(default=None, description="why the value is biased, with few samples")

    @classmethod
    def from_meta(cls, fd: dict[str, Any]) -> FDLeNetOut:
        """From a sample artifact's meta; before `smoke` was stored, the note marked it."""
        return cls(**{**fd, **{k: finite_or_none(fd.get(k))
                                for k in ("value", "ci_low", "ci_high", "estimated_bias")},
                      "smoke": fd.get("smoke", fd.get("note") is not None),
                      "floor": fd.get("floor") and FDFloorOut.from_meta(fd["floor"])})


class SampleOut(BaseModel):
    """One sample job; the result fields are null until it succeeded."""

    job_id: int
    status: str
    created_at: datetime
    error: str | None
    params: dict[str, Any] = Field(description="the sample settings the job draws with")
    count: int | None = Field(default=None, description="images drawn")
    sampler: str | None = None
    steps: int | None = None
    nfe: int | None = Field(default=None, description="network evaluations per sample; null "
                                                      "for jobs stored before it was recorded")
    seconds: float | None = Field(default=None, description="the sampler's wall time; null for "
                                                            "jobs stored before it was recorded")
    code_source: str | None = Field(default=None, description="null for a model without codes (vdm)")
    fd_lenet: FDLeNetOut | None = Field(
        default=None, description="null without labels in the dataset, or before success")
    reconstruction_agreement: float | None = Field(
        default=None, description="encoded codes: the share of reconstructions FD-LeNet's "
                                  "classifier labels as their source image's class")
    url: str | None = Field(default=None, description="the PNG, once the job succeeded")

    @classmethod
    def from_job(cls, job: Job, meta: dict[str, Any] | None) -> SampleOut:
        """From the job row and its sample artifact's meta (None while there is none)."""
        fields: dict[str, Any] = {
            "job_id": job.id, "status": job.status, "created_at": job.created_at,
            "error": job.error, "params": (job.params or {}).get("sample", {}),
        }
        if job.status == JobStatus.SUCCEEDED and meta is not None:
            fd = meta.get("fd_lenet")
            fields |= {
                "count": meta.get("count"), "sampler": meta.get("sampler"),
                "steps": meta.get("steps"), "nfe": meta.get("nfe"),
                "seconds": finite_or_none(meta.get("seconds")),
                "code_source": meta.get("code_source"),
                "fd_lenet": fd and FDLeNetOut.from_meta(fd),
                "reconstruction_agreement": meta.get("reconstruction_agreement"),
                "url": f"/experiments/{job.experiment_id}/samples/{job.id}.png",
            }
        return cls(**fields)


class CheckpointOut(BaseModel):
    """A training checkpoint in the artifact store. The store keeps a training's newest
    checkpoints and every pinned one; the train job deletes the others as it saves new ones."""

    step: int = Field(description="the training step it was saved at")
    pinned: bool = Field(description="kept past retention until unpinned")
    size: int = Field(description="bytes")
    sha256: str
    created_at: datetime

    @classmethod
    def from_artifact(cls, row: Artifact) -> CheckpointOut:
        return cls(step=checkpoint_step(row.key), pinned=row.pinned, size=row.size,
                   sha256=row.sha256, created_at=row.created_at)


class EmbeddingItem(BaseModel):
    index: int = Field(description="row in the split (0-based)")
    label: int | None
    vector: list[float]


class EmbeddingPage(BaseModel):
    experiment: int
    t: float
    split: Split
    encoder: EncoderWeights = Field(
        description="whose codes: the trained encoder's or the untrained control's "
                    "(random_init: the same architecture and seed, never trained)")
    total: int
    offset: int
    limit: int
    dim: int
    items: list[EmbeddingItem]


class HealthOut(BaseModel):
    status: Literal["ok"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- requests ----------------------------------------------------------------------------
# A request body's values must have the JSON types the OpenAPI document states. Pydantic's
# lax mode would take `false` for the integer 0 and "5" for the number 5, which the document
# declares invalid; its strict mode would refuse 2.0 for an integer, which JSON Schema counts
# as the integer 2 (JSON has one number type). So a body is validated strictly once its
# integral numbers are ints (JsonBody). NaN and Infinity, which Python's JSON parser reads
# but JSON has not, are refused too: no JSON column could store them.


def integral_numbers_as_ints(value: Any) -> Any:
    """`value` (parsed JSON) with every float that is a whole number as an int: 2.0 -> 2."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_numbers_as_ints(item) for item in value]
    return value


class JsonBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers_as_ints(cls, data: Any) -> Any:
        # harmless for a float field: strict mode takes an int for a float
        return integral_numbers_as_ints(data)


ModelT = TypeVar("ModelT", bound=BaseModel)


def json_body(model: type[ModelT]) -> type[ModelT]:
    """`model` as a JsonBody: a subclass with its name, fields, checks and docstring (so the
    same OpenAPI schema), and so are its sections. The engine's models stay lax for YAML specs
    (`lr: 1e-3` reaches parse_spec as a string: PyYAML reads YAML 1.1, where a float needs a
    dot)."""
    sections = {name: json_body(field.annotation) for name, field in model.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    namespace: dict[str, Any] = {
        "__module__": model.__module__, "__qualname__": model.__qualname__, "__doc__": model.__doc__,
        "__annotations__": sections,
        **{name: model.model_fields[name] for name in sections},   # defaults, descriptions
    }
    return type(model)(model.__name__, (model, JsonBody), namespace)


# POST /experiments' body: an ExperimentSpec (what the service and the engine take).
ExperimentSpecBody = json_body(ExperimentSpec)


class EncodeRequest(JsonBody):
    t: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        min_length=1, max_length=MAX_T_PER_REQUEST,
                           description="diffusion times in [0, 1] to encode both splits at")


def _optional_fields_of(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s fields, each optional (default None) with its own constraints (ge, lt, ...)
    kept on the value's type, so a request schema built from them states the same bounds."""
    def constrained(field: FieldInfo) -> Any:
        return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation

    return {name: (constrained(field) | None, Field(default=None, description=field.description))
            for name, field in model.model_fields.items()}


# Every SampleSpec field, optional: what is given overrides the experiment's spec.sample.
# Bounds are SampleSpec's own (one source of truth): the request is refused with a 422 naming
# the field, the OpenAPI schema states them, and the service checks them again when it merges.
SampleRequest = create_model(
    "SampleRequest",
    __base__=JsonBody,
    __doc__="Overrides of the experiment's `sample` section for one sampling job.",
    **_optional_fields_of(SampleSpec),
)
