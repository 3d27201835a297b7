"""The shapes of what the service answers, as the Client returns them: its JSON, as dicts.

TypedDicts, not classes: a result is exactly the JSON the API documents (`/docs`), it prints
and serialises as it came, and a field a newer server adds is there too. The API's pydantic
models (api/schemas.py) are the source of these keys; tests/test_client.py checks that every
key named here is one the OpenAPI document has. Nested sections whose shape the API
documents in detail (a spec, a summary, provenance, FD-LeNet) are plain dicts here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

if TYPE_CHECKING:   # numpy is imported where arrays are made: the CLI's other commands skip it
    import numpy as np


class Health(TypedDict):
    status: str
    checks: dict[str, str]


class JobProgress(TypedDict):
    step: int | None
    total: int | None
    fraction: float | None
    loss: float | None
    images_per_s: float | None
    heartbeat_at: str | None


class Job(TypedDict):
    id: int
    experiment_id: int
    kind: str            # train, encode, probe, sample
    status: str          # queued, running, cancelling, succeeded, failed, cancelled
    attempt: int
    max_attempts: int
    transient_retries: int
    retry_at: str | None
    queue: str
    params: dict[str, Any]
    depends_on_id: int | None
    progress: JobProgress
    error: str | None
    worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class JobDetail(Job):
    log_tail: list[str]


class ExperimentBrief(TypedDict):
    id: int
    name: str
    status: str
    owner: str | None
    priority: str        # low, normal, high
    created_at: str
    failed_step: str | None
    error: str | None
    jobs: list[Job]


class Experiment(ExperimentBrief):
    spec: dict[str, Any]
    summary: dict[str, Any]
    provenance: dict[str, Any] | None


class ExperimentPage(TypedDict):
    items: list[ExperimentBrief]
    total: int
    offset: int
    limit: int


class Checkpoint(TypedDict):
    step: int
    pinned: bool
    size: int
    sha256: str
    created_at: str


class QueuedJob(TypedDict):
    position: int        # on its queue: 1 starts next
    queue: str           # gpu, cpu
    job_id: int
    kind: str
    experiment_id: int
    experiment_name: str
    owner: str | None
    priority: str
    created_at: str
    ready: bool          # false: it waits for its upstream step or its retry time
    depends_on_id: int | None
    estimated_start: str | None


class QueuePage(TypedDict):
    generated_at: str
    items: list[QueuedJob]


class Probes(TypedDict):
    experiment: int
    columns: list[str]
    rows: list[dict[str, float | None]]
    best: dict[str, dict[str, Any]]
    control_rows: list[dict[str, float | None]]
    control_best: dict[str, dict[str, Any]]
    t_values: list[float]


class CodeUsage(TypedDict):
    experiment: int
    t_values: list[float]
    checkpoints: list[dict[str, Any]]


class MetricPoint(TypedDict):
    step: int
    value: float


class MetricSeries(TypedDict):
    experiment: int
    key: str
    method: str
    max_points: int
    total_points: int
    dropped_non_finite: int
    keys: list[str]
    points: list[MetricPoint]


class Sample(TypedDict):
    job_id: int
    status: str
    created_at: str
    error: str | None
    params: dict[str, Any]
    count: int | None
    sampler: str | None
    steps: int | None
    code_source: str | None
    fd_lenet: dict[str, Any] | None
    reconstruction_agreement: float | None
    url: str | None


class Embeddings(NamedTuple):
    """An experiment's codes at one t, row i the split's image i, with its class (None: the
    dataset has no labels). `codes, labels = client.embeddings(...)`."""

    codes: np.ndarray    # (images, latent_dim) float32
    labels: np.ndarray | None   # (images,) int64


# The OpenAPI schema each TypedDict mirrors (tests/test_client.py compares their keys).
SCHEMAS: dict[str, type] = {
    "HealthOut": Health, "JobProgress": JobProgress, "JobOut": Job, "JobDetail": JobDetail,
    "ExperimentBrief": ExperimentBrief, "ExperimentOut": Experiment,
    "ExperimentPage": ExperimentPage, "QueuedJobOut": QueuedJob,
    "QueueOut": QueuePage, "CheckpointOut": Checkpoint, "ProbesOut": Probes,
    "CodeUsageOut": CodeUsage, "MetricPointOut": MetricPoint, "MetricSeries": MetricSeries,
    "SampleOut": Sample,
}
