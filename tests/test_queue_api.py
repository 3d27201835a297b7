"""Sharing the workers through the API, with auth on, on real PostgreSQL: GET /queue (the
queued jobs in the order they will run, with positions and estimated starts), an
experiment's priority (`high` for admins only: 403 for anyone else), and the per-user
limit on queued jobs (429 problem+json naming it) at every POST that queues work.

No worker runs: the jobs stay queued (their messages wait in a Redis prefix of this
module's own)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.auth import create_token
from api.main import create_app
from drl.client import Client
from drl.errors import Forbidden, RateLimited
from drl_cli.client_cmd import format_queue
from drl_core.db import session_factory
from drl_core.job_states import JobStatus, transition
from drl_core.models import Experiment, Job
from drl_core.settings import Settings

pytest.register_assert_rewrite("worker_fixtures")
from worker_fixtures import TINY_SPEC, service_settings_for  # noqa: E402

pytest_plugins = ["worker_fixtures"]

PROBLEM = "application/problem+json"
PIPELINE = 4   # TINY_SPEC's jobs: train, encode, probe, sample


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, broker_prefix: str, pg_engine: sa.Engine) -> Settings:
    # (pg_engine: the tables are emptied after each test)
    return service_settings_for(pg_url, tmp_path / "home", broker_prefix, auth_enabled=True)


@pytest.fixture
def session(pg_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(pg_engine)() as s:
        yield s


@pytest.fixture
def users(session: Session) -> dict[str, dict[str, str]]:
    """Bearer headers of alice, bob, carol and root (an admin)."""
    tokens = {name: create_token(session, name, "laptop", admin=name == "root")
              for name in ("alice", "bob", "carol", "root")}
    session.commit()
    return {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}


def app_client(settings: Settings, **overrides) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as test_client:
        yield test_client


def submit(client: TestClient, headers: dict[str, str], priority: str | None = None,
           status: int = 201, **more_headers: str) -> dict:
    params = {"priority": priority} if priority else {}
    response = client.post("/experiments", json=TINY_SPEC, params=params,
                           headers=headers | more_headers)
    assert response.status_code == status, response.text
    return response.json()


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- GET /queue --------------------------------------------------------------------------


def test_the_queue_lists_jobs_in_the_order_they_will_run(
        client: TestClient, users: dict[str, dict[str, str]], session: Session) -> None:
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    a1, a2 = submit(client, alice)["id"], submit(client, alice)["id"]
    b1 = submit(client, bob)["id"]
    carols = submit(client, carol, priority="low")
    c1 = carols["id"]
    # A training of bob's that took 100 s: the median for train jobs.
    old = Experiment(name="old", owner_id=session.get(Experiment, b1).owner_id, spec={})
    finished = Job(experiment=old, kind="train", queue="gpu")
    session.add_all([old, finished])
    session.commit()
    transition(session, finished, JobStatus.RUNNING, worker="w")
    transition(session, finished, JobStatus.SUCCEEDED)
    finished.started_at = finished.finished_at - timedelta(seconds=100)
    session.commit()

    answer = client.get("/queue", headers=carol)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    now = parse_time(body["generated_at"])
    gpu = [item for item in body["items"] if item["queue"] == "gpu"]
    assert [i["position"] for i in gpu] == list(range(1, len(gpu) + 1))
    trains = [(i["experiment_id"], i["owner"]) for i in gpu if i["kind"] == "train"]
    # alice and carol never ran anything here (alice's older job first); bob last ran.
    assert trains == [(a1, "alice"), (c1, "carol"), (b1, "bob"), (a2, "alice")]
    first, second = gpu[0], gpu[1]
    assert (first["kind"], first["ready"], first["priority"]) == ("train", True, "normal")
    assert parse_time(first["estimated_start"]) == now
    assert parse_time(second["estimated_start"]) == now + timedelta(seconds=100)
    assert (second["experiment_name"], second["priority"]) == (carols["name"], "low")
    starts = [parse_time(i["estimated_start"]) for i in gpu]
    assert starts == sorted(starts)
    encode = next(i for i in gpu if i["kind"] == "encode")
    assert encode["ready"] is False and encode["depends_on_id"] is not None
    cpu = client.get("/queue", params={"queue": "cpu"}, headers=alice).json()["items"]
    assert {i["kind"] for i in cpu} == {"probe"} and len(cpu) == 4
    assert [i["position"] for i in cpu] == [1, 2, 3, 4]
    assert assert_problem(client.get("/queue", params={"queue": "tpu"}, headers=alice), 422)
    assert_problem(client.get("/queue"), 401)


# --- priority ----------------------------------------------------------------------------


def test_high_priority_is_for_admins(client: TestClient, users: dict[str, dict[str, str]]) -> None:
    refused = assert_problem(client.post("/experiments", json=TINY_SPEC,
                                         params={"priority": "high"}, headers=users["alice"]), 403)
    assert refused["priority"] == "high"
    assert "only an admin may submit an experiment at priority high" in refused["detail"]
    assert submit(client, users["root"], "high")["priority"] == "high"
    assert submit(client, users["alice"], "low")["priority"] == "low"
    assert submit(client, users["alice"])["priority"] == "normal"
    invalid = assert_problem(client.post("/experiments", json=TINY_SPEC,
                                         params={"priority": "urgent"}, headers=users["root"]), 422)
    assert [e["field"] for e in invalid["errors"]] == ["priority"]
    listed = client.get("/experiments", headers=users["bob"]).json()["items"]
    assert sorted(e["priority"] for e in listed) == ["high", "low", "normal"]


def test_an_idempotent_replay_keeps_its_priority(client: TestClient,
                                                 users: dict[str, dict[str, str]]) -> None:
    root = users["root"]
    first = submit(client, root, "high", **{"Idempotency-Key": "k"})
    assert submit(client, root, "high", status=200, **{"Idempotency-Key": "k"})["id"] == first["id"]
    conflict = client.post("/experiments", json=TINY_SPEC, params={"priority": "low"},
                           headers=root | {"Idempotency-Key": "k"})
    assert "with priority high, not low" in assert_problem(conflict, 422)["detail"]


# --- the queued-jobs limit ---------------------------------------------------------------


def assert_limit(response, queued: int, requested: int, limit: int) -> None:
    body = assert_problem(response, 429)
    assert body["type"] == "urn:drl:problem:limit-exceeded"
    assert (body["limit"], body["limit_value"]) == ("max_queued_jobs_per_user", limit)
    assert (body["queued"], body["requested"]) == (queued, requested)
    assert "max_queued_jobs_per_user" in body["detail"]
    assert f"{queued} queued jobs already; this request would queue {requested} more" in body["detail"]


def test_each_post_that_queues_work_is_refused_past_the_limit(
        settings: Settings, users: dict[str, dict[str, str]], session: Session) -> None:
    alice, bob = users["alice"], users["bob"]
    with app_client(settings, max_queued_jobs_per_user=PIPELINE + 2) as client:
        first = submit(client, alice, **{"Idempotency-Key": "first"})["id"]
        assert_limit(client.post("/experiments", json=TINY_SPEC, headers=alice), 4, 4, 6)
        # A replay queues nothing: it answers as before, limit or not.
        assert submit(client, alice, status=200, **{"Idempotency-Key": "first"})["id"] == first
        submit(client, bob)   # another user's queue is theirs
        samples = f"/experiments/{first}/samples"
        assert client.post(samples, json={"count": 4}, headers=alice).status_code == 202
        encodings = f"/experiments/{first}/encodings"
        assert client.post(encodings, json={"t": [0.25]}, headers=alice).status_code == 202
        assert_limit(client.post(samples, json={"count": 4}, headers=alice), 6, 1, 6)
        assert_limit(client.post(encodings, json={"t": [0.75]}, headers=alice), 6, 1, 6)

        # Cancelled, the six jobs leave the queue; a new experiment queues four.
        assert client.post(f"/experiments/{first}/cancel", headers=alice).status_code == 200
        second = submit(client, alice)["id"]
        # Resuming the first would queue its six again: ten.
        assert_limit(client.post(f"/experiments/{first}/resume", headers=alice), 4, 6, 6)
        assert client.post(f"/experiments/{second}/cancel", headers=alice).status_code == 200
        assert client.post(f"/experiments/{first}/resume", headers=alice).status_code == 202
    queued = session.scalar(sa.select(sa.func.count(Job.id)).where(
        Job.status == JobStatus.QUEUED.value, Job.experiment_id.in_([first, second])))
    assert queued == 6
    with app_client(settings) as client:   # no limit (0, the default)
        for _ in range(3):
            submit(client, alice)


# --- the Python client and drl queue ------------------------------------------------------


def test_the_client_and_drl_queue(settings: Settings, users: dict[str, dict[str, str]]) -> None:
    token = {name: headers["Authorization"].removeprefix("Bearer ") for name, headers in users.items()}
    with app_client(settings, max_queued_jobs_per_user=PIPELINE) as test_client:
        def client_of(name: str) -> Client:
            return Client("http://testserver", token[name], transport=test_client._transport)

        with client_of("alice") as alice, client_of("root") as root:
            mine = alice.submit(TINY_SPEC, priority="low")
            assert mine["priority"] == "low"
            with pytest.raises(Forbidden, match="only an admin may submit"):
                alice.submit(TINY_SPEC, priority="high")
            with pytest.raises(RateLimited, match="max_queued_jobs_per_user") as refused:
                alice.submit(TINY_SPEC)
            assert refused.value.status == 429
            urgent = root.submit(TINY_SPEC, priority="high")
            page = alice.queue()
            cpu = [(i["job_id"], i["position"]) for i in alice.queue("cpu")["items"]]
            assert cpu == [(i["job_id"], i["position"]) for i in page["items"] if i["queue"] == "cpu"]
    # Neither ever ran a job: equal turns, so the higher priority first.
    gpu = [(i["experiment_id"], i["kind"]) for i in page["items"] if i["queue"] == "gpu"]
    assert gpu[:2] == [(urgent["id"], "train"), (mine["id"], "train")]
    table = format_queue(page).splitlines()
    assert table[0].split() == ["QUEUE", "POS", "JOB", "KIND", "EXPERIMENT", "OWNER", "PRIORITY",
                                "STARTS"]
    first, second = table[1].split(), table[2].split()
    assert first[:2] == ["gpu", "1"] and first[3:] == ["train", str(urgent["id"]), "root", "high", "now"]
    assert second[:2] == ["gpu", "2"] and second[5:7] == ["alice", "low"]
    assert " ".join(second[7:]) == "in 10 min"   # after root's training (600 s: none ran yet)
    encode = next(line for line in table if " encode " in line)
    assert encode.endswith("(waits)")
    assert table[-1].startswith(f"({len(page['items'])} queued jobs; starts are estimates")
