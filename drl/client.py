"""`Client`: the drl service from Python (a notebook, a script, the drl CLI), one typed method
per endpoint.

    from drl.client import Client

    client = Client()        # $DRL_API_URL (default http://127.0.0.1:8000) and $DRL_TOKEN
    experiment = client.submit("examples/digits_tiny.yaml")
    client.wait(experiment["id"])
    codes, labels = client.embeddings(experiment["id"], t=0.5)

Results are the API's JSON as dicts (their keys: drl/resources.py), embeddings and labels
numpy arrays, sample grids PNG bytes. A failure raises a drl.errors.DrlError: NotFound,
NotReady, Forbidden, InvalidRequest, RateLimited, ServerError, Unreachable, ... with the
server's problem (`.status`, `.type`, `.detail`). Connection errors and 503s with Retry-After
are retried (drl/connection.py).

Nothing here imports torch or the service (SQLAlchemy, Celery): it loads at once. A spec file
is read by drl_engine.spec, pydantic only.
"""

from __future__ import annotations

import codecs
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connection import TIMEOUT_S, Connection, RetryPolicy
from .errors import NotFound, Unreachable
from .resources import (Checkpoint, CodeUsage, Embeddings, Experiment, ExperimentPage, Health, Job,
                        JobDetail, MetricSeries, Probes, QueuePage, Sample)

if TYPE_CHECKING:
    import httpx
    import numpy as np

# The statuses of a job or an experiment that has finished (drl_core.job_states.TERMINAL,
# spelled out: the client imports nothing of the service).
FINISHED = ("succeeded", "failed", "cancelled")
EMBEDDING_PAGE_ROWS = 10_000   # the server's largest page (api/routers/embeddings.py MAX_PAGE_ROWS)
WAIT_POLL_S = 2.0
FOLLOW_POLL_S = 1.0   # how soon a followed log is asked for again while its job is not running


def submitted_fields(spec: Any) -> dict[str, Any]:
    """The JSON body POST /experiments gets for `spec`: a mapping as it is; a YAML or JSON
    spec file, validated as `drl run` validates it (SpecError naming the field); or an
    ExperimentSpec. Of a spec, the fields that were set, not every default.

    The server applies its own defaults, so a client and a server of different drl versions
    agree on every spec whose fields both know; a full dump would carry each field this
    client knows, and a server without one refuses the whole spec as an unknown field.
    """
    if isinstance(spec, (str, Path)):
        # Read as `drl run` reads it (drl_engine.spec: pydantic, no torch): checked here with
        # its messages (SpecError), and YAML 1.1's `lr: 1e-3`, a string, read as a number.
        from drl_engine.spec import load_spec

        spec = load_spec(spec)
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json", exclude_unset=True)
    return dict(spec)


class Client:
    """The drl service at `url` (else $DRL_API_URL, else http://127.0.0.1:8000) as `token`'s
    user (else $DRL_TOKEN). Use it as a context manager, or call `close()`."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
                 transport: httpx.BaseTransport | None = None) -> None:
        self.connection = Connection(url, token, timeout=timeout, retry=retry, transport=transport)

    @property
    def url(self) -> str:
        return self.connection.url

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.connection.request(method, path, **kwargs).json()

    # --- health ---------------------------------------------------------------------------

    def health(self) -> Health:
        """GET /healthz: the server process answers."""
        return self._json("GET", "/healthz")

    def ready(self) -> Health:
        """GET /readyz: database, broker and artifact store usable (else Unavailable, whose
        `.problem["checks"]` says which is not)."""
        return self._json("GET", "/readyz")

    # --- experiments ----------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any] | str | Path | Any, *,
               idempotency_key: str | None = None, priority: str | None = None) -> Experiment:
        """POST /experiments: queue the experiment `spec` describes (a dict, a YAML or JSON
        file, or an ExperimentSpec); its training starts when its owner's turn comes and a
        worker is free (`queue()`). With an `idempotency_key`, a retry returns the experiment
        the first call created. `priority` (low, normal, high: admins only) orders it among
        your own jobs. RateLimited past your limit of queued jobs."""
        return self.create_experiment(spec, idempotency_key=idempotency_key,
                                      priority=priority)[0]

    def create_experiment(self, spec: Mapping[str, Any] | str | Path | Any, *,
                          idempotency_key: str | None = None,
                          priority: str | None = None) -> tuple[Experiment, bool]:
        """`submit`, also saying whether this call created it (False: an earlier call with
        the same idempotency key did)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"priority": priority} if priority else {}
        response = self.connection.request("POST", "/experiments", json=submitted_fields(spec),
                                           headers=headers, params=params)
        return response.json(), response.status_code == 201

    def experiments(self, *, limit: int = 50, offset: int = 0,
                    status: str | None = None) -> ExperimentPage:
        """GET /experiments: newest first; `status` keeps one status (queued, running, ...)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return self._json("GET", "/experiments", params=params)

    def experiment(self, experiment_id: int) -> Experiment:
        """GET /experiments/{id}: status, jobs with their progress, summary, provenance."""
        return self._json("GET", f"/experiments/{experiment_id}")

    def cancel(self, experiment_id: int) -> Experiment:
        """POST /experiments/{id}/cancel: queued jobs at once, running ones at their next
        heartbeat (a training saves its checkpoint first)."""
        return self._json("POST", f"/experiments/{experiment_id}/cancel")

    def resume(self, experiment_id: int) -> Experiment:
        """POST /experiments/{id}/resume: failed and cancelled jobs run again; training
        continues from its last checkpoint. Conflict when nothing failed or was cancelled."""
        return self._json("POST", f"/experiments/{experiment_id}/resume")

    def delete(self, experiment_id: int) -> None:
        """DELETE /experiments/{id}: the experiment, its jobs and everything it stored."""
        self.connection.request("DELETE", f"/experiments/{experiment_id}")

    def wait(self, experiment_id: int, *, timeout_s: float | None = None,
             poll_s: float = WAIT_POLL_S) -> Experiment:
        """The experiment once it has finished (succeeded, failed or cancelled: see its
        `status`), asking every `poll_s`; TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (experiment := self.experiment(experiment_id))["status"] not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {experiment_id} is still {experiment['status']} "
                                   f"after {timeout_s:g} s")
            time.sleep(poll_s)
        return experiment

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoints(self, experiment_id: int) -> list[Checkpoint]:
        """GET /experiments/{id}/checkpoints: the stored ones, oldest first. The store keeps a
        training's newest checkpoints and the pinned ones."""
        return self._json("GET", f"/experiments/{experiment_id}/checkpoints")

    def pin(self, experiment_id: int, step: int) -> Checkpoint:
        """POST /experiments/{id}/checkpoints/{step}/pin: keep it past retention (owner or
        admin: else Forbidden; NotFound for a step not stored)."""
        return self._json("POST", f"/experiments/{experiment_id}/checkpoints/{step}/pin")

    def unpin(self, experiment_id: int, step: int) -> Checkpoint:
        """DELETE /experiments/{id}/checkpoints/{step}/pin: retention may delete it again."""
        return self._json("DELETE", f"/experiments/{experiment_id}/checkpoints/{step}/pin")

    # --- the queue ------------------------------------------------------------------------

    def queue(self, queue: str | None = None) -> QueuePage:
        """GET /queue: the queued jobs in the order they will run (owners take turns, then
        priority, then age), each with its position on its queue and an estimated start;
        only `queue`'s (gpu, cpu) if given."""
        return self._json("GET", "/queue", params={"queue": queue} if queue else {})

    # --- jobs -----------------------------------------------------------------------------

    def jobs(self, experiment_id: int) -> list[Job]:
        """GET /experiments/{id}/jobs: in pipeline order (train, encode, probe, sample, ...)."""
        return self._json("GET", f"/experiments/{experiment_id}/jobs")

    def job(self, job_id: int) -> JobDetail:
        """GET /jobs/{id}: progress, attempts, error and the last 50 log lines."""
        return self._json("GET", f"/jobs/{job_id}")

    def queue(self, queue: str | None = None) -> dict[str, Any]:
        """GET /queue: every queued job in the order the workers will take them, each with
        its position and estimated start; `queue` keeps one queue's jobs."""
        return self._json("GET", "/queue", params={} if queue is None else {"queue": queue})

    def log(self, job_id: int, *, offset: int = 0) -> str:
        """GET /jobs/{id}/log: every line of every run of the job; `offset` bytes skipped."""
        return self.connection.request("GET", f"/jobs/{job_id}/log",
                                       params={"offset": offset}).text

    def follow_log(self, job_id: int, *, offset: int = 0) -> Iterator[str]:
        """The job's log as it grows, piece by piece, until the job has finished.

        The server streams while the job runs and ends the stream when it does not (it
        finished, or is queued: waiting or retrying), so the stream is asked for again, from
        the byte reached, until the job has finished; a connection lost mid-stream is resumed
        the same way (Unreachable if the server stays away). Text is decoded as UTF-8 across
        pieces (a character split between two is yielded whole)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        path = f"/jobs/{job_id}/log"
        while True:
            try:
                with self.connection.stream("GET", path, params={"follow": "true",
                                                                 "offset": offset}) as response:
                    for chunk in response.iter_bytes():
                        offset += len(chunk)
                        if text := decoder.decode(chunk):
                            yield text
            except Unreachable:
                pass   # asked again from `offset` once the server answers (else job() raises)
            if self.job(job_id)["status"] in FINISHED:
                # The log is whole before the job's final status is written: what the stream
                # did not bring (none, unless it broke) is all there is left.
                rest = self.connection.request("GET", path, params={"offset": offset}).content
                if text := decoder.decode(rest, final=True):
                    yield text
                return
            time.sleep(FOLLOW_POLL_S)

    # --- results --------------------------------------------------------------------------

    def embeddings(self, experiment_id: int, t: float, *, split: str = "test",
                   encoder: str = "trained") -> Embeddings:
        """GET /embeddings (every page, as .npy) and /embeddings/labels: the split's codes at
        diffusion time t, (images, dim) float32, and each image's class (None for a dataset
        without labels). `encoder="random_init"`: the untrained control's codes. NotReady
        until the encode job has stored them; NotFound for a t it did not encode (the
        problem's `computed_t` lists those it did)."""
        import numpy as np

        pages: list[np.ndarray] = []
        total = None
        offset = 0
        while total is None or offset < total:
            response = self.connection.request("GET", "/embeddings", params={
                "experiment": experiment_id, "t": t, "split": split, "encoder": encoder,
                "offset": offset, "limit": EMBEDDING_PAGE_ROWS, "format": "npy"})
            total = int(response.headers["X-Total-Count"])
            page = np.load(io.BytesIO(response.content), allow_pickle=False)
            if len(page) == 0:
                break
            pages.append(page)
            offset += len(page)
        codes = np.concatenate(pages) if pages else np.zeros((0, 0), np.float32)
        try:
            labels = self.labels(experiment_id, split=split)
        except NotFound:   # a dataset without labels
            labels = None
        return Embeddings(codes, labels)

    def labels(self, experiment_id: int, *, split: str = "test") -> np.ndarray:
        """GET /embeddings/labels: the split's classes, in the row order of its embeddings."""
        import numpy as np

        response = self.connection.request("GET", "/embeddings/labels",
                                           params={"experiment": experiment_id, "split": split})
        return np.load(io.BytesIO(response.content), allow_pickle=False)

    def encode(self, experiment_id: int, t: Sequence[float]) -> Job:
        """POST /experiments/{id}/encodings: a job encoding both splits at more t values."""
        return self._json("POST", f"/experiments/{experiment_id}/encodings", json={"t": list(t)})

    def probes(self, experiment_id: int) -> Probes:
        """GET /experiments/{id}/probes: every probe at every t, the best t per probe, and
        the untrained control's."""
        return self._json("GET", f"/experiments/{experiment_id}/probes")

    def code_usage(self, experiment_id: int) -> CodeUsage:
        """GET /experiments/{id}/code-usage: how much the code helps at every t, per checkpoint."""
        return self._json("GET", f"/experiments/{experiment_id}/code-usage")

    def metrics(self, experiment_id: int, key: str = "loss", *,
                max_points: int = 500) -> MetricSeries:
        """GET /experiments/{id}/metrics: a metric's (step, value) points, downsampled (LTTB)."""
        return self._json("GET", f"/experiments/{experiment_id}/metrics",
                          params={"key": key, "max_points": max_points})

    def sample(self, experiment_id: int, **overrides: Any) -> Job:
        """POST /experiments/{id}/samples: a job drawing samples; `overrides` replace fields
        of the experiment's `sample` section (sampler="heun", steps=18, count=64, ...)."""
        return self._json("POST", f"/experiments/{experiment_id}/samples", json=overrides)

    def samples(self, experiment_id: int) -> list[Sample]:
        """GET /experiments/{id}/samples: the sample jobs, newest first, with FD-LeNet."""
        return self._json("GET", f"/experiments/{experiment_id}/samples")

    def sample_png(self, experiment_id: int, job_id: int) -> bytes:
        """GET /experiments/{id}/samples/{job_id}.png: a finished sample job's image grid."""
        path = f"/experiments/{experiment_id}/samples/{job_id}.png"
        return self.connection.request("GET", path).content
