"""`drl submit`, `drl status`, `drl queue`, `drl watch`, `drl logs`, `drl cancel`,
`drl resume`, `drl delete`, `drl embeddings`, `drl samples`: the service from the command line, through
the Python client (drl/client.py: one HTTP layer for both, with its retries).

The server is `--url`, else $DRL_API_URL, else http://127.0.0.1:8000; the token is `--token`,
else $DRL_TOKEN. A server error is printed as its problem's detail on one line; the exit
code is 2 for a 4xx (the request was wrong) and 1 for a 5xx or an unreachable server.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drl.client import FINISHED, Client
from drl.connection import DEFAULT_URL
from drl.errors import ClientError, DrlError

from .errors import EXIT_FAILED, EXIT_USAGE, CLIError
from .tables import format_table

# How often `drl watch` reads the experiment.
WATCH_POLL_S = 1.0


@contextmanager
def connected(args: argparse.Namespace) -> Iterator[Client]:
    """A Client on --url and --token (else $DRL_API_URL and $DRL_TOKEN), closed after the
    block; a failure in the block becomes a one-line CLIError: 2 for a 4xx, 1 for a 5xx or
    an unreachable server."""
    client = Client(args.url, args.token)
    try:
        yield client
    except DrlError as err:
        raise CLIError(cli_message(err), EXIT_USAGE if isinstance(err, ClientError)
                       else EXIT_FAILED) from None
    finally:
        client.close()


def cli_message(err: DrlError) -> str:
    """'server answered 404: experiment 7 not found', or why there was no answer."""
    return err.detail if err.status is None else f"server answered {err.status}: {err.detail}"


def add_parser(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None,
                        help=f"server URL (default: $DRL_API_URL, else {DEFAULT_URL})")
    common.add_argument("--token", default=None, help="bearer token (default: $DRL_TOKEN)")

    p = sub.add_parser("submit", parents=[common], help="submit an experiment spec to the server",
                       description="Validate SPEC (YAML or JSON) and submit it; prints the "
                                   "experiment id.")
    p.add_argument("spec", type=Path, help="experiment spec (.yaml, .yml or .json)")
    p.add_argument("--iterations", type=int, help="override train.iterations")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set model.base_channels=16 (repeatable)")
    p.add_argument("--idempotency-key", help="a retry with the same key returns the same experiment")
    p.add_argument("--priority", choices=["low", "normal", "high"], default=None,
                   help="orders it among your own queued jobs (default normal; high: admins only)")
    p.set_defaults(func=submit)

    p = sub.add_parser("status", parents=[common], help="list experiments, or show one with its jobs")
    p.add_argument("id", nargs="?", type=int, help="experiment id (omit to list the latest)")
    p.add_argument("--limit", type=int, default=20, help="experiments to list (default 20)")
    p.set_defaults(func=status)

    p = sub.add_parser("queue", parents=[common], help="the queued jobs, in the order they will run",
                       description="Every queued job with its position on its queue and an "
                                   "estimated start. The order: owners take turns for the "
                                   "workers; of an owner's jobs, the higher priority, then the "
                                   "older, first.")
    p.add_argument("--queue", choices=["gpu", "cpu"], default=None, help="only this queue's jobs")
    p.set_defaults(func=queue)

    p = sub.add_parser("watch", parents=[common],
                       help="a live progress bar of an experiment until it ends",
                       description="Show the running job's progress (train steps, encoded t, "
                                   "...) until the experiment ends; exit 0 if it succeeded, 1 "
                                   "if it failed or was cancelled.")
    p.add_argument("id", type=int, help="experiment id")
    p.set_defaults(func=watch)

    p = sub.add_parser("logs", parents=[common], help="print a job's whole log",
                       description="Print every line job JOB logged, in all its runs (job ids: "
                                   "`drl status ID`).")
    p.add_argument("job", type=int, help="job id")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing lines as they come until the job has finished")
    p.set_defaults(func=logs)

    p = sub.add_parser("cancel", parents=[common],
                       help="cancel an experiment's queued and running jobs",
                       description="Queued jobs are cancelled at once; running ones stop at "
                                   "their next heartbeat (a training saves its checkpoint "
                                   "first, so `drl resume ID` continues from it).")
    p.add_argument("id", type=int, help="experiment id")
    p.set_defaults(func=cancel)

    p = sub.add_parser("resume", parents=[common],
                       help="resume a failed or cancelled experiment from its last checkpoint",
                       description="Every failed or cancelled job runs again as a new attempt; "
                                   "training continues from its last stored checkpoint.")
    p.add_argument("id", type=int, help="experiment id")
    p.set_defaults(func=resume)

    p = sub.add_parser("delete", parents=[common],
                       help="delete an experiment, its jobs and all its artifacts",
                       description="Cancel what runs, then delete the experiment with its jobs, "
                                   "checkpoints, embeddings, samples and logs. There is no undo.")
    p.add_argument("id", type=int, help="experiment id")
    p.set_defaults(func=delete)

    p = sub.add_parser("embeddings", parents=[common], help="download embeddings at one t as .npy")
    p.add_argument("id", type=int, help="experiment id")
    p.add_argument("--t", type=float, required=True, help="diffusion time in [0, 1]")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output .npy file; the labels go beside it as <name>_labels.npy")
    p.set_defaults(func=embeddings)

    p = sub.add_parser("samples", parents=[common],
                       help="list an experiment's sample jobs with FD-LeNet; download their PNGs")
    p.add_argument("id", type=int, help="experiment id")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="folder to write each finished job's grid to, as sample_<job>.png")
    p.set_defaults(func=samples)


def submit(args: argparse.Namespace) -> int:
    # Validated here first, with the overrides `drl run` takes: the same messages as drl run.
    from .overrides import spec_with_overrides

    spec = spec_with_overrides(args.spec, args.overrides, iterations=args.iterations)
    with connected(args) as client:
        experiment, created = client.create_experiment(spec, idempotency_key=args.idempotency_key,
                                                       priority=args.priority)
    if not created:
        print(f"experiment {experiment['id']} already exists for this idempotency key", file=sys.stderr)
    print(experiment["id"])
    return 0


def status(args: argparse.Namespace) -> int:
    with connected(args) as client:
        if args.id is None:
            page = client.experiments(limit=args.limit)
            print(format_experiments(page["items"], page["total"]))
        else:
            print(format_experiment(client.experiment(args.id)))
    return 0


def cancel(args: argparse.Namespace) -> int:
    with connected(args) as client:
        print(format_experiment(client.cancel(args.id)))
    return 0


def resume(args: argparse.Namespace) -> int:
    with connected(args) as client:
        print(format_experiment(client.resume(args.id)))
    return 0


def delete(args: argparse.Namespace) -> int:
    with connected(args) as client:
        client.delete(args.id)
    print(f"deleted experiment {args.id}")
    return 0


def logs(args: argparse.Namespace) -> int:
    """GET /jobs/JOB/log; with -f, followed until the job has finished (across its retries
    and hand-backs: Client.follow_log)."""
    with connected(args) as client:
        if not args.follow:
            sys.stdout.write(client.log(args.job))
            return 0
        for text in client.follow_log(args.job):
            sys.stdout.write(text)
            sys.stdout.flush()
    return 0


def watch(args: argparse.Namespace) -> int:
    """A tqdm bar for the experiment's running job (a new bar when another job starts) until
    the experiment ends."""
    from tqdm import tqdm

    bar: tqdm | None = None
    shown: int | None = None   # the job the bar is for
    with connected(args) as client:
        try:
            while True:
                experiment = client.experiment(args.id)
                job = current_job(experiment["jobs"])
                if job is not None and job["id"] != shown:
                    if bar is not None:
                        bar.close()
                    bar, shown = tqdm(desc=f"{job['kind']} (job {job['id']})", unit="step"), job["id"]
                if bar is not None and job is not None:
                    update_bar(bar, job)
                if experiment["status"] in FINISHED:
                    break
                time.sleep(WATCH_POLL_S)
        finally:
            if bar is not None:
                bar.close()
    if experiment["status"] == "succeeded":
        print(f"experiment {args.id} succeeded")
        return 0
    if experiment["status"] == "failed":
        raise CLIError(f"experiment {args.id} failed at {experiment['failed_step']}: "
                       f"{experiment.get('error')}", EXIT_FAILED)
    raise CLIError(f"experiment {args.id} was cancelled", EXIT_FAILED)


def current_job(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The job to show: the first running (or being cancelled) one, else the first queued one,
    else the last one."""
    for wanted in (("running", "cancelling"), ("queued",)):
        for job in jobs:
            if job["status"] in wanted:
                return job
    return jobs[-1] if jobs else None


def update_bar(bar: Any, job: dict[str, Any]) -> None:
    progress = job.get("progress") or {}
    if progress.get("total") and bar.total != progress["total"]:
        bar.total = progress["total"]
    bar.n = progress.get("step") or 0
    postfix = {"status": job["status"]}
    if progress.get("loss") is not None:
        postfix["loss"] = f"{progress['loss']:.4g}"
    bar.set_postfix(postfix, refresh=False)
    bar.refresh()


def embeddings(args: argparse.Namespace) -> int:
    import numpy as np

    with connected(args) as client:
        codes, labels = client.embeddings(args.id, args.t, split=args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, codes)
    print(f"wrote {args.out}: {codes.shape[0]} x {codes.shape[1] if codes.ndim == 2 else 0} "
          f"({args.split} split, t={args.t:g})")
    if labels is None:
        print(f"no labels for experiment {args.id}'s {args.split} split", file=sys.stderr)
    else:
        path = labels_path(args.out)
        np.save(path, labels)
        print(f"wrote {path}: the class of each row")
    return 0


def labels_path(out: Path) -> Path:
    """Where `drl embeddings -o codes.npy` puts the labels: codes_labels.npy beside it, as drl
    run names DIR/embeddings/<split>_labels.npy."""
    return out.with_name(f"{out.stem}_labels.npy")


def queue(args: argparse.Namespace) -> int:
    with connected(args) as client:
        print(format_queue(client.queue(args.queue)))
    return 0


def samples(args: argparse.Namespace) -> int:
    with connected(args) as client:
        items = client.samples(args.id)
        print(format_samples(items))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item.get("url"):
                    path = args.out / f"sample_{item['job_id']}.png"
                    path.write_bytes(client.sample_png(args.id, item["job_id"]))
                    print(f"wrote {path}")
    return 0


# --- formatting --------------------------------------------------------------------------


def _progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if p.get("step") is None:
        return ""
    text = f"{p['step']}/{p['total']}" if p.get("total") else str(p["step"])
    if p.get("loss") is not None:
        text += f" loss {p['loss']:.4g}"
    return text


def format_experiments(items: list[dict[str, Any]], total: int) -> str:
    rows = []
    for e in items:
        train = next((j for j in e["jobs"] if j["kind"] == "train"), None)
        rows.append([str(e["id"]), e["name"], e["status"], _progress(train) if train else "",
                     e["created_at"][:19].replace("T", " ")])
    shown = f"{len(items)} of {total} experiments"
    return format_table(["ID", "NAME", "STATUS", "TRAIN", "CREATED"], rows) + f"\n({shown})"


def format_queue(page: dict[str, Any]) -> str:
    """One row per queued job: its queue and position, the job, whose, and when it should
    start (in minutes from the server's now; "waits" for a job that waits for its upstream
    step or retry time, "never" for one whose upstream step failed)."""
    now = datetime.fromisoformat(page["generated_at"].replace("Z", "+00:00"))
    rows = []
    for item in page["items"]:
        start = item.get("estimated_start")
        if start is None:
            when = "never"
        else:
            minutes = (datetime.fromisoformat(start.replace("Z", "+00:00")) - now).total_seconds() / 60
            when = "now" if minutes < 0.5 else f"in {minutes:.0f} min"
            when += "" if item["ready"] else " (waits)"
        rows.append([item["queue"], str(item["position"]), str(item["job_id"]), item["kind"],
                     str(item["experiment_id"]), item.get("owner") or "-", item["priority"], when])
    return (format_table(["QUEUE", "POS", "JOB", "KIND", "EXPERIMENT", "OWNER", "PRIORITY",
                          "STARTS"], rows)
            + f"\n({len(rows)} queued jobs; starts are estimates: running jobs end as their "
              "progress says, queued ones take the median time of their kind)")


def format_experiment(e: dict[str, Any]) -> str:
    lines = [f"experiment {e['id']} {e['name']!r}: {e['status']}"
             + (f" (owner {e['owner']})" if e.get("owner") else "")]
    if e.get("failed_step"):
        lines.append(f"failed at {e['failed_step']}: {e.get('error')}")
    rows = [[str(j["id"]), j["kind"], j["status"], _progress(j), f"{j['attempt']}/{j['max_attempts']}",
             " ".join((j.get("error") or "").split())[:80]] for j in e["jobs"]]
    lines.append(format_table(["JOB", "KIND", "STATUS", "PROGRESS", "ATTEMPT", "ERROR"], rows))
    if e.get("provenance"):
        lines.extend(format_provenance(e["provenance"]))
    summary = e.get("summary") or {}
    # Best t chosen on the validation split, with the test value there; the untrained control's
    # beside it, so that an untrained code's accuracy is not read as learned.
    for label, key in (("best t", "best_t"), ("untrained control", "control_best_t")):
        if summary.get(key):
            lines.append(f"{label}: " + ", ".join(
                f"{k} {'-' if v['value'] is None else format(v['value'], '.3f')} at t={v['t']:g}"
                for k, v in summary[key].items()))
    return "\n".join(lines)


def format_provenance(p: dict[str, Any]) -> list[str]:
    """What trained it, in three lines: the code, the machine, the data."""
    gpu = "".join(f", {name} {p[key]}" for name, key in (("CUDA", "cuda"), ("cuDNN", "cudnn"))
                  if p.get(key))
    dirty = " (modified)" if p.get("git_dirty") else ""
    data = p.get("dataset") or {}
    fingerprint = data.get("sha256") or f"unknown ({data.get('error')})"
    return [f"code: drl {p['drl_version']} at commit {p['git_commit']}{dirty}; Python "
            f"{p['python']}, torch {p['torch']}{gpu}",
            f"trained on: {p['host']}, {p['device']} ({p['device_model']})",
            f"data: {data.get('name')}, sha256 {fingerprint}"]


def fd_cell(fd: dict[str, Any] | None) -> str:
    """'value [ci_low, ci_high]' (the value alone for jobs stored before intervals), '*' when
    a smoke run. Written here, not imported from drl_engine.fd_interval: the client loads
    no torch."""
    if not fd or fd.get("value") is None:
        return ""
    interval = ("" if fd.get("ci_low") is None or fd.get("ci_high") is None
                else f" [{fd['ci_low']:.3f}, {fd['ci_high']:.3f}]")
    return f"{fd['value']:.3f}{interval}" + ("*" if fd.get("smoke") else "")


def format_samples(items: list[dict[str, Any]]) -> str:
    rows = []
    for s in items:
        fd = s.get("fd_lenet") or {}
        rows.append([str(s["job_id"]), s["status"], str(s.get("count") or ""), s.get("sampler") or "",
                     str(s.get("steps") or ""), str(s.get("nfe") or ""), s.get("code_source") or "",
                     fd_cell(fd), fd_cell(fd.get("floor"))])
    return (format_table(["JOB", "STATUS", "COUNT", "SAMPLER", "STEPS", "NFE", "CODES", "FD-LENET",
                          "REAL FLOOR"], rows)
            + f"\n({len(items)} sample jobs; FD-LeNet: Frechet distance to the test split in "
              "LeNet features, not an FID, with its 95% bootstrap interval; real floor: as many "
              "training images against the test split; *: fewer than 1,000 samples, a smoke "
              "run, not a result)")
