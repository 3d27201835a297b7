"""Dashboard benchmark (issue 9): the runs page with many experiments, a run page with a long
loss curve, against a real `drl serve --no-worker` on PostgreSQL.

    python bench/dashboard.py [--experiments 1000] [--points 20000] [--requests 50]
                              [--postgres-url URL] [--quick] [--out FILE]

Seeds a throwaway PostgreSQL database (created from --postgres-url, dropped at the end):
- one real experiment, a tiny digits run whose train, encode, probe and sample jobs the
  worker's own `run_job` takes through in this process (so its run page has everything a run
  page shows: jobs and log tails, the accuracy-against-t and code-usage charts, the sample
  grid, the embeddings), whose train job's progress points are then replaced by `--points`
  steps of each key its reports recorded (loss, dsm, grad_norm, images/s, penalty: the run
  page reads the loss series of `--points` points and draws 500 of them);
- `--experiments` - 1 more, created by the service's `create_experiment` (owners taken in turn
  from five users), then set in a fixed mix of states: 70% succeeded (with the real run's probe
  summary, so the runs page shows a best-t accuracy), 10% failed, 10% cancelled, 5% training,
  5% queued. Something runs, so the runs page is the live one that refreshes itself.

Then starts `drl serve --no-worker` on that database and times, one request after another over
a keep-alive connection (auth off, as embedded):
- GET / (the runs page: the newest 25 of all the experiments), and the fragment it polls;
- GET /runs/{id} (the real run's page), and the fragment it polls while the run is active;
- GET /healthz, the baseline: each figure's `x_healthz_p50` is its p50 / healthz's p50.
Prints one JSON object: requests/s, p50 and p99 latency in milliseconds, bytes per response.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api import drl_serve, throwaway_postgres, timed  # noqa: E402

# The real run: every stage in seconds on a CPU, three t to probe and chart.
RUN_SPEC = {
    "name": "bench-dashboard",
    "dataset": {"name": "digits", "train_limit": 300, "test_limit": 100},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [], "latent_dim": 4},
    "train": {"iterations": 30, "batch_size": 16, "warmup": 10, "checkpoint_every": 30,
              "log_every": 10, "device": "cpu"},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 200},
    "sample": {"sampler": "pc", "steps": 10, "count": 4},
}
OWNERS = ("ada", "ben", "cleo", "dmitri", "eun")
# The other experiments' states, one in twenty each: 14 succeeded, 2 failed, 2 cancelled, 1
# training, 1 queued (in creation order, so every page of the runs page has the same mix).
STATE_CYCLE = ["succeeded"] * 14 + ["failed"] * 2 + ["cancelled"] * 2 + ["running", "queued"]


def seed(settings, experiments: int, points: int) -> dict:
    """The database's rows and the real run's files (see the module docstring); the real
    run's id and what was stored."""
    import sqlalchemy as sa

    from drl_core.db import make_engine, session_factory, upgrade_database
    from drl_core.models import MetricPoint
    from drl_core.queue import make_celery
    from worker.context import WorkerResources
    from worker.tasks import run_job

    upgrade_database(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    celery = make_celery(settings)   # the embedded filesystem queue under home: never consumed
    try:
        owners = users(sessions, OWNERS)
        with sessions() as session:
            real_id, job_ids = create(session, RUN_SPEC, owners[0], celery)
        resources = WorkerResources(settings)
        try:
            outcomes = [run_job(job_id, resources, celery) for job_id in job_ids]
        finally:
            resources.dispose()
        if outcomes != ["succeeded"] * len(job_ids):
            raise SystemExit(f"bench: the real run's jobs ended {outcomes}")
        with sessions() as session:
            keys = long_curves(session, real_id, job_ids[0], points)
            metric_rows = session.scalar(sa.select(sa.func.count()).where(MetricPoint.experiment_id == real_id))
        with sessions() as session:
            states = many_experiments(session, real_id, experiments - 1, owners, celery)
    finally:
        celery.close()
        engine.dispose()
    return {"run_id": real_id, "metric_keys": keys, "metric_rows": metric_rows, "states": states}


def users(sessions, names: tuple[str, ...]) -> list[int]:
    from drl_core.models import User

    with sessions() as session:
        made = [User(name=name) for name in names]
        session.add_all(made)
        session.commit()
        return [user.id for user in made]


def create(session, spec: dict, owner_id: int, celery) -> tuple[int, list[int]]:
    from drl_core.experiments import create_experiment
    from drl_engine.spec import parse_spec

    experiment, _ = create_experiment(session, parse_spec(spec), owner_id, None, celery_app=celery)
    return experiment.id, [job.id for job in experiment.jobs]


def long_curves(session, experiment_id: int, train_job_id: int, points: int) -> list[str]:
    """Replace the train job's progress points by `points` steps of each key its reports
    recorded: a decaying, noisy loss and flat noise for the rest. The code-usage points (at
    its checkpoints, under their own prefix) stay as they are. The keys replaced."""
    import numpy as np
    import sqlalchemy as sa

    from drl_core.code_usage_metrics import PREFIX as CODE_USAGE_PREFIX
    from drl_core.models import MetricPoint

    progress = sa.and_(MetricPoint.experiment_id == experiment_id,
                       sa.not_(MetricPoint.key.startswith(CODE_USAGE_PREFIX, autoescape=True)))
    keys = sorted(session.scalars(sa.select(MetricPoint.key).where(progress).distinct()))
    session.execute(sa.delete(MetricPoint).where(progress))
    rng = np.random.default_rng(0)
    steps = np.arange(1, points + 1) * 10
    for key in keys:
        trend = 400 * np.exp(-steps / steps[-1] * 5) + 20 if key == "loss" else np.full(points, 100.0)
        values = trend * np.exp(rng.normal(0, 0.05, points))
        session.execute(sa.insert(MetricPoint), [
            {"experiment_id": experiment_id, "job_id": train_job_id, "key": key, "step": int(s),
             "value": float(v)} for s, v in zip(steps, values)])
    session.commit()
    return keys


def many_experiments(session, real_id: int, count: int, owners: list[int], celery) -> dict[str, int]:
    """`count` experiments through create_experiment, then put in STATE_CYCLE's states in four
    UPDATEs (and the real run's probe summary as each succeeded one's); how many of each."""
    import sqlalchemy as sa

    from drl_core.artifact_keys import ArtifactKind, probes_key
    from drl_core.job_states import JobKind, JobStatus
    from drl_core.models import Artifact, Job

    total = RUN_SPEC["train"]["iterations"]
    by_state: dict[str, list[int]] = {state: [] for state in STATE_CYCLE}
    for i in range(count):
        spec = {**RUN_SPEC, "name": f"bench-{i:04d}"}
        experiment_id, _ = create(session, spec, owners[i % len(owners)], celery)
        by_state[STATE_CYCLE[i % len(STATE_CYCLE)]].append(experiment_id)

    def set_jobs(ids: list[int], status: JobStatus, kinds: tuple[str, ...] | None = None, **values) -> None:
        where = [Job.experiment_id.in_(ids)] + ([Job.kind.in_(kinds)] if kinds else [])
        session.execute(sa.update(Job).where(*where).values(status=status.value, **values))

    train, later = (JobKind.TRAIN.value,), tuple(k.value for k in JobKind if k != JobKind.TRAIN)
    set_jobs(by_state["succeeded"], JobStatus.SUCCEEDED)
    set_jobs(by_state["succeeded"], JobStatus.SUCCEEDED, train, step=total, total=total,
             images_per_s=900.0)
    set_jobs(by_state["failed"], JobStatus.FAILED, train, step=10, total=total,
             error="bench: a seeded failure")
    set_jobs(by_state["failed"] + by_state["cancelled"], JobStatus.CANCELLED, later)
    set_jobs(by_state["cancelled"], JobStatus.CANCELLED, train, step=20, total=total)
    set_jobs(by_state["running"], JobStatus.RUNNING, train, step=15, total=total, loss=120.0,
             images_per_s=850.0, worker="bench@host")

    probes = session.scalars(sa.select(Artifact).where(
        Artifact.experiment_id == real_id, Artifact.kind == ArtifactKind.PROBES.value,
        Artifact.key.like("%.json"))).one()
    columns = [c.key for c in sa.inspect(Artifact).column_attrs if c.key not in ("id", "job_id")]
    copied = {name: getattr(probes, name) for name in columns}
    session.execute(sa.insert(Artifact), [
        copied | {"experiment_id": experiment_id, "key": probes_key(experiment_id)}
        for experiment_id in by_state["succeeded"]])
    session.commit()
    return {state: len(ids) for state, ids in by_state.items()}


def run(args: argparse.Namespace) -> dict:
    from drl_core.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="drl-bench-dashboard-"))
    with throwaway_postgres(args.postgres_url) as database_url:
        settings = Settings(home=home, database_url=database_url, broker_url=None,
                            artifact_backend="local", torch_threads=1)
        began = time.perf_counter()
        seeded = seed(settings, args.experiments, args.points)
        seed_s = time.perf_counter() - began
        run_id = seeded["run_id"]
        with drl_serve(home, "--no-worker", env={"DRL_DATABASE_URL": database_url}) as url, \
                httpx.Client(base_url=url, timeout=120) as client:
            runs_page = client.get("/")
            run_page = client.get(f"/runs/{run_id}")
            check_pages(runs_page.text, run_page.text, run_id, args)
            results = {"healthz": timed(client, args.requests, lambda c: c.get("/healthz"))}
            results["runs_page"] = timed(client, args.requests, lambda c: c.get("/"))
            results["runs_fragment"] = timed(client, args.requests,
                                             lambda c: c.get("/fragments/runs", params={"page": 1}))
            results["run_page"] = timed(client, args.requests, lambda c: c.get(f"/runs/{run_id}"))
            results["run_fragment"] = timed(client, args.requests,
                                            lambda c: c.get(f"/fragments/runs/{run_id}"))

    floor = results["healthz"]["p50_ms"]
    for figures in results.values():
        figures["x_healthz_p50"] = figures["p50_ms"] / floor
    return {"baseline": "GET /healthz p50 latency on the same server",
            "server": "drl serve --no-worker on PostgreSQL", "quick": args.quick,
            "experiments": args.experiments, "states": seeded["states"],
            "run_page_metric_points": {"per_key": args.points, "keys": seeded["metric_keys"],
                                       "rows": seeded["metric_rows"]},
            "seed_s": seed_s, **results}


def check_pages(runs_html: str, run_html: str, run_id: int, args: argparse.Namespace) -> None:
    """The pages timed are the ones meant: every experiment counted, live, the run's curve."""
    if f"{args.experiments} experiments" not in runs_html or "hx-trigger=\"every" not in runs_html:
        raise SystemExit(f"bench: the runs page does not show {args.experiments} live experiments")
    if f"Training loss ({args.points} points" not in run_html:
        raise SystemExit(f"bench: run {run_id}'s page does not show its {args.points} loss points")
    for chart_id in ("loss", "accuracy", "code-usage"):
        if f'data-chart-id="{chart_id}"' not in run_html:
            raise SystemExit(f"bench: run {run_id}'s page has no {chart_id} chart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000, help="in the database (default 1000)")
    parser.add_argument("--points", type=int, default=20_000,
                        help="the real run's metric points per key (default 20000)")
    parser.add_argument("--requests", type=int, default=50, help="per page (default 50)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "DRL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="a server where this user may CREATE DATABASE (default $DRL_BENCH_POSTGRES_URL "
             "or the local test server)")
    parser.add_argument("--quick", action="store_true", help="few experiments, points and requests: a smoke run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.experiments, args.points, args.requests = 30, 600, 5
    if args.experiments < 1 or args.points < 1:
        parser.error("--experiments and --points must be at least 1")

    text = json.dumps(run(args), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
