"""The one place that knows which model kinds exist: how to build each and what it trains on.

The trainer, `checkpoint.load_model` and the pipeline ask here; adding a kind means adding
an entry to `KINDS`, not editing them.

    build(spec, image_shape) -> nn.Module
    loss(model, pixels, spec, generator, step) -> (batch loss, {name: float}, with 'loss')

`pixels` is a uint8 batch (B, C, H, W): each kind maps it to its own data range (the SDE's
for drl/vdrl and the baselines, VDM's bin centres for vdm/vdm_vae), so the trainer never
needs to know which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .baselines import BaselineModel, baseline_loss
from .datasets import ImageDataset
from .model import DRLModel
from .objective import drl_loss
from .spec import BASELINE_KINDS, ExperimentSpec, SpecError
from .vdm.losses import vdm_training_loss
from .vdm.model import VDMModel

BuildFn = Callable[[ExperimentSpec, tuple[int, int, int]], nn.Module]
LossFn = Callable[[nn.Module, Tensor, ExperimentSpec, torch.Generator, int],
                  tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class KindEntry:
    build: BuildFn
    loss: LossFn
    reports_bits_per_dim: bool   # a likelihood model: the pipeline reports test-set bits/dim
    # What the untrained model takes from the training pixels before its first step (EDM's
    # sigma_data); must draw no random numbers, so seeded runs stay what they were.
    fit_to_data: Callable[[nn.Module, Tensor], None] | None = None


def in_decoder_finetune(spec: ExperimentSpec, step: int) -> bool:
    """Whether the 0-based `step` lies in the decoder fine-tune phase (train.decoder_finetune_steps
    after train.iterations): encoder frozen, score network on uniform t."""
    return step >= spec.train.iterations


def _drl_loss(model: DRLModel, pixels: Tensor, spec: ExperimentSpec,
              generator: torch.Generator, step: int) -> tuple[Tensor, dict[str, float]]:
    objective, freeze = spec.objective, in_decoder_finetune(spec, step)
    if freeze:
        objective = objective.model_copy(update={"t_sampling": "uniform"})
    return drl_loss(model, model.pixels_to_model_range(pixels), objective, generator=generator,
                    freeze_encoder=freeze)


def _vdm_loss(model: VDMModel, pixels: Tensor, spec: ExperimentSpec,
              generator: torch.Generator, step: int) -> tuple[Tensor, dict[str, float]]:
    return vdm_training_loss(model, pixels, spec, generator, step)


KINDS: dict[str, KindEntry] = {
    "drl": KindEntry(DRLModel, _drl_loss, reports_bits_per_dim=False,
                     fit_to_data=DRLModel.fit_to_data),
    "vdrl": KindEntry(DRLModel, _drl_loss, reports_bits_per_dim=False,
                      fit_to_data=DRLModel.fit_to_data),
    "vdm_vae": KindEntry(VDMModel, _vdm_loss, reports_bits_per_dim=True),
    "vdm": KindEntry(VDMModel, _vdm_loss, reports_bits_per_dim=True),
    # The paper's baselines (spec.py lists what each is; baselines/ has the formulas).
    **{kind: KindEntry(BaselineModel, baseline_loss, reports_bits_per_dim=False)
       for kind in BASELINE_KINDS},
}


def kind_entry(kind: str) -> KindEntry:
    try:
        return KINDS[kind]
    except KeyError:
        raise SpecError(f"model.kind: no model for {kind!r}; expected one of {sorted(KINDS)}") from None


def build_model(spec: ExperimentSpec, image_shape: tuple[int, int, int]) -> nn.Module:
    """The untrained model for `spec.model.kind` and images of shape (C, H, W)."""
    return kind_entry(spec.model.kind).build(spec, tuple(image_shape))


def untrained_model(spec: ExperimentSpec, dataset: ImageDataset) -> nn.Module:
    """The model exactly as training starts from it: torch's global RNG seeded with
    `train.seed` (CPU and CUDA), `build_model` for the dataset's image shape, then what the
    kind takes from the training pixels (`KindEntry.fit_to_data`: EDM's sigma_data).

    `trainer.train` starts from this, and the probes' untrained control (random_init) is this,
    so the two cannot drift apart. Leaves the global RNG where training expects it (its
    dropout draws continue from here).
    """
    torch.manual_seed(spec.train.seed)
    model = build_model(spec, dataset.image_shape)
    fit = kind_entry(spec.model.kind).fit_to_data
    if fit is not None:
        fit(model, dataset.x_train)
    return model


def training_loss(model: nn.Module, pixels: Tensor, spec: ExperimentSpec,
                  generator: torch.Generator | None, step: int) -> tuple[Tensor, dict[str, float]]:
    """One batch's loss for `spec.model.kind`; `step` is the 0-based optimiser step."""
    return kind_entry(spec.model.kind).loss(model, pixels, spec, generator, step)
