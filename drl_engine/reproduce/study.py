"""`run_reproduction`: load MNIST at the budget's size, run the selected sections, write the report.

Sections run in priority order a, c, e, d, b (d reuses e's DRL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..datasets import load_dataset
from ..device import resolve_device
from ..spec import DatasetSpec
from . import accuracy_vs_t, denoising_swap, latent_2d, single_t, t_init
from .budgets import get_budget
from .context import Log, SectionResult, StudyContext
from .report import SECTION_TITLES, write_report

SECTIONS: dict[str, Callable[[StudyContext], SectionResult]] = {
    "a": accuracy_vs_t.run, "c": latent_2d.run, "e": t_init.run, "d": denoising_swap.run,
    "b": single_t.run}


@dataclass
class Reproduction:
    report: Path
    results: dict[str, SectionResult]
    not_run: dict[str, str]
    seconds: float


def reproduce_command(budget: str, out_dir: Path | str, data_dir: str | None, device: str | None,
                      sections: Sequence[str] | None) -> str:
    """The `drl reproduce` line that regenerates this report."""
    parts = ["drl reproduce", f"--budget {budget}", f"--out {out_dir}"]
    if data_dir:
        parts.append(f"--data-dir {data_dir}")
    if device:
        parts.append(f"--device {device}")
    if sections is not None:
        parts.append(f"--sections {','.join(sections)}")
    return " ".join(parts)


def check_sections(sections: Sequence[str] | None) -> list[str]:
    if sections is None:
        return list(SECTION_TITLES)
    unknown = [s for s in sections if s not in SECTION_TITLES]
    if unknown or not sections:
        raise ValueError(f"--sections: expected letters from {','.join(SECTION_TITLES)}, "
                         f"got {','.join(sections) or 'nothing'}")
    return list(sections)


def run_reproduction(budget_name: str, out_dir: Path | str, *, data_dir: str | None = None,
                     device: str = "auto", sections: Sequence[str] | None = None,
                     cache_dir: Path | None = None, log: Log = print,
                     command: str | None = None) -> Reproduction:
    """Run the study at `budget_name` ('small', 'full', 'paper'; 'tiny' for tests) into out_dir."""
    budget = get_budget(budget_name)
    selected = check_sections(sections)
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    command = command or reproduce_command(budget_name, out_dir, data_dir,
                                           None if device == "auto" else device, sections)
    start = time.perf_counter()
    dataset = load_dataset(DatasetSpec(name="mnist", data_dir=data_dir,
                                       train_limit=budget.train_limit, test_limit=budget.test_limit))
    ctx = StudyContext(budget, dataset.to(torch_device), torch_device, out_dir, command,
                       data_dir=data_dir, cache_dir=cache_dir, log=log)
    results: dict[str, SectionResult] = {}
    not_run: dict[str, str] = {}
    for key in SECTION_TITLES:
        if key not in selected:
            not_run[key] = f"Not run in this invocation (not in --sections {','.join(selected)})"
    for key, section in SECTIONS.items():
        if key in selected:
            log(f"section {key}: {SECTION_TITLES[key]}")
            results[key] = section(ctx)
    seconds = time.perf_counter() - start
    environment = (f"device {torch_device}, {torch.get_num_threads()} torch threads, "
                   f"{os.cpu_count()} CPUs visible")
    report = write_report(out_dir, budget, command, results, not_run, environment, seconds)
    return Reproduction(report, results, not_run, seconds)
