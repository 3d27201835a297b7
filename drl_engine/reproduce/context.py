"""What every study section shares: the budget, the data, the device, trained models, outputs.

A section is a function `(ctx: StudyContext) -> SectionResult`. Models are trained through
`ctx.trained(spec)`, which keeps them by spec, so two sections asking for the same model train
it once (e and d share one DRL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..datasets import ImageDataset
from ..spec import ExperimentSpec, parse_spec
from ..trainer import train
from .budgets import Budget

Log = Callable[[str], None]
IMAGE_DIR = "reproduction"   # PNGs go to <out>/reproduction/, linked relatively from the report


@dataclass
class Number:
    """One reported number with what it is, so tests can check its range."""

    name: str
    kind: str     # 'accuracy' [0, 1], 'silhouette' [-1, 1], 'correlation' [-1, 1], 'fd' >= 0, 'count'
    value: float


@dataclass
class SectionResult:
    key: str                     # 'a'..'e'
    title: str
    implemented: bool
    body: str = ""               # Markdown below the section heading
    figures: list[str] = field(default_factory=list)   # paths relative to the report
    numbers: list[Number] = field(default_factory=list)
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)         # what the closing note reads


@dataclass
class StudyContext:
    budget: Budget
    dataset: ImageDataset
    device: torch.device
    out_dir: Path
    command: str
    data_dir: str | None = None
    cache_dir: Path | None = None     # FD-LeNet's cache (None: its default)
    log: Log = print
    _models: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def image_dir(self) -> Path:
        return self.out_dir / IMAGE_DIR

    def figure_path(self, name: str) -> tuple[Path, str]:
        """(file to write, link relative to the report) of the PNG `name`."""
        self.image_dir.mkdir(parents=True, exist_ok=True)
        return self.image_dir / name, f"{IMAGE_DIR}/{name}"

    def spec(self, name: str, kind: str = "drl", encoder: str = "static", latent_dim: int = 8,
             t_sampling: str = "uniform", t_fixed: float | None = None) -> ExperimentSpec:
        """The budget's ExperimentSpec for one model of the study (VE SDE, paper defaults
        for everything the budget does not set)."""
        b = self.budget
        return parse_spec({
            "name": name,
            "dataset": {"name": "mnist", "data_dir": self.data_dir, "train_limit": b.train_limit,
                        "test_limit": b.test_limit},
            "model": {"kind": kind, "encoder": encoder, "latent_dim": latent_dim,
                      "base_channels": b.base_channels, "channel_mult": list(b.channel_mult),
                      "num_res_blocks": b.num_res_blocks,
                      "attn_resolutions": list(b.attn_resolutions), "dropout": b.dropout},
            "objective": {"t_sampling": t_sampling, "t_fixed": t_fixed},
            "train": {"iterations": b.iterations, "batch_size": b.batch_size, "lr": b.lr,
                      "warmup": b.warmup, "ema_decay": b.ema_decay, "seed": b.seed,
                      "log_every": max(1, b.iterations // 10), "device": self.device.type},
            "evaluate": {"t_grid": list(b.t_grid), "probes": ["svc", "linear", "silhouette"],
                         "label_budgets": list(b.label_budgets),
                         "probe_train_limit": b.probe_train_limit, "seed": b.seed},
            "sample": {"steps": b.sample_steps, "seed": b.seed},
        })

    def trained(self, spec: ExperimentSpec) -> nn.Module:
        """The EMA model of `spec`, trained on the study's dataset (once per spec)."""
        key = spec.model_dump_json(exclude={"name"})
        if key not in self._models:
            start = time.perf_counter()
            result = train(spec, self.dataset, None, device=self.device)
            self._models[key] = result.model.eval()
            self.log(f"  trained {spec.name}: {result.step} steps in "
                     f"{time.perf_counter() - start:.0f} s, final loss {result.final_loss:.4g}")
        return self._models[key]

    def provenance(self) -> str:
        """The line every result carries: budget, seeds and the command that regenerates it."""
        b = self.budget
        return (f"*Budget `{b.name}`; seed {b.seed} for training, label subsets, encoding noise "
                f"and sampling; regenerate with `{self.command}`.*")




def accuracy_noise(accuracy: float, n_test: int) -> float:
    """Two binomial standard errors of a test accuracy, 2 sqrt(p (1 - p) / n): differences
    smaller than this are reported as within noise, not as a claim holding or failing."""
    return 2.0 * (max(accuracy * (1.0 - accuracy), 0.0) / max(n_test, 1)) ** 0.5
