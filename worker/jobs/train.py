"""Train job: `drl_engine.trainer.train`, resumable from the newest stored checkpoint.

A re-queued job (its worker died) starts from the checkpoint its previous attempt uploaded:
the checkpoint is downloaded into the scratch directory the trainer resumes from. Metric
points the lost attempt logged after that checkpoint are deleted first, so the re-run steps
are not recorded twice. Every checkpoint the trainer writes is uploaded and recorded (upsert
by key), and the store keeps the newest `KEEP_LAST`, as the trainer does on disk.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from drl_core.artifact_keys import ArtifactKind, checkpoint_key
from drl_core.models import MetricPoint
from drl_engine.checkpoint import KEEP_LAST
from drl_engine.trainer import TrainProgress, train
from worker.context import JobContext
from worker.jobs.common import download_latest_checkpoint, job_dataset, job_device

# Series recorded per logged step (TrainProgress fields).
METRIC_KEYS = ("loss", "images_per_s")


def run(ctx: JobContext) -> None:
    device = job_device(ctx)
    checkpoint_dir = ctx.workdir / "checkpoints"
    found = download_latest_checkpoint(ctx, checkpoint_dir)
    resumed_step = found[1] if found else 0
    if found:
        ctx.log(f"attempt {ctx.attempt}: resuming from checkpoint step {resumed_step}")
    discard_metrics_after(ctx, resumed_step)
    dataset = job_dataset(ctx)

    result = train(ctx.spec, dataset, checkpoint_dir, device=device,
                   progress=lambda p: record_progress(ctx, p),
                   should_stop=ctx.should_stop,
                   on_checkpoint=lambda path, step: upload_checkpoint(ctx, path, step))
    if result.stopped:
        ctx.check()   # raises JobCancelled or JobLost: whichever made should_stop true
    ctx.heartbeat.report(step=result.step, total=ctx.spec.train.iterations)
    ctx.log(f"trained {result.step} steps on {device}; final loss {result.final_loss}")


def discard_metrics_after(ctx: JobContext, step: int) -> None:
    ctx.ensure_held()
    ctx.session.execute(sa.delete(MetricPoint).where(
        MetricPoint.experiment_id == ctx.experiment_id, MetricPoint.key.in_(METRIC_KEYS),
        MetricPoint.step > step))
    ctx.session.commit()


def record_progress(ctx: JobContext, progress: TrainProgress) -> None:
    ctx.heartbeat.report(step=progress.step, total=progress.total, loss=progress.loss,
                         images_per_s=progress.images_per_s)
    ctx.ensure_held()
    ctx.session.add_all([
        MetricPoint(experiment_id=ctx.experiment_id, job_id=ctx.job_id, key=key,
                    step=progress.step, value=float(getattr(progress, key)))
        for key in METRIC_KEYS])
    ctx.session.commit()


def upload_checkpoint(ctx: JobContext, path: Path, step: int) -> None:
    ctx.store_file(checkpoint_key(ctx.experiment_id, step), path, ArtifactKind.CHECKPOINT,
                   {"step": step})
    for old in ctx.artifacts(ArtifactKind.CHECKPOINT)[:-KEEP_LAST]:
        ctx.delete_artifact(old)
