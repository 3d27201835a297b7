"""What the model-using runners share: the device, the dataset, the stored checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from drl_core.artifact_keys import ArtifactKind, checkpoint_step
from drl_core.artifacts import ArtifactNotFound
from drl_core.data_paths import with_data_folder
from drl_engine.checkpoint import load_model
from drl_engine.datasets import ImageDataset, load_dataset
from drl_engine.device import resolve_device
from worker.context import JobContext


def job_device(ctx: JobContext) -> torch.device:
    """The spec's `train.device` on this machine; applies the worker's torch thread count."""
    if ctx.settings.torch_threads:
        torch.set_num_threads(ctx.settings.torch_threads)
    return resolve_device(ctx.spec.train.device)


def job_dataset(ctx: JobContext) -> ImageDataset:
    """The spec's dataset; the worker's `data_dir` setting fills in a spec that names none."""
    dataset = load_dataset(with_data_folder(ctx.spec.dataset, ctx.settings.data_dir))
    ctx.log(f"dataset {dataset.name}: {len(dataset.x_train)} train / {len(dataset.x_test)} test "
            f"images of shape {tuple(dataset.image_shape)}")
    return dataset


def download_latest_checkpoint(ctx: JobContext, directory: Path) -> tuple[Path, int] | None:
    """Copy the newest stored checkpoint into `directory`; (path, step), or None if none is
    stored. A row whose file is missing is skipped for the next newest."""
    for row in reversed(ctx.artifacts(ArtifactKind.CHECKPOINT)):
        path = directory / row.key.rsplit("/", 1)[-1]
        try:
            ctx.store.download(row.key, path)
        except ArtifactNotFound:
            continue
        return path, checkpoint_step(row.key)
    return None


def load_trained_model(ctx: JobContext, device: torch.device) -> nn.Module:
    """The trained model of the spec's kind (EMA weights) from the newest stored checkpoint."""
    found = download_latest_checkpoint(ctx, ctx.workdir / "checkpoint")
    if found is None:
        raise RuntimeError(f"experiment {ctx.experiment_id}: no stored checkpoint; the train "
                           "job must succeed first")
    path, step = found
    ctx.log(f"model from checkpoint step {step}")
    return load_model(path, device=device)
