"""Schemathesis against the OpenAPI document, with auth on: every operation, with generated
requests that the document declares valid and invalid, answers no server error, refuses
every invalid request with a 4xx, does not refuse a valid one as invalid, and answers with
the statuses, content types and bodies the document declares.

The app runs as deployed with auth on (a bearer token on every request, datasets confined
to the data folder and checked at submit), on this module's PostgreSQL database (its integer,
text and JSON columns refuse more than SQLite's) and the embedded queue, which nothing consumes.
A few experiments are seeded through the API, and generated path ids are drawn from them
about half the time, so that operations reach real objects and not only 404s. No operation is
left out: GET /jobs/{id}/log?follow=true streams only while its job runs, and none runs here.

Seeded by a fixed seed: the same requests on every run (in CI, a failure reproduces).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from api.auth import create_token
from api.main import create_app
from api.problems import NO_CODE_SCORE, NO_ENCODER
from drl_core.db import session_factory
from drl_core.settings import Settings

SEED = 13
# Per operation, in the fuzzing phase (the coverage phase adds its boundary cases).
MAX_EXAMPLES = 20

TINY_SPEC = {
    "dataset": {"name": "digits", "train_limit": 300},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
    "train": {"iterations": 30, "batch_size": 16},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 200},
    "sample": {"steps": 10, "count": 4},
}
# vdm has no encoder: its embeddings, probes and code usage are a 422 of type no-encoder.
VDM_SPEC = {**TINY_SPEC, "model": {**TINY_SPEC["model"], "kind": "vdm"}}


def refused_beyond_the_schema(response: schemathesis.Response) -> bool:
    """Whether a 422 refuses a schema-valid request for a reason no JSON Schema can state:
    - the experiment's model kind (type no-encoder, no-code-conditioned-score);
    - an Idempotency-Key already used with another spec (the server remembers the first);
    - the spec's cross-field rules (sde.sigma_max > sde.sigma_min, 'grid' codes need
      latent_dim 2, ...), the dataset files the service checks at submit, and a sample
      request checked against its experiment's spec. These messages start with the field
      they are about (as api/problems.field_in_message reads them), which pydantic's message
      for a field's own bound ('Input should be greater than 0') never does.
    """
    if response.status_code != 422:
        return False
    problem = response.json()
    if problem["type"] in (NO_ENCODER, NO_CODE_SCORE):
        return True
    errors = problem.get("errors") or []
    return bool(errors) and all(
        (e["field"] == "Idempotency-Key" and "already used" in e["message"])
        or e["message"].startswith(e["field"])
        for e in errors)


def positive_data_acceptance_within_the_schema(ctx: Any, response: schemathesis.Response,
                                               case: schemathesis.Case) -> bool | None:
    """schemathesis's positive_data_acceptance, but for refusals beyond the schema."""
    if refused_beyond_the_schema(response):
        return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [not_a_server_error, negative_data_rejection, positive_data_acceptance_within_the_schema,
          status_code_conformance, content_type_conformance, response_schema_conformance]


def submit(client: TestClient, token: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/experiments", json=spec, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return response.json()


def seed_objects(client: TestClient, mine: str, theirs: str) -> dict[str, list[int]]:
    """The objects generated ids are aimed at: the fuzzer's experiment (the first, at the id
    the coverage phase tries first) with a sample job, its vdm experiment (no encoder) and
    another user's (a 403 to change it)."""
    experiments = [submit(client, mine, TINY_SPEC), submit(client, mine, VDM_SPEC),
                   submit(client, theirs, TINY_SPEC)]
    sample = client.post(f"/experiments/{experiments[0]['id']}/samples", json={"count": 2},
                         headers={"Authorization": f"Bearer {mine}"})
    assert sample.status_code == 202, sample.text
    jobs = [job["id"] for experiment in experiments for job in experiment["jobs"]]
    return {"experiment_id": [e["id"] for e in experiments], "job_id": [*jobs, sample.json()["id"]]}


def toward(seeded: dict[str, list[int]]):
    """A before_generate_path_parameters hook: about half the time, the ids are seeded ones
    (a generated id in [1, 2^31 - 1] would almost never name an object)."""
    def hook(_context: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
        def aim(parameters: dict[str, Any] | None, pick: st.DataObject) -> dict[str, Any] | None:
            if not isinstance(parameters, dict):
                return parameters
            return {name: pick.draw(st.sampled_from(seeded[name])) if name in seeded else value
                    for name, value in parameters.items()}
        return st.one_of(st.tuples(strategy, st.data()).map(lambda pair: aim(*pair)), strategy)
    return hook


@pytest.fixture
def tokens(pg_engine: sa.Engine) -> dict[str, str]:
    """Bearer tokens of two users: the fuzzer's own, and another user's."""
    with session_factory(pg_engine)() as session:
        made = {name: create_token(session, name, "ci") for name in ("fuzzer", "other")}
        session.commit()
    return made


@pytest.fixture
def client(pg_url: str, tmp_path: Path, data_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path / "home", database_url=pg_url, broker_url=None,
                              auth_enabled=True, data_dir=data_dir))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def api_schema(client: TestClient, tokens: dict[str, str]) -> Any:
    seeded = seed_objects(client, tokens["fuzzer"], tokens["other"])
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {tokens['fuzzer']}"},
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": {
            # 403 another user's experiment, 404 an unknown id, 409 a result not ready
            "positive_data_acceptance": {"expected-statuses": ["2xx", 403, 404, 409]},
            "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 415, 422]},
        },
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, config=config)
    schema.hook("before_generate_path_parameters")(toward(seeded))
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")
FUZZ_SETTINGS = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@schema.exclude(method="DELETE").parametrize()
@FUZZ_SETTINGS
def test_the_api_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


# DELETE runs on a database and seed of its own: the operations run in document order, and
# a delete among them would leave the objects the later ones aim at gone (404s only).
@schema.include(method="DELETE").parametrize()
@FUZZ_SETTINGS
def test_delete_conforms_to_the_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


# --- what the generators never send ------------------------------------------------------
# Each was a 500 before; schemathesis sends standard JSON and no string longer than a schema
# bound, so these stay here as plain requests.


@pytest.mark.parametrize("path, body, field", [
    ("/experiments", '{"dataset": {"name": "digits"}, "sde": {"sigma_max": Infinity}}', "sde.sigma_max"),
    ("/experiments/{id}/samples", '{"grid_range": Infinity}', "grid_range"),
], ids=["spec", "sample-request"])
def test_infinity_is_a_422_naming_the_field(client: TestClient, tokens: dict[str, str],
                                            path: str, body: str, field: str) -> None:
    """Python's JSON parser reads Infinity (and NaN), which JSON has not: a number field with
    no upper bound took it, and PostgreSQL's JSON column refused to store it (a 500)."""
    mine = {"Authorization": f"Bearer {tokens['fuzzer']}", "Content-Type": "application/json"}
    experiment = submit(client, tokens["fuzzer"], TINY_SPEC)
    response = client.post(path.format(id=experiment["id"]), content=body, headers=mine)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize("dataset, field", [
    ({"name": "npz", "path": "x" * 300}, "dataset.path"),
    ({"name": "npz", "path": "x/" * 2100}, "dataset.path"),
    ({"name": "mnist", "data_dir": "x" * 300}, "dataset.data_dir"),
], ids=["name-too-long", "path-too-long", "folder-name-too-long"])
def test_a_dataset_path_too_long_for_the_filesystem_is_a_422(client: TestClient, tokens: dict[str, str],
                                                            dataset: dict, field: str) -> None:
    """Looking the file up failed with ENAMETOOLONG (an OSError, not "no such file"): a 500."""
    response = client.post("/experiments", json={**TINY_SPEC, "dataset": dataset},
                           headers={"Authorization": f"Bearer {tokens['fuzzer']}"})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == field and "cannot be read (File name too long)" in error["message"]
