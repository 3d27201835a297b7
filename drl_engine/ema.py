"""Exponential moving average of a model's weights (the weights that get evaluated and sampled)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class EMA:
    """shadow <- d_n * shadow + (1 - d_n) * param after every optimiser step, with

        d_n = min(decay, (1 + n) / (10 + n)),   n = number of updates so far, this one included

    (score-SDE's `ExponentialMovingAverage(use_num_updates=True)`, as in DDPM's code): the
    first update has d_1 = 2/11, so the average forgets the random initialisation within
    the first few hundred steps instead of the ~1/(1 - decay) steps a fixed decay needs.

    Only trainable parameters are averaged; buffers (and frozen parameters, e.g. a fixed
    Fourier projection) are taken from the model as they are.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay: expected a value in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in self._tracked(model)}

    @staticmethod
    def _tracked(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(shadow tensors, model parameters) in matching order; a different model is an error."""
        tracked = self._tracked(model)
        names = [name for name, _ in tracked]
        if names != list(self.shadow):
            missing = sorted(set(self.shadow) - set(names)) or sorted(set(names) - set(self.shadow))
            raise ValueError(f"EMA: the model's trainable parameters do not match the "
                             f"averaged ones (first differences: {missing[:3]})")
        return [self.shadow[name] for name in names], [p for _, p in tracked]

    def current_decay(self) -> float:
        """The decay the next update will use: min(decay, (1 + n) / (10 + n)) with n counting it."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, frozen_prefix: str | None = None) -> None:
        """One averaging step; parameters named `frozen_prefix...` keep their average (a frozen
        part of the model must stay bit-identical in the weights that get evaluated)."""
        decay = self.current_decay()
        self.num_updates += 1
        shadow, params = self._pairs(model)
        if frozen_prefix is not None:
            keep = [not name.startswith(frozen_prefix) for name in self.shadow]
            shadow = [s for s, k in zip(shadow, keep) if k]
            params = [p for p, k in zip(params, keep) if k]
        # lerp: shadow + (1 - d) (param - shadow); one fused call over all tensors.
        torch._foreach_lerp_(shadow, [p.detach() for p in params], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's trainable parameters with the averaged ones."""
        shadow, params = self._pairs(model)
        torch._foreach_copy_(params, shadow)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily run the model with the EMA weights; the trained weights come back after."""
        _, params = self._pairs(model)
        saved = [p.detach().clone() for p in params]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, saved)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if list(shadow) != list(self.shadow):
            raise ValueError("EMA state: parameter names differ from this model's "
                             f"({len(shadow)} saved, {len(self.shadow)} here)")
        for name, value in shadow.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA state: {name} has shape {tuple(value.shape)}, "
                                 f"this model has {tuple(self.shadow[name].shape)}")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {name: value.to(self.shadow[name]).clone() for name, value in shadow.items()}
