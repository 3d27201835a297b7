"""Train job: `drl_engine.trainer.train`, resumable from the newest stored checkpoint.

A re-queued job (its worker died) starts from the checkpoint its previous attempt uploaded:
the checkpoint is downloaded into the scratch directory the trainer resumes from. Metric
points the lost attempt logged after that checkpoint are deleted first, so the re-run steps
are not recorded twice. Every checkpoint the trainer writes is uploaded and recorded (upsert
by key), and the store keeps the newest `KEEP_LAST`, as the trainer does on disk, and every
checkpoint a user pinned (drl_core/checkpoints.py).

Metric points per logged step (`ctx.record_metrics`: one per job, key and step, fenced on the
attempt like every write of the job): the loss, images/s and every stat the kind's loss reports
(drl/vdrl: dsm, penalty; vdm/vdm_vae: bpd and diffusion_bpd, prior_bpd, reconstruction_bpd,
kl_bpd, kl_weight when annealing; all: grad_norm). A likelihood model (vdm, vdm_vae) then
reports its test-set bits/dim, the ELBO and each term (`pipeline.bits_per_dim_report`):
stored as `metrics/bits_per_dim.json` (its row's meta carries the values, for the experiment
summary) and as points test_bpd, test_bpd_<term> at the final step.

drl and vdrl also measure the code-usage diagnostic (drl_engine/code_usage.py) at every
checkpoint and at the end, recorded as points at that step under the keys of
drl_core/code_usage_metrics.py (GET /experiments/{id}/code-usage serves them). A resumed
attempt's points after its checkpoint are discarded with the others; a step measured again
replaces its points.

Once the dataset is loaded, what trains the experiment (code, software, machine, dataset
fingerprint: drl_engine/provenance.py) is written on it, as each run of the job starts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import torch
from torch import nn

from drl_core.artifact_keys import ArtifactKind, checkpoint_key, metrics_key
from drl_core.checkpoints import past_retention
from drl_core.code_usage_metrics import PREFIX as CODE_USAGE_PREFIX
from drl_core.code_usage_metrics import code_usage_points
from drl_core.data_paths import with_data_folder
from drl_core.models import Experiment, MetricPoint
from drl_engine.checkpoint import KEEP_LAST
from drl_engine.code_usage import CodeUsageTracker
from drl_engine.code_usage_table import CodeUsage
from drl_engine.pipeline import bits_per_dim_report, describe_bits_per_dim
from drl_engine.provenance import collect_provenance
from drl_engine.registry import kind_entry
from drl_engine.trainer import TrainProgress, train
from drl_engine.vdm.losses import TERMS
from worker.context import JobContext
from worker.jobs.common import download_latest_checkpoint, job_dataset, job_device

# Series recorded per logged step (TrainProgress fields); the loss's stats are added to them.
METRIC_KEYS = ("loss", "images_per_s")
# The test-set bits/dim series: the ELBO's total, then each of its terms.
BITS_PER_DIM_KEYS = {"test_bpd": "total", **{f"test_bpd_{term}": term for term in TERMS}}
# Training progress goes to the job's log at the first report, then at most this often: a
# line per logged step would push everything else out of the job row's log tail on a fast
# run (a tiny model logging every 2 steps reports 10 times a second).
PROGRESS_LINE_EVERY_S = 10.0


def run(ctx: JobContext) -> None:
    device = job_device(ctx)
    checkpoint_dir = ctx.workdir / "checkpoints"
    found = download_latest_checkpoint(ctx, checkpoint_dir)
    resumed_step = found[1] if found else 0
    if found:
        ctx.log(f"attempt {ctx.attempt}: resuming from checkpoint step {resumed_step}")
    discard_metrics_after(ctx, resumed_step)
    dataset = job_dataset(ctx)
    record_provenance(ctx, device)
    code_usage = CodeUsageTracker(ctx.spec, dataset, device,
                                  on_measured=lambda usage: record_code_usage(ctx, usage))
    if code_usage.skip_reason is not None:
        ctx.log(f"code-usage diagnostic skipped: {code_usage.skip_reason}")

    progress_lines = ProgressLines(ctx)

    def on_progress(progress: TrainProgress) -> None:
        record_progress(ctx, progress)
        progress_lines(progress)

    result = train(ctx.spec, dataset, checkpoint_dir, device=device, progress=on_progress,
                   should_stop=ctx.should_stop,
                   on_checkpoint=lambda path, step: upload_checkpoint(ctx, path, step),
                   on_checkpoint_model=code_usage.callback)
    if result.stopped:
        ctx.check()   # raises JobLost, JobCancelled or WorkerStopping: what made should_stop true
    code_usage.finish(result.model, result.step)
    ctx.heartbeat.report(step=result.step, total=ctx.spec.train.total_steps)
    ctx.log(f"trained {result.step} steps on {device}; final loss {result.final_loss}")
    if kind_entry(ctx.spec.model.kind).reports_bits_per_dim:
        record_bits_per_dim(ctx, result.model, dataset.x_test, device, result.step)


def record_provenance(ctx: JobContext, device: torch.device) -> None:
    """What trains the experiment, on the experiment (drl_engine/provenance.py): each run of
    the job writes its own, so a training resumed elsewhere says where it finished."""
    provenance = collect_provenance(with_data_folder(ctx.spec.dataset, ctx.settings.data_dir),
                                    device)
    ctx.ensure_held()
    ctx.session.execute(sa.update(Experiment).where(Experiment.id == ctx.experiment_id)
                        .values(provenance=provenance))
    ctx.commit()
    dirty = " (modified)" if provenance["git_dirty"] else ""
    ctx.log(f"drl {provenance['drl_version']} at commit {provenance['git_commit']}{dirty}, "
            f"torch {provenance['torch']}, on {provenance['host']} "
            f"({provenance['device_model']}); dataset sha256 {provenance['dataset']['sha256']}")


def discard_metrics_after(ctx: JobContext, step: int) -> None:
    """Delete the points this job recorded after `step` (a lost attempt's, past its last
    checkpoint); the re-run records them again."""
    ctx.ensure_held()
    ctx.session.execute(sa.delete(MetricPoint).where(
        MetricPoint.experiment_id == ctx.experiment_id, MetricPoint.job_id == ctx.job_id,
        MetricPoint.step > step))
    ctx.commit()


def progress_values(progress: TrainProgress) -> dict[str, float]:
    """The points of one progress report: METRIC_KEYS, then the loss's stats (its 'loss' is
    the same series as the report's)."""
    values = {key: float(getattr(progress, key)) for key in METRIC_KEYS}
    values.update((key, float(value)) for key, value in progress.stats.items() if key not in values)
    return values


def record_progress(ctx: JobContext, progress: TrainProgress) -> None:
    ctx.heartbeat.report(step=progress.step, total=progress.total, loss=progress.loss,
                         images_per_s=progress.images_per_s)
    ctx.record_metrics(progress.step, progress_values(progress))


class ProgressLines:
    """Writes `step 120/1000: loss 0.0312, 812 images/s` to the job's log at the first
    report, then at most every `every_s` seconds."""

    def __init__(self, ctx: JobContext, every_s: float = PROGRESS_LINE_EVERY_S) -> None:
        self.ctx, self.every_s = ctx, every_s
        self._last: float | None = None

    def __call__(self, progress: TrainProgress) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.every_s:
            self._last = now
            self.ctx.log(f"step {progress.step}/{progress.total}: loss {progress.loss:.4g}, "
                         f"{progress.images_per_s:.0f} images/s")


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN and inf (a diverged model) become null: JSON, and PostgreSQL's jsonb, have neither."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in values.items()}


def record_bits_per_dim(ctx: JobContext, model: nn.Module, x_test: torch.Tensor,
                        device: torch.device, step: int) -> None:
    """The trained model's test-set bits/dim: the json artifact, and its points at `step`
    (replacing any an earlier attempt recorded)."""
    bits = bits_per_dim_report(model, ctx.spec, x_test, device, progress=ctx.progress_check())
    values = json_safe({**bits, "step": step})
    ctx.store_bytes(metrics_key(ctx.experiment_id, "bits_per_dim"),
                    json.dumps(values, indent=2).encode(), ArtifactKind.METRICS,
                    {"name": "bits_per_dim", "values": values})
    ctx.ensure_held()
    ctx.session.execute(sa.delete(MetricPoint).where(
        MetricPoint.experiment_id == ctx.experiment_id, MetricPoint.key.in_(BITS_PER_DIM_KEYS)))
    ctx.record_metrics(step, {key: float(bits[term]) for key, term in BITS_PER_DIM_KEYS.items()})
    ctx.log(f"{describe_bits_per_dim(bits)} ({bits['images']} images)")


def record_code_usage(ctx: JobContext, usage: CodeUsage) -> None:
    """One measurement's points at its step, replacing any recorded there before (a re-run
    attempt measures its final step again)."""
    ctx.ensure_held()
    ctx.session.execute(sa.delete(MetricPoint).where(
        MetricPoint.experiment_id == ctx.experiment_id, MetricPoint.step == usage.step,
        MetricPoint.key.startswith(CODE_USAGE_PREFIX, autoescape=True)))
    ctx.record_metrics(usage.step, code_usage_points(usage))


def upload_checkpoint(ctx: JobContext, path: Path, step: int) -> None:
    """Store the checkpoint, then apply retention: the newest KEEP_LAST and the pinned ones
    stay (drl_core/checkpoints.py)."""
    ctx.store_file(checkpoint_key(ctx.experiment_id, step), path, ArtifactKind.CHECKPOINT,
                   {"step": step})
    for old in past_retention(ctx.artifacts(ArtifactKind.CHECKPOINT), KEEP_LAST):
        ctx.delete_artifact(old)
