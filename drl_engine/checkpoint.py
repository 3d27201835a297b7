"""Training checkpoints: the file format, atomic writes, retention, resume checks, `load_model`.

A checkpoint `ckpt_{step:08d}.pt` is a plain dict of tensors, numbers, strings and lists
(readable with `torch.load(weights_only=True)`, so loading one never runs pickled code):

    format_version  int
    spec            ExperimentSpec.model_dump(mode="json")
    image_shape     [C, H, W]
    step            optimiser steps taken
    model           model.state_dict()            (the trained weights)
    ema             EMA.state_dict()              (decay, num_updates, averaged weights)
    optimizer       optimizer.state_dict()
    rng             torch CPU RNG, CUDA RNG (or None), the data generator's state and device

Everything that decides what the next step does is in it, so training N steps, saving,
loading and training N more gives exactly the weights of 2N steps in one run (on CPU).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from .device import resolve_device
from .ema import EMA
from .fileio import fsync_directory
from .registry import build_model
from .spec import ExperimentSpec, format_validation_error
from .vdm.schedule import saved_spec_as_trained

FORMAT_VERSION = 1
KEEP_LAST = 2   # checkpoints kept on disk; older ones are deleted after each write
_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")

# Spec sections whose every field shapes the training trajectory; a resume must match them.
RESUME_SECTIONS = ("model", "sde", "objective", "vdm", "train")
# ...except these train fields, which only say how long to run, where, and how often to
# report or save: extending `train.iterations` on resume is the normal way to train longer.
RESUME_FREE_FIELDS = {"train.iterations", "train.checkpoint_every", "train.log_every", "train.device"}


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:08d}.pt"


def list_checkpoints(directory: Path | None) -> list[Path]:
    """The checkpoint files in `directory`, oldest (lowest step) first; temp files are ignored."""
    if directory is None or not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path | None) -> Path | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = KEEP_LAST) -> Path:
    """Write `state` to directory/ckpt_{step:08d}.pt atomically, then keep only the newest `keep`.

    The bytes go to a temp file in the same directory, are fsynced, and are renamed over the
    final name (os.replace is atomic), so a crash mid-write never leaves a truncated
    checkpoint under a name `latest_checkpoint` would pick.
    """
    if keep < 1:
        raise ValueError(f"checkpoint retention: keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    for old in list_checkpoints(directory)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (weights_only: plain data only), checking its format version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable drl checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise ValueError(f"{path}: not a drl checkpoint (no format_version)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {ckpt['format_version']} is not "
                         f"supported (this version reads {FORMAT_VERSION})")
    return ckpt


def checkpoint_spec(ckpt: dict[str, Any], path: Path | str = "checkpoint") -> ExperimentSpec:
    """The ExperimentSpec a checkpoint was trained with (validated, defaults filled in; a
    VDM checkpoint from before the schedule learned its endpoints reads as the schedule it
    was trained with, `saved_spec_as_trained`)."""
    try:
        return ExperimentSpec.model_validate(saved_spec_as_trained(ckpt["spec"], ckpt["model"]))
    except ValidationError as err:
        raise ValueError(f"{path}: the checkpoint's spec is not valid here: "
                         f"{format_validation_error(err)}") from None


def resume_mismatches(saved: ExperimentSpec, current: ExperimentSpec) -> list[str]:
    """'section.field (checkpoint X, now Y)' for every trajectory-shaping field that differs."""
    def flat(spec: ExperimentSpec) -> dict[str, Any]:
        dumped = spec.model_dump(mode="json")
        return {f"{section}.{key}": value
                for section in RESUME_SECTIONS for key, value in dumped[section].items()}

    before, now = flat(saved), flat(current)
    return [f"{key} (checkpoint {before[key]!r}, now {now[key]!r})"
            for key in now if key not in RESUME_FREE_FIELDS and before.get(key) != now[key]]


class ResumeError(ValueError):
    """A checkpoint directory holds another run's checkpoints: `reason` says what differs."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: cannot resume, {reason} (use a new checkpoint directory to "
                         "start a different run)")
        self.path = Path(path)
        self.reason = reason


@dataclass
class TrainingState:
    """Everything a training run carries from one step to the next."""

    spec: ExperimentSpec
    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    data_generator: torch.Generator
    step: int = 0

    @property
    def device(self) -> torch.device:
        return self.data_generator.device

    def to_checkpoint(self) -> dict[str, Any]:
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "format_version": FORMAT_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "image_shape": list(self.model.image_shape),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch_cpu": torch.get_rng_state(),
                "torch_cuda": cuda_rng,
                "data": self.data_generator.get_state(),
                "data_device": self.device.type,
            },
        }

    def restore(self, ckpt: dict[str, Any], path: Path | str = "checkpoint") -> None:
        """Load a checkpoint written by `to_checkpoint`, after checking it belongs to this run."""
        mismatches = resume_mismatches(checkpoint_spec(ckpt, path), self.spec)
        if mismatches:
            raise ResumeError(path, "the spec differs from the checkpoint's in "
                              + "; ".join(mismatches))
        saved_shape = tuple(ckpt["image_shape"])
        if saved_shape != tuple(self.model.image_shape):
            raise ResumeError(path, f"the checkpoint was trained on images of shape {saved_shape}, "
                                    f"this dataset has {tuple(self.model.image_shape)}")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])

        rng = ckpt["rng"]
        # RNG states must be CPU byte tensors whatever map_location the file was read with.
        torch.set_rng_state(rng["torch_cpu"].cpu())
        if self.device.type == "cuda" and rng["torch_cuda"] is not None:
            torch.cuda.set_rng_state(rng["torch_cuda"].cpu(), self.device)
        if rng["data_device"] == self.device.type:
            self.data_generator.set_state(rng["data"].cpu())
        else:
            # A CPU generator's state cannot seed a CUDA one (different algorithms). Continue
            # with a stream drawn from the restored CPU RNG: reproducible, but not the
            # batches the original device would have drawn.
            warnings.warn(f"{path}: checkpoint written on {rng['data_device']}, resuming on "
                          f"{self.device.type}; the data order after step {self.step} differs "
                          "from an uninterrupted run", stacklevel=2)
            self.data_generator.manual_seed(int(torch.randint(2 ** 62, (1,))))


def load_model(path: Path, device: torch.device | str | None = None, ema: bool = True) -> nn.Module:
    """Rebuild the model from a checkpoint's own spec and image shape, in eval mode.

    ema=True loads the EMA weights (what encode and sample jobs should use); ema=False the
    raw trained weights. device None means CUDA when available, else CPU (not the spec's
    `train.device`: a model trained on a GPU box must still load on a laptop).
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    spec = checkpoint_spec(ckpt, path)
    # Building the model draws its random initialisation (overwritten just below); fork so
    # that loading a model does not move the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        model = build_model(spec, tuple(ckpt["image_shape"]))
    model.load_state_dict(ckpt["model"])
    if ema:
        averaged = EMA(model, spec.train.ema_decay)
        averaged.load_state_dict(ckpt["ema"])
        averaged.copy_to(model)
    target = resolve_device("auto") if device is None else torch.device(device)
    return model.to(target).eval()
