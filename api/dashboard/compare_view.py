"""The compare page: 2 to 8 runs side by side, read through the same API functions as the
run page. Their loss curves and probe accuracy against t overlaid (one chart each), the spec
fields on which they differ, and their sample grids lined up by the settings that drew them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.dashboard.run_view import LOSS_POINTS, Chart, Series, result_of
from api.dashboard.runs_view import HEADLINE_PROBES
from api.lookups import get_experiment
from api.problems import field_error, validation_problem
from api.routers import metrics, probes, samples
from api.schemas import SampleOut
from drl_core.artifacts import ArtifactStore
from drl_core.job_states import experiment_status

MIN_RUNS, MAX_RUNS = 2, 8
# The settings a sample grid is lined up by: what makes two grids comparable.
SAMPLE_SETTINGS = ("sampler", "steps", "t_init", "prior", "code_source")


@dataclass(frozen=True)
class ComparedRun:
    id: int
    name: str
    status: str


@dataclass(frozen=True)
class SpecDifference:
    field: str                 # dotted, e.g. train.iterations
    values: list[str]          # one per run, as YAML would show it ("" where absent)


@dataclass(frozen=True)
class SampleRow:
    settings: dict[str, Any]          # SAMPLE_SETTINGS' values
    cells: list[SampleOut | None]     # per run: its newest sample job with these settings


@dataclass(frozen=True)
class CompareView:
    runs: list[ComparedRun]
    charts: list[Chart]
    differences: list[SpecDifference]
    sample_rows: list[SampleRow]
    probe_column: str | None


def compare_view(session: Session, store: ArtifactStore, ids: list[int]) -> CompareView:
    """A 422 problem unless 2 to 8 distinct ids; a 404 problem for an unknown one."""
    ids = list(dict.fromkeys(ids))
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        raise validation_problem([field_error("id", f"pick {MIN_RUNS} to {MAX_RUNS} runs to "
                                                    f"compare, got {len(ids)}")])
    experiments = [get_experiment(session, i) for i in ids]
    runs = [ComparedRun(e.id, e.name, experiment_status(e.jobs).value) for e in experiments]
    labels = [f"#{run.id} {run.name}" for run in runs]
    losses = [result_of(lambda i=i: metrics.read_metric(i, session, key="loss", max_points=LOSS_POINTS))
              for i in ids]
    tables = [result_of(lambda i=i: probes.read_probes(i, session, store)) for i in ids]
    column = _shared_probe_column(table.value for table in tables if table and table.value)
    charts = [chart for chart in (
        overlay("loss", "Training loss", "step", "loss", labels,
                [[(p.step, p.value) for p in loss.value.points] if loss and loss.value else []
                 for loss in losses]),
        overlay("accuracy", f"Probe accuracy against t ({column}, test split)", "t", "accuracy",
                labels, [[(row["t"], row.get(column)) for row in table.value.rows]
                         if table and table.value and column else [] for table in tables]),
    ) if chart is not None]
    return CompareView(runs, charts, spec_differences([e.spec for e in experiments]),
                       lined_up_samples([samples.list_samples(i, session) for i in ids]), column)


def _shared_probe_column(tables: Iterable[Any]) -> str | None:
    """The headline probe column every probed run has (the runs page's choice)."""
    columns = [set(table.columns) for table in tables]
    if not columns:
        return None
    shared = set.intersection(*columns)
    return next((c for c in HEADLINE_PROBES if c in shared), min(shared, default=None))


def overlay(chart_id: str, title: str, x_label: str, y_label: str, labels: list[str],
            curves: list[list[tuple[float, float | None]]]) -> Chart | None:
    """One chart of several (x, y) curves on the union of their x (None where a curve has
    no point; the line spans the gap); None when no curve has a point."""
    if not any(curves):
        return None
    xs = sorted({x for curve in curves for x, _ in curve})
    series = []
    for group, (label, curve) in enumerate(zip(labels, curves)):
        if curve:
            by_x = dict(curve)
            series.append(Series(label, [by_x.get(x) for x in xs], group))
    return Chart(chart_id, title, x_label, y_label, xs, series)


def flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"iterations": 30}} -> {"train.iterations": 30}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def spec_differences(specs: list[dict[str, Any]]) -> list[SpecDifference]:
    """The spec fields whose values are not the same in every run, in the spec's order."""
    flat = [flatten(spec) for spec in specs]
    fields = list(dict.fromkeys(name for spec in flat for name in spec))
    missing = object()
    return [SpecDifference(name, ["" if spec.get(name, missing) is missing else _shown(spec[name])
                                  for spec in flat])
            for name in fields
            if len({repr(spec.get(name, missing)) for spec in flat}) > 1]


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def lined_up_samples(per_run: list[list[SampleOut]]) -> list[SampleRow]:
    """One row per distinct SAMPLE_SETTINGS among the runs' sample jobs, each run's newest
    job with those settings in its column (lists are newest first)."""
    def settings_of(sample: SampleOut) -> tuple[Any, ...]:
        return tuple(sample.params.get(name) for name in SAMPLE_SETTINGS)

    keys = list(dict.fromkeys(settings_of(s) for run in per_run for s in run))
    rows = []
    for key in keys:
        cells = [next((s for s in run if settings_of(s) == key), None) for run in per_run]
        rows.append(SampleRow(dict(zip(SAMPLE_SETTINGS, key)), cells))
    return rows
