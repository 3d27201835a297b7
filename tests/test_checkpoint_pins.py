"""Checkpoint retention with pins (issue 10 item 6): the store keeps a training's newest
KEEP_LAST checkpoints plus the pinned ones.

- the train job's retention (worker/jobs/train.py upload_checkpoint, through a JobContext as
  a worker builds one) spares a pinned checkpoint through later steps, until it is unpinned;
  a checkpoint pinned after the job read it as unpinned is spared too (PostgreSQL and SQLite);
- POST/DELETE /experiments/{id}/checkpoints/{step}/pin: the owner's or an admin's (403 for
  anyone else), 404 for a step not stored; GET .../checkpoints lists steps and pins to anyone;
- deleting the experiment deletes every checkpoint, pinned or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.auth import create_token
from api.main import create_app
from drl_core.artifact_keys import ArtifactKind, checkpoint_key, checkpoint_step, experiment_prefix
from drl_core.artifacts import LocalArtifactStore
from drl_core.checkpoints import set_pinned, stored_checkpoints
from drl_core.db import session_factory
from drl_core.models import Artifact, Experiment, Job, User
from drl_core.settings import Settings
from drl_engine.checkpoint import KEEP_LAST
from worker.context import JobContext, upsert_artifact
from worker.jobs.train import upload_checkpoint

pytest.register_assert_rewrite("test_fencing")
from test_fencing import contexts, running_job  # noqa: E402,F401

PROBLEM = "application/problem+json"


# --- the train job's retention -----------------------------------------------------------


def stored(session: Session, experiment_id: int) -> list[tuple[int, bool]]:
    session.expire_all()
    return [(checkpoint_step(row.key), row.pinned) for row in stored_checkpoints(session, experiment_id)]


def stored_files(ctx: JobContext) -> list[int]:
    return sorted(checkpoint_step(key) for key in ctx.store.list(experiment_prefix(ctx.experiment_id)))


def test_a_pinned_checkpoint_survives_later_steps_retention_until_unpinned(
        db_engine: sa.Engine, contexts: Callable[[Job, int], JobContext], tmp_path: Path) -> None:
    assert KEEP_LAST == 2   # the steps below are written for it
    with session_factory(db_engine)() as session:
        job = running_job(session)
        experiment_id, ctx = job.experiment_id, contexts(job, 1)

        def save(step: int) -> None:   # what the trainer's on_checkpoint callback does
            path = tmp_path / f"ckpt_{step}.pt"
            path.write_bytes(b"weights at step %d" % step)
            upload_checkpoint(ctx, path, step)

        save(6)
        save(12)
        assert set_pinned(session, experiment_id, 6, True).pinned
        save(18)
        save(24)
        assert stored(session, experiment_id) == [(6, True), (18, False), (24, False)]
        assert stored_files(ctx) == [6, 18, 24]

        assert not set_pinned(session, experiment_id, 6, False).pinned
        save(30)   # unpinned, it is retention's again
        assert stored(session, experiment_id) == [(24, False), (30, False)]
        assert stored_files(ctx) == [24, 30]
        assert set_pinned(session, experiment_id, 6, True) is None   # gone: nothing to pin


def test_a_checkpoint_pinned_after_retention_read_it_is_spared(
        db_engine: sa.Engine, contexts: Callable[[Job, int], JobContext], tmp_path: Path) -> None:
    with session_factory(db_engine)() as session:
        job = running_job(session)
        experiment_id, ctx = job.experiment_id, contexts(job, 1)
        for step in (6, 12):
            path = tmp_path / f"ckpt_{step}.pt"
            path.write_bytes(b"w")
            ctx.store_file(checkpoint_key(experiment_id, step), path, ArtifactKind.CHECKPOINT,
                           {"step": step})
        oldest = ctx.artifacts(ArtifactKind.CHECKPOINT)[0]   # read unpinned ...
        set_pinned(session, experiment_id, 6, True)            # ... pinned before the delete
        assert ctx.delete_artifact(oldest) is False
        assert stored(session, experiment_id) == [(6, True), (12, False)]
        assert stored_files(ctx) == [6, 12]
        assert ctx.delete_artifact(ctx.artifacts(ArtifactKind.CHECKPOINT)[1]) is True
        assert stored_files(ctx) == [6]


# --- the API -----------------------------------------------------------------------------


@pytest.fixture
def session(pg_engine: sa.Engine) -> Iterator[Session]:
    with session_factory(pg_engine)() as s:
        yield s


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, pg_engine: sa.Engine) -> Settings:
    return Settings(home=tmp_path / "home", database_url=pg_url, artifact_dir=tmp_path / "artifacts",
                    auth_enabled=True)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.resolved_artifact_dir)


@pytest.fixture
def headers(session: Session) -> dict[str, dict[str, str]]:
    """Bearer headers of alice and bob (users) and root (an admin)."""
    tokens = {name: create_token(session, name, "laptop", admin=name == "root")
              for name in ("alice", "bob", "root")}
    session.commit()
    return {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}


@pytest.fixture
def experiment_id(session: Session, store: LocalArtifactStore, headers) -> int:
    """An experiment of alice's with checkpoints stored at steps 6 and 12."""
    alice = session.scalar(sa.select(User).where(User.name == "alice"))
    experiment = Experiment(name="e", spec={"dataset": {"name": "digits"}}, owner=alice)
    session.add(experiment)
    session.commit()
    for step in (6, 12):
        stored_file = store.put_bytes(checkpoint_key(experiment.id, step), b"weights %d" % step)
        upsert_artifact(session, experiment.id, None, ArtifactKind.CHECKPOINT, stored_file, {"step": step})
    session.commit()
    return experiment.id


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def test_pins_are_the_owners_or_an_admins_and_the_listing_everyones(
        client: TestClient, headers, experiment_id: int) -> None:
    pin = f"/experiments/{experiment_id}/checkpoints/6/pin"
    for method in ("POST", "DELETE"):
        refused = assert_problem(client.request(method, pin, headers=headers["bob"]), 403)
        assert refused["owner"] == "alice" and refused["type"] == "urn:drl:problem:forbidden"
    assert refused["detail"] == (f"only the owner of experiment {experiment_id} (alice) or an "
                                 "admin may unpin checkpoints of it; you are bob")
    assert_problem(client.post(pin), 401)

    pinned = client.post(pin, headers=headers["alice"])
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["step"] == 6 and pinned.json()["pinned"] is True
    assert client.post(pin, headers=headers["alice"]).json()["pinned"] is True   # twice: no change
    listed = client.get(f"/experiments/{experiment_id}/checkpoints", headers=headers["bob"])
    assert listed.status_code == 200
    assert [(c["step"], c["pinned"]) for c in listed.json()] == [(6, True), (12, False)]
    assert listed.json()[0]["size"] == len(b"weights 6") and len(listed.json()[0]["sha256"]) == 64

    unpinned = client.delete(pin, headers=headers["root"])   # an admin may
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] is False


def test_a_step_that_is_not_stored_is_a_404_listing_the_stored_ones(
        client: TestClient, headers, experiment_id: int) -> None:
    for method in ("POST", "DELETE"):
        missing = assert_problem(client.request(
            method, f"/experiments/{experiment_id}/checkpoints/7/pin", headers=headers["alice"]), 404)
        assert missing["type"] == "urn:drl:problem:not-found" and missing["stored_steps"] == [6, 12]
        assert missing["detail"] == (f"experiment {experiment_id} has no stored checkpoint at "
                                     "step 7; stored steps: 6, 12")
    assert_problem(client.post(f"/experiments/{experiment_id + 1}/checkpoints/6/pin",
                               headers=headers["alice"]), 404)
    assert_problem(client.get(f"/experiments/{experiment_id + 1}/checkpoints",
                              headers=headers["alice"]), 404)
    assert_problem(client.post(f"/experiments/{experiment_id}/checkpoints/-1/pin",
                               headers=headers["alice"]), 422)


def test_deleting_the_experiment_deletes_its_checkpoints_pinned_or_not(
        client: TestClient, headers, experiment_id: int, session: Session,
        store: LocalArtifactStore) -> None:
    assert client.post(f"/experiments/{experiment_id}/checkpoints/6/pin",
                       headers=headers["alice"]).status_code == 200
    assert client.delete(f"/experiments/{experiment_id}", headers=headers["alice"]).status_code == 204
    assert store.list(experiment_prefix(experiment_id)) == []
    session.expire_all()
    assert session.scalars(sa.select(Artifact)).all() == []
    assert_problem(client.get(f"/experiments/{experiment_id}/checkpoints", headers=headers["alice"]), 404)
