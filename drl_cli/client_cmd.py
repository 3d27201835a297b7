"""`drl submit`, `drl status`, `drl watch`, `drl logs`, `drl cancel`, `drl resume`,
`drl delete`, `drl embeddings`, `drl samples`: the HTTP client side of the service.

The server is `--url`, else $DRL_API_URL, else http://127.0.0.1:8000; the token is `--token`,
else $DRL_TOKEN. A server error is printed as its problem's detail on one line; the exit
code is 2 for a 4xx (the request was wrong) and 1 for a 5xx or an unreachable server.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .errors import EXIT_FAILED, EXIT_USAGE, CLIError
from .tables import format_table

if TYPE_CHECKING:
    from drl_engine.spec import ExperimentSpec

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
NPY_PAGE_ROWS = 10_000  # the server's largest page (api/routers/embeddings.py MAX_PAGE_ROWS)
# How often `drl logs -f` asks again for a job that is not running (queued, or retrying), and
# `drl watch` reads the experiment.
FOLLOW_RETRY_S = 1.0
WATCH_POLL_S = 1.0
# The statuses of a job or an experiment that has finished (drl_core.job_states.TERMINAL,
# spelled out: the client commands import nothing of the service).
FINISHED = ("succeeded", "failed", "cancelled")


class ApiClient:
    """Calls the drl server; every failure becomes a one-line CLIError."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._checked(self._send(method, path, **kwargs))

    def request_if_found(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """`request`, but None for a 404 (something that may not exist)."""
        response = self._send(method, path, **kwargs)
        return None if response.status_code == 404 else self._checked(response)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise CLIError(f"cannot reach the drl server at {self.url} ({_reason(err)})",
                           EXIT_FAILED) from None

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise CLIError(problem_detail(response),
                           EXIT_USAGE if response.status_code < 500 else EXIT_FAILED)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it comes (no read timeout: a followed log may be
        quiet for long); an error status is a CLIError as for `request`."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            with self._http.stream(method, path, timeout=timeout, **kwargs) as response:
                if response.is_error:
                    response.read()
                yield self._checked(response)
        except httpx.TransportError as err:
            raise CLIError(f"lost the drl server at {self.url} ({_reason(err)})",
                           EXIT_FAILED) from None

    def close(self) -> None:
        self._http.close()


def _reason(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.ConnectError):
        return "connection refused" if "refused" in str(err).lower() else str(err) or "cannot connect"
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    return str(err) or type(err).__name__


def problem_detail(response: httpx.Response) -> str:
    """One line: the problem's detail (RFC 9457), else the status and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        text = str(body["detail"])
    else:
        text = f"{response.status_code} {response.reason_phrase}: {response.text[:200]}"
    return f"server answered {response.status_code}: " + " ".join(text.split())


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
    p.set_defaults(func=submit)

    p = sub.add_parser("status", parents=[common], help="list experiments, or show one with its jobs")
    p.add_argument("id", nargs="?", type=int, help="experiment id (omit to list the latest)")
    p.add_argument("--limit", type=int, default=20, help="experiments to list (default 20)")
    p.set_defaults(func=status)

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


def client_for(args: argparse.Namespace) -> ApiClient:
    url = args.url or os.environ.get("DRL_API_URL") or DEFAULT_URL
    return ApiClient(url, args.token or os.environ.get("DRL_TOKEN") or None)


def submit(args: argparse.Namespace) -> int:
    # Validated here first, with the overrides `drl run` takes: the same messages as drl run.
    from .overrides import spec_with_overrides

    spec = spec_with_overrides(args.spec, args.overrides, iterations=args.iterations)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    client = client_for(args)
    try:
        response = client.request("POST", "/experiments", json=submitted_fields(spec),
                                  headers=headers)
    finally:
        client.close()
    experiment = response.json()
    if response.status_code == 200:
        print(f"experiment {experiment['id']} already exists for this idempotency key", file=sys.stderr)
    print(experiment["id"])
    return 0


def submitted_fields(spec: ExperimentSpec) -> dict[str, Any]:
    """What `drl submit` sends: the fields the spec file sets, not every default.

    The server applies its own defaults, so a client and a server of different drl versions
    agree on every spec whose fields both know; the full dump would carry each field this
    client knows, and a server without one refuses the whole spec as an unknown field.
    """
    return spec.model_dump(mode="json", exclude_unset=True)


def status(args: argparse.Namespace) -> int:
    client = client_for(args)
    try:
        if args.id is None:
            page = client.json("GET", "/experiments", params={"limit": args.limit})
            print(format_experiments(page["items"], page["total"]))
        else:
            print(format_experiment(client.json("GET", f"/experiments/{args.id}")))
    finally:
        client.close()
    return 0


def cancel(args: argparse.Namespace) -> int:
    return _act(args, "cancel")


def resume(args: argparse.Namespace) -> int:
    return _act(args, "resume")


def _act(args: argparse.Namespace, action: str) -> int:
    """POST /experiments/ID/<action>, then show the experiment as `drl status ID` does."""
    client = client_for(args)
    try:
        print(format_experiment(client.json("POST", f"/experiments/{args.id}/{action}")))
    finally:
        client.close()
    return 0


def delete(args: argparse.Namespace) -> int:
    client = client_for(args)
    try:
        client.request("DELETE", f"/experiments/{args.id}")
    finally:
        client.close()
    print(f"deleted experiment {args.id}")
    return 0


def logs(args: argparse.Namespace) -> int:
    """GET /jobs/JOB/log; with -f, followed: the server streams while the job runs and ends
    the stream when it does not (finished, or queued: waiting or retrying), so the stream is
    asked for again, from the byte reached, until the job has finished."""
    out = sys.stdout.buffer
    client = client_for(args)
    try:
        if not args.follow:
            out.write(client.request("GET", f"/jobs/{args.job}/log").content)
            return 0
        offset = 0
        while True:
            with client.stream("GET", f"/jobs/{args.job}/log",
                               params={"follow": "true", "offset": offset}) as response:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    out.flush()
                    offset += len(chunk)
            if client.json("GET", f"/jobs/{args.job}")["status"] in FINISHED:
                return 0
            time.sleep(FOLLOW_RETRY_S)
    finally:
        out.flush()
        client.close()


def watch(args: argparse.Namespace) -> int:
    """A tqdm bar for the experiment's running job (a new bar when another job starts) until
    the experiment ends."""
    from tqdm import tqdm

    client = client_for(args)
    bar: tqdm | None = None
    shown: int | None = None   # the job the bar is for
    try:
        while True:
            experiment = client.json("GET", f"/experiments/{args.id}")
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
        client.close()
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

    client = client_for(args)
    pages: list[np.ndarray] = []
    offset, total = 0, None
    try:
        while total is None or offset < total:
            response = client.request("GET", "/embeddings", params={
                "experiment": args.id, "t": args.t, "split": args.split, "offset": offset,
                "limit": NPY_PAGE_ROWS, "format": "npy"})
            total = int(response.headers["X-Total-Count"])
            page = np.load(io.BytesIO(response.content), allow_pickle=False)
            if len(page) == 0:
                break
            pages.append(page)
            offset += len(page)
        # 404: a dataset without labels (or a server older than the labels endpoint).
        labels = client.request_if_found("GET", "/embeddings/labels",
                                         params={"experiment": args.id, "split": args.split})
    finally:
        client.close()
    array = np.concatenate(pages) if pages else np.zeros((0, 0), np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, array)
    print(f"wrote {args.out}: {array.shape[0]} x {array.shape[1] if array.ndim == 2 else 0} "
          f"({args.split} split, t={args.t:g})")
    if labels is None:
        print(f"no labels for experiment {args.id}'s {args.split} split", file=sys.stderr)
    else:
        path = labels_path(args.out)
        path.write_bytes(labels.content)
        print(f"wrote {path}: the class of each row")
    return 0


def labels_path(out: Path) -> Path:
    """Where `drl embeddings -o codes.npy` puts the labels: codes_labels.npy beside it, as drl
    run names DIR/embeddings/<split>_labels.npy."""
    return out.with_name(f"{out.stem}_labels.npy")


def samples(args: argparse.Namespace) -> int:
    client = client_for(args)
    try:
        items = client.json("GET", f"/experiments/{args.id}/samples")
        print(format_samples(items))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item.get("url"):
                    path = args.out / f"sample_{item['job_id']}.png"
                    path.write_bytes(client.request("GET", item["url"]).content)
                    print(f"wrote {path}")
    finally:
        client.close()
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
