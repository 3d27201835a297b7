"""The runs page's rows: one line per experiment, from the same listing as GET /experiments
(`drl_core.experiment_list`) and the same service reads as an experiment's summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from drl_core.experiment_list import ExperimentFilter, list_experiments
from drl_core.experiments import experiment_kind, probe_summary
from drl_core.job_states import ACTIVE, JobKind, JobStatus, experiment_status
from drl_core.models import Experiment, Job, User

PAGE_SIZE = 25
# The probe column the runs page shows, first found: the linear probe on every label is the
# paper's headline number; a probe table without it shows its first column.
HEADLINE_PROBES = ("linear", "mlp")


@dataclass(frozen=True)
class BestT:
    column: str
    t: float
    value: float | None


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    owner: str | None
    kind: str
    dataset: str
    status: str
    step: int | None
    total: int | None
    images_per_s: float | None
    eta_s: float | None
    best: BestT | None
    created_at: datetime


@dataclass(frozen=True)
class RunsPage:
    rows: list[RunRow]
    total: int
    page: int
    pages: int
    anything_active: bool   # the page keeps refreshing itself while true


def runs_page(session: Session, where: ExperimentFilter, page: int) -> RunsPage:
    """Page `page` (1-based) of the experiments matching `where`, newest first."""
    listed = list_experiments(session, (page - 1) * PAGE_SIZE, PAGE_SIZE, where)
    rows = [run_row(session, experiment) for experiment in listed.experiments]
    return RunsPage(rows, listed.total, page, max(1, -(-listed.total // PAGE_SIZE)),
                    anything_active(session))


def run_row(session: Session, experiment: Experiment) -> RunRow:
    train = next((j for j in experiment.jobs if j.kind == JobKind.TRAIN), None)
    spec = experiment.spec
    return RunRow(
        id=experiment.id, name=experiment.name,
        owner=experiment.owner.name if experiment.owner else None,
        kind=experiment_kind(experiment), dataset=(spec.get("dataset") or {}).get("name", ""),
        status=experiment_status(experiment.jobs).value,
        step=train.step if train else None, total=train.total if train else None,
        images_per_s=train.images_per_s if train else None,
        eta_s=training_eta_s(train, spec), best=headline_best(probe_summary(session, experiment.id)),
        created_at=experiment.created_at,
    )


def training_eta_s(train: Job | None, spec: dict[str, Any]) -> float | None:
    """Seconds of training left at the current speed, while it runs: the steps left times the
    batch size over the images per second the worker last reported."""
    if train is None or train.status != JobStatus.RUNNING or not train.images_per_s \
            or train.step is None or not train.total:
        return None
    batch_size = (spec.get("train") or {}).get("batch_size")
    if not batch_size:
        return None
    return max(0, train.total - train.step) * batch_size / train.images_per_s


def headline_best(probes: dict[str, Any] | None) -> BestT | None:
    """The headline probe's best t and its test value (chosen on validation), if probed."""
    best = (probes or {}).get("best") or {}
    column = next((c for c in HEADLINE_PROBES if c in best), next(iter(best), None))
    if column is None:
        return None
    return BestT(column, best[column]["t"], best[column].get("value"))


def anything_active(session: Session) -> bool:
    """Whether any job anywhere is queued or running: a new or moving experiment may change
    what the page shows."""
    return bool(session.scalar(sa.select(sa.exists().where(Job.status.in_([s.value for s in ACTIVE])))))


def owner_names(session: Session) -> list[str]:
    """Everyone who owns an experiment, for the owner filter."""
    return list(session.scalars(
        sa.select(User.name).where(sa.exists().where(Experiment.owner_id == User.id)).order_by(User.name)))
