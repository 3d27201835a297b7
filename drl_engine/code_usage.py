"""The code-usage diagnostic: at which noise levels the score model uses its code z.

On a fixed held-out batch x_0 (a seeded, class-stratified subset of the test split,
`evaluate.code_usage_images` images) and for each t of `evaluate.t_grid`:

    eps ~ N(0, I)                  drawn once per t, from a CPU generator seeded by (evaluate.seed, t)
    x_t = a(t) x_0 + std(t) eps    the SDE's perturbation kernel (a = 1 for VE, exp(lmc) for VP)
    x0_hat(z) = (x_t + std(t)^2 s_theta(x_t, t, z)) / a(t)            (Tweedie's formula)
    error(z) = mean over images and pixels of (x0_hat(z) - x_0)^2    (in the model's data range)

(x0_hat is the model's own `denoise(x_t, t, z)`: Tweedie's formula for the score
parameterization, EDM's D for `edm`, the same estimate computed without the round trip.)

under three codes, with the same x_t:

    error_true            z_i = E(x0_i, t)
    error_shuffled        z_i = E(x0_pi(i), t), pi a seeded derangement of the batch
    error_class_shuffled  z_i = E(x0_rho(i), t), rho a seeded derangement within each class
                          (labelled datasets only; an image alone in its class keeps its code)

    code_gain  = error_shuffled - error_true            how much the code helps at t
    class_gain = error_shuffled - error_class_shuffled  how much of that the class explains

A score that ignores z gives exactly 0 for both. The error is the DSM loss rescaled:
(x0_hat - x_0)^2 = (std / a)^2 (std s_theta + eps)^2, so a gain at t is what the code removes
from the loss there, in pixel units; it can only be small where std(t) is (an error there is
at most ~std^2 to begin with), and large at t = 1 for a model that has not learnt the data's
mean yet (the (std / a)^2 factor is 2500 for VE's sigma_max = 50). A static encoder's code is the same at every t; a
time-conditioned one is encoded at each t. Below `objective.t_eps` (the smallest t trained
on; a VP score divides by std(0) = 0) t is raised to t_eps; the rows keep the grid's t.

Applies to the code-conditioned score models (drl, vdrl); `code_usage_skip_reason` says why
not otherwise. The results are `code_usage_table.CodeUsage` rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .code_usage_table import CodeUsage, CodeUsageRow
from .datasets import ImageDataset
from .encode import encoding_noise_generator
from .probes import stratified_subset
from .sde import SDE, _bcast
from .spec import SCORE_MODEL_KINDS, EvaluateSpec, ExperimentSpec, t_key


class CodeConditionedModel(Protocol):
    """What the diagnostic needs (drl_engine.model.DRLModel provides it)."""

    sde: SDE

    def pixels_to_model_range(self, pixels: Tensor) -> Tensor: ...

    def encode(self, x0: Tensor, t: Tensor) -> Tensor: ...

    def denoise(self, xt: Tensor, t: Tensor, z: Tensor) -> Tensor: ...


def code_usage_skip_reason(spec: ExperimentSpec, x_test: Tensor) -> str | None:
    """Why the diagnostic does not apply to this spec and test split (None: it does)."""
    if spec.model.kind not in SCORE_MODEL_KINDS:
        return f"model.kind {spec.model.kind!r} has no code-conditioned score (only drl and vdrl have)"
    if spec.evaluate.code_usage_images == 0:
        return "evaluate.code_usage_images is 0"
    if len(x_test) < 2:
        return f"it needs at least 2 test images to shuffle codes between, got {len(x_test)}"
    return None


# --- the held-out batch ----------------------------------------------------------------------

def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (n >= 2): one random n-cycle,
    p[0] -> p[1] -> ... -> p[n-1] -> p[0] for a random order p. n < 2 gives the identity."""
    order = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)
    return out


def class_derangement(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation that sends every index to another index of the same class (a derangement
    within each class; a class of one keeps its index)."""
    out = np.arange(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[members] = members[derangement(len(members), rng)]
    return out


@dataclass(frozen=True)
class HeldOutBatch:
    """The images the diagnostic denoises and whose codes it permutes, fixed for a run."""

    images: Tensor                      # uint8 (N, C, H, W)
    labels: np.ndarray | None           # (N,), None without labels
    shuffled: np.ndarray                # image i gets the code of image shuffled[i]
    class_shuffled: np.ndarray | None   # the same within each class


def held_out_batch(x_test: Tensor, y_test: Tensor | None, evaluate: EvaluateSpec) -> HeldOutBatch:
    """`evaluate.code_usage_images` test images, class-stratified (`stratified_subset`, seeded
    by evaluate.seed; a plain seeded subset without labels), with their seeded code permutations."""
    n = evaluate.code_usage_images
    if n < 1:
        raise ValueError(f"evaluate.code_usage_images: expected >= 1 for a held-out batch, got {n}")
    labels = None if y_test is None else y_test.cpu().numpy()
    # Without labels every image is one class: the same seeded draw, unstratified.
    idx = stratified_subset(labels if labels is not None else np.zeros(len(x_test)), n, evaluate.seed)
    labels = None if labels is None else labels[idx]
    rng = np.random.default_rng(evaluate.seed)
    return HeldOutBatch(images=x_test[torch.as_tensor(idx, device=x_test.device)], labels=labels,
                        shuffled=derangement(len(idx), rng),
                        class_shuffled=None if labels is None else class_derangement(labels, rng))


# --- the measurement ---------------------------------------------------------------------------

@torch.no_grad()
def measure_code_usage(model: CodeConditionedModel, batch: HeldOutBatch, spec: ExperimentSpec,
                       device: torch.device, step: int) -> CodeUsage:
    """The diagnostic of `model` (put in eval mode) on `batch` at every t of spec.evaluate.t_grid
    (rounded to 3 decimals, duplicates dropped), in batches of spec.evaluate.batch_size."""
    model.eval()
    evaluate = spec.evaluate
    x0_all = model.pixels_to_model_range(batch.images.to(device))
    codes_of = {"error_true": torch.arange(len(x0_all), device=device),
                "error_shuffled": torch.as_tensor(batch.shuffled, device=device)}
    if batch.class_shuffled is not None:
        codes_of["error_class_shuffled"] = torch.as_tensor(batch.class_shuffled, device=device)
    rows = []
    for t in sorted({t_key(t) for t in evaluate.t_grid}):
        t_model = max(t, spec.objective.t_eps)
        eps_all = torch.randn(x0_all.shape, generator=encoding_noise_generator(t, evaluate.seed))
        eps_all = eps_all.to(device)
        codes = torch.cat([
            model.encode(x0, torch.full((len(x0),), t_model, device=device))
            for x0 in x0_all.split(evaluate.batch_size)])
        squared = dict.fromkeys(codes_of, 0.0)
        for start in range(0, len(x0_all), evaluate.batch_size):
            x0 = x0_all[start:start + evaluate.batch_size]
            tt = torch.full((len(x0),), t_model, device=device)
            mean, std = model.sde.marginal_prob(x0, tt)
            xt = mean + _bcast(std, x0) * eps_all[start:start + len(x0)]
            for name, code_index in codes_of.items():
                x0_hat = model.denoise(xt, tt, codes[code_index[start:start + len(x0)]])
                squared[name] += float((x0_hat - x0).double().pow(2).sum())
        errors = {name: total / x0_all.numel() for name, total in squared.items()}
        rows.append(CodeUsageRow(t=t, **errors))
    return CodeUsage(step=int(step), rows=rows, images=len(x0_all))


class CodeUsageTracker:
    """The diagnostic of one training run: at each checkpoint (`callback`, for
    `train(..., on_checkpoint_model=...)`) and at the end (`finish`), at most once per step,
    on one held-out batch. `on_measured(usage)` is called after each measurement; `seconds`
    adds up the time measuring took (so a caller can keep it out of training's throughput)."""

    def __init__(self, spec: ExperimentSpec, dataset: ImageDataset, device: torch.device,
                 on_measured: Callable[[CodeUsage], None] | None = None):
        self.spec, self.device, self.on_measured = spec, device, on_measured
        self.skip_reason = code_usage_skip_reason(spec, dataset.x_test)
        self.batch = (None if self.skip_reason is not None
                      else held_out_batch(dataset.x_test, dataset.y_test, spec.evaluate))
        self.series: list[CodeUsage] = []
        self.seconds = 0.0

    @property
    def callback(self) -> Callable[[torch.nn.Module, int], None] | None:
        """What to pass as the trainer's on_checkpoint_model: None when the diagnostic is skipped,
        so the trainer does not swap weights for nothing."""
        return None if self.batch is None else self.measure

    def measure(self, model: CodeConditionedModel, step: int) -> CodeUsage:
        if self.batch is None:
            raise ValueError(f"code usage: not measured, {self.skip_reason}")
        start = time.perf_counter()
        usage = measure_code_usage(model, self.batch, self.spec, self.device, step)
        self.seconds += time.perf_counter() - start
        self.series.append(usage)
        if self.on_measured is not None:
            self.on_measured(usage)
        return usage

    def finish(self, model: CodeConditionedModel, step: int) -> CodeUsage | None:
        """The final model's diagnostic: the last checkpoint's when it was taken at `step` (the
        same EMA weights), else measured now. None when skipped."""
        if self.batch is None:
            return None
        if self.series and self.series[-1].step == step:
            return self.series[-1]
        return self.measure(model, step)
