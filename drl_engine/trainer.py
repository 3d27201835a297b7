"""The training loop: Adam with linear warm-up, gradient clipping, EMA, seeded, resumable.

One step (score-SDE's conventions):

    lr_k  = train.lr * min(1, (k + 1) / train.warmup)     (k = 0, 1, ... the step index)
    idx   ~ randint(N, (B,))                                 from the data generator
    loss  = training_loss(model, x_train[idx], spec, data generator, k)
            (registry.py: the kind's loss maps the uint8 batch to its data range; drl/vdrl
            use drl_loss, vdm/vdm_vae the VDM bound in bits/dim; all noise from the generator)
    g     = clip(grad loss, global norm <= train.grad_clip)
    Adam step with lr_k, then EMA update

Randomness: `train.seed` seeds torch's global RNG (model initialisation, dropout) and a
separate generator on the device (batch indices, t, eps, a code's noise). Both states go
into every checkpoint, so a resumed run continues exactly where the interrupted one stopped.
The dataset is held whole on the device and batches are drawn by index: no DataLoader, no
per-item Python work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from .datasets import ImageDataset
from .device import configure_cuda_math, resolve_device
from .ema import EMA
from .model import ENCODER_PREFIX
from .registry import in_decoder_finetune, training_loss, untrained_model
from .spec import ExperimentSpec

# Offsets the data generator's seed from the global one: with equal seeds the two streams
# would be the same numbers (same algorithm), correlating dropout masks with t and eps.
DATA_SEED_OFFSET = 0x5EED


@dataclass
class TrainProgress:
    """A report every `train.log_every` steps; loss, stats and images/s are interval means."""

    step: int
    total: int
    loss: float
    images_per_s: float
    lr: float
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    model: nn.Module         # EMA weights loaded, eval mode (DRLModel, VDMModel, ...)
    step: int                # steps taken in total (including those before a resume)
    stopped: bool            # should_stop ended the run early
    last_checkpoint: Path | None
    final_loss: float | None # mean loss over the last (possibly partial) log interval of this call


def warmup_lr(base_lr: float, warmup: int, step: int) -> float:
    """lr * min(1, (step + 1) / warmup) for the 0-based `step`; warmup 0 means no warm-up."""
    if warmup <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup)


class _IntervalMeter:
    """Running means of the loss and stats between two progress reports, and the throughput."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss_sum = 0.0
        self.stat_sums: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, loss: float, stats: dict[str, float]) -> None:
        self.steps += 1
        self.loss_sum += loss
        for key, value in stats.items():
            self.stat_sums[key] = self.stat_sums.get(key, 0.0) + value

    def mean_loss(self) -> float:
        return self.loss_sum / self.steps

    def report(self, step: int, total: int, batch_size: int, lr: float) -> TrainProgress:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return TrainProgress(
            step=step, total=total, loss=self.mean_loss(),
            images_per_s=self.steps * batch_size / elapsed, lr=lr,
            stats={key: value / self.steps for key, value in self.stat_sums.items()})


def with_ema_weights(fn: Callable[[nn.Module, int], None], model: nn.Module, ema: EMA,
                     step: int, device: torch.device) -> None:
    """fn(model, step) with the EMA weights swapped in and every module in eval mode. The trained
    weights, each module's mode and the global RNG states come back afterwards, so a run that
    evaluates at its checkpoints continues bit-for-bit as one that does not."""
    modes = [(module, module.training) for module in model.modules()]
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()
                   ] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), ema.swapped_in(model):
        model.eval()
        try:
            fn(model, step)
        finally:
            for module, training in modes:
                module.training = training


def train(spec: ExperimentSpec, dataset: ImageDataset, checkpoint_dir: Path | None, *,
          progress: Callable[[TrainProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_checkpoint: Callable[[Path, int], None] | None = None,
          on_checkpoint_model: Callable[[nn.Module, int], None] | None = None,
          on_resume: Callable[[Path, int], None] | None = None,
          device: torch.device | None = None) -> TrainResult:
    """Train (or resume training) the spec's model kind for `spec.train.total_steps` steps in
    total: `train.iterations`, then `train.decoder_finetune_steps` with the encoder frozen.

    With a `checkpoint_dir`, training resumes from its latest checkpoint (whose spec must
    match in the model, sde, objective and train sections, else ValueError naming the
    fields), writes `ckpt_{step:08d}.pt` every `train.checkpoint_every` steps, at the end and
    when stopped, keeps the newest two, and calls `on_checkpoint(path, step)` after each,
    then `on_checkpoint_model(model, step)` with the EMA weights in eval mode (an evaluation
    at every checkpoint; `with_ema_weights` keeps it from changing the run). `on_resume(path,
    step)` is called once a checkpoint has been restored, before the first step.
    `should_stop` is polled before every step; when it returns True the run saves a checkpoint
    (without `on_checkpoint_model`: an evaluation would only delay the stop someone asked
    for) and returns with `stopped=True`.
    """
    cfg = spec.train
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    if device.type == "cuda":
        configure_cuda_math()
    if dataset.x_train.shape[0] == 0:
        raise ValueError(f"dataset {dataset.name}: the training split is empty")
    checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)

    # Seeds the global RNG (CPU and CUDA) for initialisation and dropout; the same model is
    # the probes' untrained control (random_init).
    model = untrained_model(spec, dataset).to(device)
    data_generator = torch.Generator(device=device)
    data_generator.manual_seed(cfg.seed + DATA_SEED_OFFSET)
    state = TrainingState(
        spec=spec, model=model, ema=EMA(model, cfg.ema_decay),
        optimizer=torch.optim.Adam(model.parameters(), lr=cfg.lr),
        data_generator=data_generator)

    last_checkpoint = latest_checkpoint(checkpoint_dir)
    if last_checkpoint is not None:
        state.restore(load_checkpoint(last_checkpoint, map_location=device), last_checkpoint)
        if on_resume is not None:
            on_resume(last_checkpoint, state.step)
    saved_step = state.step if last_checkpoint is not None else None

    def checkpoint(evaluate: bool = True) -> None:
        nonlocal last_checkpoint, saved_step
        if checkpoint_dir is None or saved_step == state.step:
            return
        last_checkpoint = save_checkpoint(checkpoint_dir, state.step, state.to_checkpoint())
        saved_step = state.step
        if on_checkpoint is not None:
            on_checkpoint(last_checkpoint, state.step)
        if evaluate and on_checkpoint_model is not None:
            with_ema_weights(on_checkpoint_model, model, state.ema, state.step, device)

    x_train = dataset.x_train.to(device)
    # bf16 autocast on CUDA: the forward pass and loss in bf16 (same exponent range as fp32,
    # so no loss scaling is needed); weights, gradients, Adam and EMA stay fp32. CPU runs fp32.
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda")
    meter = _IntervalMeter()
    final_loss: float | None = None
    stopped = False
    model.train()
    total = cfg.total_steps
    while state.step < total:
        if should_stop is not None and should_stop():
            stopped = True
            break
        lr = warmup_lr(cfg.lr, cfg.warmup, state.step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr

        idx = torch.randint(x_train.shape[0], (cfg.batch_size,), generator=data_generator,
                            device=device)
        # The decoder fine-tune phase: the encoder is frozen in its evaluation mode (no dropout,
        # no gradient, its EMA kept), so its codes are exactly those used downstream.
        finetune = in_decoder_finetune(spec, state.step)
        if finetune:
            model.encoder.eval()
        with autocast:
            loss, stats = training_loss(model, x_train[idx], spec, data_generator, state.step)
        loss_value = float(stats["loss"]) if "loss" in stats else loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"train: the loss became {loss_value} at step {state.step + 1}; "
                                     "try a smaller train.lr or train.grad_clip")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.ema.update(model, frozen_prefix=ENCODER_PREFIX if finetune else None)
        state.step += 1

        meter.add(loss_value, {**stats, "grad_norm": float(grad_norm)})
        final_loss = meter.mean_loss()
        if state.step % cfg.log_every == 0 or state.step in (cfg.iterations, total):
            if progress is not None:
                progress(meter.report(state.step, total, cfg.batch_size, lr))
            meter.reset()
        if state.step % cfg.checkpoint_every == 0 or state.step in (cfg.iterations, total):
            checkpoint()

    if stopped:
        checkpoint(evaluate=False)
    state.ema.copy_to(model)
    model.eval()
    return TrainResult(model=model, step=state.step, stopped=stopped,
                       last_checkpoint=last_checkpoint, final_loss=final_loss)
