"""Everything the run page shows about one experiment, read through the JSON API's own
endpoint functions (so the page and the API cannot disagree), and the page's charts as data.

A result that does not exist yet (probes still running, no loss point recorded) is the API's
not-ready or not-found problem; the page shows its detail where the chart would be. A result
the model kind never has (probes of vdm, code usage of a baseline: the API's 422) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import yaml
from sqlalchemy.orm import Session

from api.lookups import get_experiment
from api.problems import Problem
from api.routers import code_usage, metrics, probes, samples
from api.routers.experiments import experiment_out
from api.schemas import CodeUsageOut, ExperimentOut, JobDetail, MetricSeries, ProbesOut, SampleOut
from drl_core import experiments as service
from drl_core.artifacts import ArtifactStore
from drl_core.job_states import ACTIVE, RESUMABLE
from drl_engine.spec import has_sampler

LOSS_POINTS = 500
# Probe columns on another scale than accuracy: in the table, not on the accuracy chart.
NOT_ACCURACY = ("silhouette",)

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """A result, or why there is none yet (the API's problem detail)."""

    value: T | None = None
    missing: str | None = None


def result_of(read: Callable[[], T]) -> Result[T] | None:
    """`read()`'s value; its problem's detail when not ready or not found; None when the
    model kind never has this result (422)."""
    try:
        return Result(read())
    except Problem as problem:
        return None if problem.status == 422 else Result(missing=problem.detail)


@dataclass(frozen=True)
class Series:
    label: str
    values: list[float | None]
    group: int = 0          # series of one group share a colour (a probe and its control)
    dashed: bool = False
    width: float = 1.5


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    x_label: str
    y_label: str
    x: list[float]
    series: list[Series]
    y_log: bool = False


@dataclass(frozen=True)
class RunView:
    experiment: ExperimentOut
    jobs: list[JobDetail]
    spec_yaml: str
    kind: str
    active: bool                                # something still runs: the page refreshes
    resumable: bool                             # a job failed or was cancelled
    can_sample: bool                            # the kind generates (not the baselines)
    loss: Result[MetricSeries] | None
    probes: Result[ProbesOut] | None
    code_usage: Result[CodeUsageOut] | None
    samples: list[SampleOut]
    charts: list[Chart] = field(default_factory=list)

    @property
    def scatter_t(self) -> float | None:
        """The t the codes' scatter opens at: the linear probe's best t where the test codes
        were computed there, else the middle computed t; None without test codes."""
        computed = self.experiment.summary.embeddings.get("test") or []
        best = (self.experiment.summary.best_t or {}).get("linear")
        if best is not None and best.t in computed:
            return best.t
        return computed[len(computed) // 2] if computed else None

    @property
    def accuracy_columns(self) -> list[str]:
        value = self.probes.value if self.probes else None
        return [c for c in value.columns if c not in NOT_ACCURACY] if value else []


def run_view(session: Session, store: ArtifactStore, experiment_id: int) -> RunView:
    """The run page's content; a 404 problem for an unknown id."""
    experiment = get_experiment(session, experiment_id)
    out = experiment_out(session, experiment)
    loss = result_of(lambda: metrics.read_metric(experiment_id, session, key="loss",
                                                 max_points=LOSS_POINTS))
    probe_table = result_of(lambda: probes.read_probes(experiment_id, session, store))
    usage = result_of(lambda: code_usage.read_code_usage(experiment_id, session))
    view = RunView(
        experiment=out, jobs=[JobDetail.from_job(job) for job in experiment.jobs],
        spec_yaml=spec_as_yaml(experiment.spec),
        kind=service.experiment_kind(experiment),
        active=any(job.status in ACTIVE for job in experiment.jobs),
        resumable=any(job.status in RESUMABLE for job in experiment.jobs),
        can_sample=has_sampler(service.experiment_kind(experiment)),
        loss=loss, probes=probe_table, code_usage=usage,
        samples=samples.list_samples(experiment_id, session),
    )
    view.charts.extend(chart for chart in (
        loss_chart(loss.value if loss else None),
        accuracy_chart(probe_table.value if probe_table else None),
        code_usage_chart(usage.value if usage else None)) if chart is not None)
    return view


class _SpecDumper(yaml.SafeDumper):
    """Sections as blocks, lists of numbers on one line (`t_grid: [0.0, 0.5, 1.0]`)."""


_SpecDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))


def spec_as_yaml(spec: dict[str, Any]) -> str:
    """The spec as a YAML file `drl run` reads, in the spec's own field order."""
    return yaml.dump(spec, Dumper=_SpecDumper, sort_keys=False, default_flow_style=False)


def loss_chart(series: MetricSeries | None) -> Chart | None:
    if series is None or not series.points:
        return None
    values = [p.value for p in series.points]
    return Chart("loss", f"Training loss ({series.total_points} points, {len(values)} shown)",
                 "step", "loss", [p.step for p in series.points], [Series("loss", values)],
                 y_log=all(v > 0 for v in values))


def accuracy_chart(table: ProbesOut | None) -> Chart | None:
    """Each probe's test accuracy against t, and dashed in the same colour the untrained
    control's (the same architecture and seed, never trained), where the probes have one."""
    if table is None or not table.rows:
        return None
    ts = [row["t"] for row in table.rows]
    control = {row["t"]: row for row in table.control_rows}
    series = []
    columns = [c for c in table.columns if c not in NOT_ACCURACY]
    for group, column in enumerate(columns):
        series.append(Series(column, [row.get(column) for row in table.rows], group))
        if control:
            series.append(Series(f"{column} (untrained control)",
                                 [control.get(t, {}).get(column) for t in ts], group, dashed=True,
                                 width=1.0))
    return Chart("accuracy", "Probe accuracy against t (test split; dashed: untrained control)",
                 "t", "accuracy", ts, series)


def code_usage_chart(usage: CodeUsageOut | None) -> Chart | None:
    """code_gain (error with shuffled codes minus error with the true codes) against t at
    every measured checkpoint, the trained model's (the last) drawn thickest; and its
    class_gain dashed, where the dataset has labels."""
    if usage is None or not usage.checkpoints:
        return None
    ts = usage.t_values
    series = []
    last = len(usage.checkpoints) - 1
    for index, checkpoint in enumerate(usage.checkpoints):
        by_t = {row.t: row for row in checkpoint.rows}
        series.append(Series(f"code gain, step {checkpoint.step}",
                             [finite(by_t[t].code_gain) if t in by_t else None for t in ts],
                             index, width=2.5 if index == last else 1.0))
    final = {row.t: row for row in usage.checkpoints[last].rows}
    class_gain = [finite(final[t].class_gain) if t in final else None for t in ts]
    if any(v is not None for v in class_gain):
        series.append(Series(f"class gain, step {usage.checkpoints[last].step}", class_gain, last,
                             dashed=True, width=2.0))
    return Chart("code-usage", "Code usage against t: denoising error saved by the true code",
                 "t", "error difference", ts, series)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def chart_data(charts: list[Chart]) -> dict[str, dict[str, Any]]:
    """The charts by id, as each figure's `data-chart` JSON (static/dashboard.js draws it)."""
    return {chart.id: asdict(chart) for chart in charts}
