"""Listing experiments: filtered, newest first, one page at a time.

The one query behind GET /experiments and the dashboard's runs page, so that both show the
same experiments in the same order for the same filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from drl_core.job_states import ExperimentStatus, experiment_status
from drl_core.models import Experiment, Job, User


@dataclass(frozen=True)
class ExperimentFilter:
    """What to list: every field None matches every experiment."""

    status: ExperimentStatus | None = None
    owner: str | None = None   # the owner's user name, exactly
    text: str | None = None    # a part of the name, any case


@dataclass(frozen=True)
class ExperimentListPage:
    experiments: list[Experiment]   # with their jobs and owner loaded
    total: int                      # experiments matching the filter, over all pages


def list_experiments(session: Session, offset: int, limit: int,
                     where: ExperimentFilter = ExperimentFilter()) -> ExperimentListPage:
    """The page [offset, offset + limit) of the experiments matching `where`, newest first
    (ids grow with creation; created_at can tie)."""
    matching = sa.select(Experiment.id)
    if where.owner is not None:
        matching = matching.join(User, Experiment.owner_id == User.id).where(User.name == where.owner)
    if where.text:
        matching = matching.where(Experiment.name.icontains(where.text, autoescape=True))
    if where.status is None:
        total = session.scalar(sa.select(sa.func.count()).select_from(matching.subquery())) or 0
        ids = list(session.scalars(matching.order_by(Experiment.id.desc()).offset(offset).limit(limit)))
    else:
        with_status = ids_with_status(session, where.status, among=matching)
        total, ids = len(with_status), with_status[offset:offset + limit]
    rows = session.scalars(
        sa.select(Experiment).where(Experiment.id.in_(ids))
        .options(selectinload(Experiment.jobs), selectinload(Experiment.owner))
    ).all()
    by_id = {e.id: e for e in rows}
    return ExperimentListPage([by_id[i] for i in ids if i in by_id], total)


def ids_with_status(session: Session, wanted: ExperimentStatus,
                    among: sa.Select[tuple[int]] | None = None) -> list[int]:
    """Ids (newest first) of the experiments (those `among` selects, else all) whose derived
    status is `wanted`.

    The status is not stored (it is derived from the pipeline jobs), so the filter reads
    every job's (experiment, id, kind, status), four small columns, and derives it with the
    one authority, `experiment_status`, rather than a second copy of the rule in SQL.
    """
    query = (sa.select(Experiment.id, Job.id, Job.kind, Job.status)
             .outerjoin(Job, Job.experiment_id == Experiment.id)
             .order_by(Experiment.id.desc()))
    if among is not None:
        query = query.where(Experiment.id.in_(among))
    jobs: dict[int, list[SimpleNamespace]] = {}
    for experiment_id, job_id, kind, job_status in session.execute(query):
        jobs.setdefault(experiment_id, [])
        if job_id is not None:
            jobs[experiment_id].append(SimpleNamespace(id=job_id, kind=kind, status=job_status))
    return [i for i, js in jobs.items() if experiment_status(js) is wanted]
