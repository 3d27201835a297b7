"""Run the weighting study's grid of cells and write WEIGHTING.md.

Cells run one after another in this process (each a `drl run` into runs_dir/<dataset>/<cell>);
`shard=(i, n)` runs every n-th cell starting at i, so n processes with OMP_NUM_THREADS=1 can
share a grid on n cores. A cell that already ran (its cell.json, same spec) is read back, so
the report is written by whichever process finds every cell done, and an interrupted study
resumes where it stopped. Each cell's numbers are also kept in the report's record
(`<out>/weighting/cells/`, committed), so the grid can be finished on another machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..datasets import ImageDataset, load_dataset
from .budgets import WeightingBudget, get_budget
from .cells import CELL_FILE, CellResult, cached_cell, cell_spec, record_path, run_cell, spec_key
from .report import render_report

Log = Callable[[str], None]
REPORT_NAME = "WEIGHTING.md"


@dataclass
class StudyResult:
    budget: WeightingBudget
    results: list[CellResult]
    report: Path | None        # None while other shards' cells are still missing
    seconds: float


def run_weighting_study(budget: str | WeightingBudget, out_dir: str | Path, *,
                        data_dir: str | None = None, device: str = "auto",
                        runs_dir: str | Path | None = None, command: str | None = None,
                        shard: tuple[int, int] = (0, 1), report_only: bool = False,
                        log: Log = print) -> StudyResult:
    """Run this shard's cells (none with `report_only`), then write the report once every
    cell of the grid has run; with `report_only` write it from the cells that have run, the
    others listed as not run."""
    budget = get_budget(budget) if isinstance(budget, str) else budget
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"--shard: expected I/N with 0 <= I < N, got {index}/{count}")
    out_dir = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir else Path("runs") / f"weighting-study-{budget.name}"
    record_dir = out_dir / "weighting" / "cells"
    command = command or f"drl weighting-study --budget {budget.name} --out {out_dir}"
    start = time.perf_counter()
    cells = budget.cells()
    datasets: dict[str, ImageDataset] = {}
    results = []
    for i, cell in enumerate(cells):
        if report_only or i % count != index:
            continue
        if cell.dataset not in datasets:   # one load per dataset: its cells share the data
            datasets[cell.dataset] = load_dataset(cell_spec(budget, cell, data_dir, device).dataset)
        results.append(run_cell(budget, cell, datasets[cell.dataset], runs_dir, record_dir,
                                data_dir, device, log))
    # Every cell, this shard's and the others' (read back from their cell.json).
    done = {r.cell: r for r in results}
    for cell in cells:
        paths = [runs_dir / cell.name / CELL_FILE, record_path(record_dir, cell)]
        spec_json = spec_key(cell_spec(budget, cell, data_dir, device))
        if cell not in done and (cached := cached_cell(cell, paths, spec_json)) is not None:
            done[cell] = cached
    missing = [c.name for c in cells if c not in done]
    seconds = time.perf_counter() - start
    if missing and not report_only:
        log(f"{len(missing)} cells not run yet (other shards?): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "") + "; the report waits for them")
        return StudyResult(budget, results, None, seconds)
    ordered = [done[c] for c in cells if c in done]
    minutes = sum(r.seconds for r in ordered) / 60
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_NAME
    report.write_text(render_report(budget, ordered, out_dir, command, minutes, not_run=missing))
    log(f"wrote {report}")
    return StudyResult(budget, ordered, report, seconds)
