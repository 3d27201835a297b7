"""The embedded service from the command line: `drl serve` in a subprocess (SQLite, local
artifacts, filesystem broker and a real worker process, all under a temporary --home), driven
by `drl submit`, `drl status` and `drl embeddings`; then stopped, leaving no process behind.
And `drl token create` prints a token that the app accepts; `drl token list` shows tokens
without them, `drl token revoke` makes the app refuse them at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from drl_core.settings import Settings

STARTUP_TIMEOUT_S = 60
FINISH_TIMEOUT_S = 150
STOP_TIMEOUT_S = 40

TINY_SPEC = {
    "name": "cli-tiny",
    "dataset": {"name": "digits", "train_limit": 200, "test_limit": 120},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [], "latent_dim": 6},
    "train": {"iterations": 12, "batch_size": 16, "device": "cpu", "log_every": 4,
              "checkpoint_every": 6, "warmup": 2},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 100},
    "sample": {"steps": 4, "count": 4, "corrector_steps": 0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drl_env(home: Path, data_dir: Path) -> dict[str, str]:
    """This environment without DRL_* settings (the service must run on its defaults under
    --home), one torch thread per process (the machine is shared)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRL_")}
    return env | {"DRL_HOME": str(home), "DRL_DATA_DIR": str(data_dir), "DRL_TORCH_THREADS": "1",
                  "DRL_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}


def drl(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drl_cli.main", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def group_left_after_kill(pgid: int, timeout: float = 3.0) -> list[int]:
    """`process_group_members` once they had `timeout` s to die: a SIGKILLed process still
    shows in /proc until the kernel has torn it down, which on a loaded machine takes a
    moment; one still there after that was never killed."""
    deadline = time.monotonic() + timeout
    while (members := process_group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def start_serve(home: Path, data_dir: Path, log_path: Path) -> tuple[str, subprocess.Popen, dict[str, str]]:
    """`drl serve` with `home` on a free port, up and answering; (url, process, env)."""
    port = free_port()
    env = drl_env(home, data_dir)
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "drl_cli.main", "serve", "--port", str(port), "--home", str(home),
             "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url, process, env
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"drl serve did not come up:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture
def served(tmp_path: Path, data_dir: Path) -> Iterator[tuple[str, subprocess.Popen, dict[str, str]]]:
    """`drl serve` on a free port; yields (url, process, env). Killed if a test leaves it up."""
    url, process, env = start_serve(tmp_path / "home", data_dir, tmp_path / "serve.log")
    yield url, process, env
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_submit_status_embeddings_and_clean_stop(served, tmp_path: Path) -> None:
    url, serve, env = served
    banner = (tmp_path / "serve.log").read_text()
    assert f"serving {url}" in banner
    worker_pid = int(re.search(r"worker pid (\d+)", banner).group(1))

    # drl submit takes drl run's overrides: the file's name and budget are replaced.
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({**TINY_SPEC, "name": "from-the-file",
                                         "train": {**TINY_SPEC["train"], "iterations": 500}}))
    submitted = drl("submit", str(spec_file), "--iterations", "12", "--set", "name=cli-tiny",
                    "--url", url, env=env)
    assert submitted.returncode == 0, submitted.stderr
    experiment_id = int(submitted.stdout.strip())

    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while True:
        shown = drl("status", str(experiment_id), "--url", url, env=env)
        assert shown.returncode == 0, shown.stderr
        first_line = shown.stdout.splitlines()[0]
        if "succeeded" in first_line or "failed" in first_line or "cancelled" in first_line:
            break
        assert time.monotonic() < deadline, f"not finished in {FINISH_TIMEOUT_S}s:\n{shown.stdout}"
        time.sleep(2)
    assert first_line == f"experiment {experiment_id} 'cli-tiny': succeeded", shown.stdout
    for kind in ("train", "encode", "probe", "sample"):
        assert re.search(rf"\b{kind}\s+succeeded", shown.stdout), shown.stdout
    assert "12/12" in shown.stdout  # the train job's progress

    listing = drl("status", "--url", url, env=env)
    assert re.search(rf"^{experiment_id}\s+cli-tiny\s+succeeded", listing.stdout, re.M), listing.stdout

    out = tmp_path / "emb.npy"
    fetched = drl("embeddings", str(experiment_id), "--t", "0.5", "-o", str(out), "--url", url, env=env)
    assert fetched.returncode == 0, fetched.stderr
    codes = np.load(out)
    assert codes.shape == (120, 6) and codes.dtype == np.float32 and np.isfinite(codes).all()
    labels = np.load(tmp_path / "emb_labels.npy")   # beside the codes, row by row
    assert labels.shape == (120,) and set(labels.tolist()) <= set(range(10))

    # The pipeline's sample job, listed with its FD-LeNet, and its PNG downloaded.
    listed = drl("samples", str(experiment_id), "-o", str(tmp_path / "png"), "--url", url, env=env)
    assert listed.returncode == 0, listed.stderr
    fd = r"\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]"   # value [interval]
    assert re.search(rf"^\d+\s+succeeded\s+\d+\s+pc\s+\d+\s+\d+\s+encoded\s+{fd}\*\s+{fd}$",
                     listed.stdout, re.M), listed.stdout   # *: a smoke run; then the floor
    pngs = list((tmp_path / "png").glob("sample_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # errors: one line, 2 for a 4xx
    missing = drl("embeddings", str(experiment_id), "--t", "0.3", "-o", str(out), "--url", url, env=env)
    assert missing.returncode == 2 and "computed t: 0, 0.5, 1" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    serve.send_signal(signal.SIGTERM)
    serve.wait(STOP_TIMEOUT_S)
    assert group_left_after_kill(worker_pid) == []  # the worker and its pool processes are gone
    assert not Path(f"/proc/{worker_pid}").exists() or \
        Path(f"/proc/{worker_pid}/stat").read_text().split(") ")[1][0] == "Z"


def wait_until(check, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)
    return value


def test_stopping_serve_mid_job_hands_the_job_back_and_the_next_serve_resumes_it(
        served, tmp_path: Path, data_dir: Path) -> None:
    """Ctrl-C with a training running: drl serve is gone within 10 s, with no worker process
    left; the job is queued at the same attempt with its checkpoint stored; the next drl serve
    resumes it at once from there, still at attempt 1 (was: a 20-25 s stop, then ~90 s of a
    job marked running with nobody on it, and an attempt spent)."""
    import sqlalchemy as sa

    from drl_core.models import Artifact, Job

    url, serve, env = served
    worker_pid = int(re.search(r"worker pid (\d+)", (tmp_path / "serve.log").read_text()).group(1))
    spec = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "iterations": 100_000,
                                   "checkpoint_every": 100_000, "log_every": 2}}
    created = httpx.post(f"{url}/experiments", json=spec, timeout=30)
    assert created.status_code == 201, created.text
    train_id = created.json()["jobs"][0]["id"]
    job_url = f"{url}/jobs/{train_id}"
    wait_until(lambda: (httpx.get(job_url, timeout=10).json()["progress"]["step"] or 0) >= 4,
               FINISH_TIMEOUT_S, "the training to report progress")

    started = time.monotonic()
    serve.send_signal(signal.SIGINT)
    serve.wait(STOP_TIMEOUT_S)
    assert time.monotonic() - started < 10, f"drl serve took {time.monotonic() - started:.1f} s"
    assert group_left_after_kill(worker_pid) == []

    home = tmp_path / "home"
    engine = sa.create_engine(Settings(home=home, database_url=None).resolved_database_url)
    with engine.connect() as db:
        job = db.execute(sa.select(Job.status, Job.attempt, Job.step, Job.log_tail, Job.worker)
                         .where(Job.id == train_id)).one()
        stored = db.scalars(sa.select(Artifact.key).where(Artifact.kind == "checkpoint")).all()
    engine.dispose()
    assert (job.status, job.attempt, job.worker) == ("queued", 1, None), job
    assert "handed back to the queue" in job.log_tail[-1], job.log_tail
    (checkpoint,) = stored
    saved_step = int(re.search(r"ckpt_(\d+)\.pt$", checkpoint).group(1))
    assert saved_step >= 4   # the step it reached, not the last periodic checkpoint (none)

    url, serve, _ = start_serve(home, data_dir, tmp_path / "serve-again.log")
    try:
        resumed = wait_until(
            lambda: (j := httpx.get(f"{url}/jobs/{train_id}", timeout=10).json())["status"] == "running"
            and any(f"resuming from checkpoint step {saved_step}" in line for line in j["log_tail"]) and j,
            60, "the next drl serve to resume the job")
        assert resumed["attempt"] == 1, resumed
        assert httpx.post(f"{url}/experiments/{created.json()['id']}/cancel", timeout=30).status_code == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(STOP_TIMEOUT_S)


def test_a_second_ctrl_c_stops_serve_at_once(served, tmp_path: Path) -> None:
    """The first Ctrl-C lets the worker hand its job back (Celery's shutdown alone takes ~7 s
    here); a second one kills the worker's process group and exits at once (was: ignored)."""
    url, serve, _ = served
    log = tmp_path / "serve.log"
    worker_pid = int(re.search(r"worker pid (\d+)", log.read_text()).group(1))
    wait_until(lambda: " ready." in log.read_text(), STARTUP_TIMEOUT_S, "the worker to start")
    serve.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    serve.send_signal(signal.SIGINT)
    assert serve.wait(STOP_TIMEOUT_S) == 130
    assert time.monotonic() - started < 2.5, f"took {time.monotonic() - started:.1f} s"
    assert group_left_after_kill(worker_pid) == []
    assert "drl: stopped at once" in log.read_text()


def test_logs_follow_watch_and_delete(served, tmp_path: Path) -> None:
    """`drl logs JOB -f` prints lines as the training logs them and ends when the job does,
    having printed its whole log; `drl watch ID` shows progress until the experiment ends
    (exit 0: succeeded, 1: cancelled); a job that logs more than 50 lines keeps them all in
    its log (its row, the last 50); `drl delete ID` removes the experiment and its files."""
    import threading

    from drl_core.artifact_keys import experiment_prefix
    from drl_core.artifacts import LocalArtifactStore

    url, serve, env = served

    def drl_process(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "drl_cli.main", *args, "--url", url],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # A training that runs until it is cancelled, followed once it has logged progress.
    endless = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "iterations": 100_000,
                                      "checkpoint_every": 100_000, "log_every": 2}}
    created = httpx.post(f"{url}/experiments", json=endless, timeout=30).json()
    endless_id, train_id = created["id"], created["jobs"][0]["id"]
    log_url = f"{url}/jobs/{train_id}/log"
    wait_until(lambda: "step " in httpx.get(log_url, timeout=10).text, FINISH_TIMEOUT_S,
               "the training's first progress line")
    before = httpx.get(log_url, timeout=10).text
    assert before.startswith("=== attempt 1 on ") and "dataset digits" in before, before
    follower = drl_process("logs", str(train_id), "-f")
    watcher = drl_process("watch", str(endless_id))
    received: list[str] = []

    def read_follower() -> None:
        for line in follower.stdout:
            received.append(line)

    reader = threading.Thread(target=read_follower, daemon=True)
    reader.start()
    # A line logged after the follow began (progress: every 10 s) arrives while the job runs.
    wait_until(lambda: len("".join(received)) > len(before), 60,
               "a line logged after the follow began")
    assert httpx.get(f"{url}/jobs/{train_id}", timeout=10).json()["status"] == "running"
    assert drl("cancel", str(endless_id), "--url", url, env=env).returncode == 0
    assert follower.wait(60) == 0, follower.stderr.read()
    assert watcher.wait(60) == 1
    assert f"experiment {endless_id} was cancelled" in watcher.stderr.read()
    reader.join(10)   # it has read the last lines
    whole = drl("logs", str(train_id), "--url", url, env=env)
    assert whole.returncode == 0 and "".join(received) == whole.stdout == httpx.get(log_url).text

    # A probe job with 26 t values logs two tables of 28 lines: all kept, the row keeps 50.
    fine = {**TINY_SPEC, "evaluate": {**TINY_SPEC["evaluate"],
                                      "t_grid": [round(i * 0.04, 2) for i in range(26)]}}
    created = httpx.post(f"{url}/experiments", json=fine, timeout=30).json()
    fine_id, probe_id = created["id"], created["jobs"][2]["id"]
    watched = drl("watch", str(fine_id), "--url", url, env=env, timeout=FINISH_TIMEOUT_S)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.strip() == f"experiment {fine_id} succeeded"
    assert "probe (job" in watched.stderr   # a bar per job
    full = drl("logs", str(probe_id), "--url", url, env=env).stdout.splitlines()
    tail = httpx.get(f"{url}/jobs/{probe_id}", timeout=10).json()["log_tail"]
    assert len(full) > 50 and len(tail) == 50 and full[-50:] == tail

    store = LocalArtifactStore(tmp_path / "home" / "artifacts")
    stored = store.list(experiment_prefix(fine_id))
    assert f"{experiment_prefix(fine_id)}logs/{probe_id}.log" in stored
    deleted = drl("delete", str(fine_id), "--url", url, env=env)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted experiment {fine_id}"
    gone = drl("status", str(fine_id), "--url", url, env=env)
    assert gone.returncode == 2 and "not found" in gone.stderr
    assert store.list(experiment_prefix(fine_id)) == []

    serve.send_signal(signal.SIGTERM)
    serve.wait(STOP_TIMEOUT_S)


def test_client_errors_and_unreachable_server(tmp_path: Path, data_dir: Path) -> None:
    env = drl_env(tmp_path / "home", data_dir)
    url = f"http://127.0.0.1:{free_port()}"
    down = drl("status", "--url", url, env=env)
    assert down.returncode == 1
    assert down.stderr.strip() == f"drl: error: cannot reach the drl server at {url} (connection refused)"
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("model: {kind: gan}\n")
    rejected = drl("submit", str(bad_spec), "--url", url, env=env)
    assert rejected.returncode == 2 and "model.kind" in rejected.stderr


def test_token_create_prints_a_token_that_authenticates(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    created = drl("token", "create", "alice", "--home", str(home), env=drl_env(home, data_dir))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("drl_") and len(token.splitlines()) == 1
    assert "will not be shown again" in created.stderr

    settings = Settings(home=home, database_url=None, broker_url=None, artifact_dir=None, auth_enabled=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/experiments").status_code == 401
        assert client.get("/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/experiments", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    for database_file in home.glob("drl.db*"):  # the database and its WAL
        assert token.encode() not in database_file.read_bytes()


def test_token_create_admin_makes_an_admin_who_may_change_anyones_experiment(
        tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    env = drl_env(home, data_dir)
    tokens = {}
    for user, flags in (("alice", []), ("root", ["--admin"])):
        created = drl("token", "create", user, *flags, "--home", str(home), env=env)
        assert created.returncode == 0, created.stderr
        tokens[user] = {"Authorization": f"Bearer {created.stdout.strip()}"}
    assert "'root' (an admin) created" in created.stderr
    listed = drl("token", "list", "--home", str(home), env=env).stdout.splitlines()
    users = [(row.split()[0], row.split()[-1]) for row in listed[1:-1]]
    assert users == [("alice", "no"), ("root", "yes")]

    settings = Settings(home=home, database_url=None, broker_url=None, artifact_dir=None,
                        auth_enabled=True, data_dir=data_dir)
    with TestClient(create_app(settings)) as client:
        created = client.post("/experiments", json=TINY_SPEC, headers=tokens["alice"])
        assert created.status_code == 201, created.text
        cancel = f"/experiments/{created.json()['id']}/cancel"
        assert client.post(cancel, headers=tokens["root"]).status_code == 200
        # --no-admin: an ordinary user again, from the next request on
        demoted = drl("token", "create", "root", "--no-admin", "--home", str(home), env=env)
        assert demoted.returncode == 0, demoted.stderr
        assert client.post(cancel, headers=tokens["root"]).status_code == 403


def test_token_list_never_shows_a_token_and_revoke_refuses_it_at_once(tmp_path: Path,
                                                                      data_dir: Path) -> None:
    home = tmp_path / "home"
    env = drl_env(home, data_dir)
    tokens = {}
    for user, label in (("alice", "laptop"), ("alice", "ci"), ("bob", "cli")):
        created = drl("token", "create", user, "--label", label, "--home", str(home), env=env)
        assert created.returncode == 0, created.stderr
        tokens[user, label] = created.stdout.strip()

    settings = Settings(home=home, database_url=None, broker_url=None, artifact_dir=None, auth_enabled=True)
    with TestClient(create_app(settings)) as client:
        def status(user: str, label: str) -> int:
            headers = {"Authorization": f"Bearer {tokens[user, label]}"}
            return client.get("/experiments", headers=headers).status_code

        assert status("alice", "laptop") == 200   # used: the listing says when
        listed = drl("token", "list", "--home", str(home), env=env)
        assert listed.returncode == 0, listed.stderr
        header, *rows, footer = listed.stdout.splitlines()
        assert header.split() == ["USER", "LABEL", "PREFIX", "CREATED", "LAST", "USED", "ADMIN"]
        cells = [row.split() for row in rows]
        assert [(c[0], c[1]) for c in cells] == [("alice", "laptop"), ("alice", "ci"), ("bob", "cli")]
        assert cells[0][-2] != "-" and cells[1][-2] == "-"   # last used: laptop only
        assert [c[-1] for c in cells] == ["no", "no", "no"]
        assert footer == "(3 active tokens; times in UTC)"
        for token, row in zip(tokens.values(), cells):   # its first characters, never it or its hash
            assert token.startswith(row[2].removesuffix("..."))
            assert token not in listed.stdout
            assert hashlib.sha256(token.encode()).hexdigest() not in listed.stdout

        revoked = drl("token", "revoke", "alice", "--label", "laptop", "--home", str(home), env=env)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith("revoked 1 token of 'alice': laptop")
        # at once, by the app that was already running
        assert (status("alice", "laptop"), status("alice", "ci"), status("bob", "cli")) == (401, 200, 200)
        by_prefix = drl("token", "revoke", "bob", "--prefix", cells[2][2], "--home", str(home), env=env)
        assert by_prefix.returncode == 0, by_prefix.stderr
        assert status("bob", "cli") == 401

    active = drl("token", "list", "--home", str(home), env=env).stdout.splitlines()
    assert [line.split()[:2] for line in active[1:-1]] == [["alice", "ci"]]
    everything = drl("token", "list", "--all", "--home", str(home), env=env).stdout.splitlines()
    assert everything[0].split()[-1] == "REVOKED" and len(everything) == 5
    assert drl("token", "list", "bob", "--home", str(home), env=env).stdout.splitlines()[-1] == (
        "(0 active tokens; times in UTC)")

    for args, message in (
            (["carol"], "drl: error: no user 'carol'"),
            (["alice", "--label", "laptop"], "drl: error: user 'alice' has no active token named 'laptop'")):
        refused = drl("token", "revoke", *args, "--home", str(home), env=env)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.startswith(message) and len(refused.stderr.splitlines()) == 1, refused.stderr


def test_samples_table_shows_nfe_the_fd_interval_the_floor_and_smoke_runs() -> None:
    from drl_cli.client_cmd import format_samples
    floor = {"value": 1.5, "ci_low": 0.0, "ci_high": 0.4, "samples": 1000, "split": "train"}
    table = format_samples([
        {"job_id": 2, "status": "succeeded", "count": 1000, "sampler": "heun", "steps": 18,
         "nfe": 35, "code_source": "encoded", "fd_lenet": {"value": 3.25, "ci_low": 1.0,
                                                          "ci_high": 1.5, "smoke": False,
                                                          "floor": floor}},
        {"job_id": 1, "status": "succeeded", "count": 4, "sampler": "pc", "steps": 10,
         "nfe": None, "code_source": "encoded", "fd_lenet": {"value": 7.5, "smoke": True}},
        {"job_id": 3, "status": "queued", "fd_lenet": None}])
    lines = table.splitlines()
    assert lines[0].split() == ["JOB", "STATUS", "COUNT", "SAMPLER", "STEPS", "NFE", "CODES",
                                "FD-LENET", "REAL", "FLOOR"]
    assert re.search(r"^2\s+succeeded\s+1000\s+heun\s+18\s+35\s+encoded\s+"
                     r"3\.250 \[1\.000, 1\.500\]\s+1\.500 \[0\.000, 0\.400\]$", table, re.M), table
    # Stored before intervals and nfe: the value alone, marked as a smoke run.
    assert re.search(r"^1\s+succeeded\s+4\s+pc\s+10\s+encoded\s+7\.500\*$", table, re.M), table
    assert re.search(r"^3\s+queued$", table, re.M), table


def test_submit_sends_only_the_fields_the_spec_file_sets(tmp_path: Path) -> None:
    """So that a client newer than the server (knowing more spec fields) can still submit."""
    from drl.client import submitted_fields
    from drl_engine.spec import load_spec, parse_spec

    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY_SPEC))
    spec = load_spec(spec_file)
    sent = submitted_fields(spec)
    assert sent == TINY_SPEC           # no section or default the file did not write
    assert parse_spec(sent) == spec    # and the server rebuilds the very same spec


def test_a_closed_stdout_ends_quietly_without_a_traceback(tmp_path: Path, data_dir: Path) -> None:
    """`drl status | head`: the reader goes away before the command writes."""
    home = tmp_path / "home"
    process = subprocess.Popen([sys.executable, "-m", "drl_cli.main", "token", "create", "alice",
                                "--home", str(home)], env=drl_env(home, data_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # long before the command has imported what it needs
    stderr = process.stderr.read()
    assert process.wait(60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_a_client_error_is_reported_without_loading_the_engine(tmp_path: Path, data_dir: Path) -> None:
    """An unreachable server is said at once: torch (seconds to import) is never loaded."""
    url = f"http://127.0.0.1:{free_port()}"
    code = ("import sys\nfrom drl_cli.main import main\n"
            f"try:\n    main(['status', '--url', {url!r}])\n"
            "except SystemExit as end:\n    print(end.code, 'torch' in sys.modules)\n")
    shown = subprocess.run([sys.executable, "-c", code], env=drl_env(tmp_path / "home", data_dir),
                           text=True, capture_output=True, timeout=60)
    assert shown.stdout.split() == ["1", "False"], shown.stdout + shown.stderr
    assert "cannot reach the drl server" in shown.stderr


def test_serve_on_a_port_in_use_says_so_before_starting_anything(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = drl("serve", "--port", str(port), "--home", str(home), env=drl_env(home, data_dir))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"drl: error: --port {port}: cannot listen on 127.0.0.1:{port} "
                                      "(address already in use)")
    assert not home.exists()  # no database, no queue folder, no worker
