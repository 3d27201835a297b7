"""The OpenAPI document states the bounds the server enforces: a value out of a declared
bound is a 422 naming the field, and a value at the bound is not refused for its size. And it
declares bearer auth exactly where the server checks a token: nowhere with auth off.

The app runs on an SQLite file and the embedded queue (as `drl serve` does): every request
here is answered by validation or by a lookup that finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from drl_core.settings import Settings
from drl_engine.spec import SampleSpec

PROBLEM = "application/problem+json"


def app_settings(sqlite_url: str, tmp_path: Path, auth: bool = False) -> Settings:
    return Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=None,
                    auth_enabled=auth)


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(sqlite_url, tmp_path))) as test_client:
        yield test_client


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]


def value_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property (`anyOf: [{...}, {type: null}]`)."""
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    assert len(branches) == 1, schema
    return branches[0]


def bounds(schema: dict[str, Any]) -> dict[str, Any]:
    keywords = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern")
    return {k: v for k, v in schema.items() if k in keywords}


def query_parameter(doc: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    return next(p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)["schema"]


def assert_422_naming(response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert field in {e["field"] for e in body["errors"]}, body
    return body


# Each (component, property) of a list whose entries are bounded, and the entries' bounds.
LIST_ENTRY_BOUNDS = [
    ("ModelSpec", "channel_mult", {"minimum": 1}),
    ("EvaluateSpec", "label_budgets", {"minimum": 2}),
    ("EvaluateSpec", "t_grid", {"minimum": 0.0, "maximum": 1.0}),
    ("VDMSpec", "fourier_exponents", {"minimum": 0, "maximum": 16}),
]


@pytest.mark.parametrize("name, prop, expected", LIST_ENTRY_BOUNDS)
def test_list_entries_state_their_bounds(client: TestClient, name: str, prop: str,
                                         expected: dict[str, Any]) -> None:
    doc = client.get("/openapi.json").json()
    assert bounds(component(doc, name)["properties"][prop]["items"]) == expected


def test_the_sample_request_states_the_spec_bounds(client: TestClient) -> None:
    """Every field of the sample request has SampleSpec's own bounds, not a copy of them."""
    doc = client.get("/openapi.json").json()
    request = component(doc, "SampleRequest")["properties"]
    spec = SampleSpec.model_json_schema()["properties"]
    assert set(request) == set(spec)
    for name, schema in request.items():
        assert bounds(value_schema(schema)) == bounds(spec[name]), name
    # the ones the issue found unbounded
    assert bounds(value_schema(request["steps"])) == {"minimum": 1, "maximum": 100_000}
    assert bounds(value_schema(request["t_init"])) == {"exclusiveMinimum": 0, "maximum": 1.0}
    assert bounds(value_schema(request["eps"])) == {"exclusiveMinimum": 0, "exclusiveMaximum": 0.5}
    assert bounds(value_schema(request["corrector_steps"])) == {"minimum": 0, "maximum": 10}


def test_the_embeddings_page_limit_is_the_one_the_server_enforces(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    limit = query_parameter(doc, "/embeddings", "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, 10_000)
    params = {"experiment": 424242, "t": 0.5}
    for format in ("json", "npy"):
        assert_422_naming(client.get("/embeddings", params=params | {"limit": 10_001, "format": format}),
                          "limit")
        # at the bound: past validation, to the lookup of an experiment that does not exist
        assert client.get("/embeddings", params=params | {"limit": 10_000, "format": format}).status_code == 404


@pytest.mark.parametrize("spec, field", [
    ({"model": {"channel_mult": [0]}}, "model.channel_mult.0"),
    ({"evaluate": {"label_budgets": [0]}}, "evaluate.label_budgets.0"),
    ({"evaluate": {"t_grid": [0.5, -0.1]}}, "evaluate.t_grid.1"),
    ({"vdm": {"fourier_exponents": [17]}}, "vdm.fourier_exponents.0"),
])
def test_a_spec_out_of_a_stated_bound_is_a_422_naming_the_entry(client: TestClient, spec: dict,
                                                                field: str) -> None:
    body = assert_422_naming(client.post("/experiments", json=spec), field)
    assert field in body["detail"]


@pytest.mark.parametrize("request_body, field", [
    ({"steps": -1}, "steps"),
    ({"t_init": -0.5}, "t_init"),
    ({"eps": -1e-3}, "eps"),
    ({"corrector_steps": -1}, "corrector_steps"),
    ({"count": 0}, "count"),
])
def test_a_sample_request_out_of_a_stated_bound_is_a_422_naming_the_field(
        client: TestClient, request_body: dict, field: str) -> None:
    # refused by validation, before the (missing) experiment is looked up
    assert_422_naming(client.post("/experiments/424242/samples", json=request_body), field)
    assert client.post("/experiments/424242/samples", json={"steps": 1}).status_code == 404


def test_many_bad_entries_of_one_list_are_one_problem(client: TestClient) -> None:
    body = assert_422_naming(client.post("/experiments", json={"evaluate": {"t_grid": [2.0] * 5000}}),
                             "evaluate.t_grid.0")
    assert len(body["errors"]) == 1 and "4999 more entries alike" in body["errors"][0]["message"]


# --- JSON types and what comes before validation ---------------------------------------


@pytest.mark.parametrize("path, body, field", [
    ("/experiments", {"sample": {"seed": False}}, "sample.seed"),
    ("/experiments", {"train": {"lr": "1e-3"}}, "train.lr"),
    ("/experiments", {"model": {"channel_mult": [1, "2"]}}, "model.channel_mult.1"),
    ("/experiments/424242/samples", {"steps": True}, "steps"),
    ("/experiments/424242/samples", {"eps": "0.1"}, "eps"),
    ("/experiments/424242/encodings", {"t": [False]}, "t.0"),
])
def test_a_value_of_another_json_type_than_stated_is_a_422(client: TestClient, path: str,
                                                           body: dict, field: str) -> None:
    """The document says integer or number: `false` and "0.1" are neither (pydantic's lax
    mode took them, as 0 and 0.1)."""
    assert_422_naming(client.post(path, json=body), field)


def test_a_whole_number_written_with_a_fraction_is_an_integer(client: TestClient) -> None:
    """As JSON Schema counts it: 2.0 is the integer 2, and an integer is a number."""
    assert client.post("/experiments/424242/samples", json={"steps": 10.0, "count": 4.0}).status_code == 404
    assert client.post("/experiments/424242/encodings", json={"t": [0, 1]}).status_code == 404
    spec = {"model": {"base_channels": 16.0, "channel_mult": [1.0, 2.0]}, "train": {"lr": 1},
            "dataset": {"name": "npz", "path": "missing.npz"}}
    # refused for its dataset file only, not for the numbers
    body = assert_422_naming(client.post("/experiments", json=spec), "dataset.path")
    assert [e["field"] for e in body["errors"]] == ["dataset.path"]


def test_every_operation_with_a_body_declares_the_answers_given_before_its_route(
        client: TestClient) -> None:
    """400 (a body that is not UTF-8, a Content-Length that is not a number), 413 and 415."""
    doc = client.get("/openapi.json").json()
    with_body = {(path, method): op for path, ops in doc["paths"].items()
                 for method, op in ops.items() if "requestBody" in op}
    assert ("/experiments", "post") in with_body
    for key, op in with_body.items():
        assert {"400", "413", "415"} <= set(op["responses"]), key
    response = client.post("/experiments", content=b'{"name": "\xff"}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.headers["content-type"].startswith(PROBLEM)


# --- authentication ----------------------------------------------------------------------

UNPROTECTED = {("/healthz", "get"), ("/readyz", "get")}


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_bearer_auth_is_declared_only_when_the_server_checks_it(sqlite_url: str, tmp_path: Path,
                                                                 auth: bool) -> None:
    with TestClient(create_app(app_settings(sqlite_url, tmp_path, auth))) as client:
        doc = client.get("/openapi.json").json()
        assert client.get("/experiments").status_code == (401 if auth else 200)
    schemes = doc["components"].get("securitySchemes", {})
    operations = {(path, method): op for path, ops in doc["paths"].items() for method, op in ops.items()}
    secured = {key for key, op in operations.items() if op.get("security")}
    if auth:
        assert [(s["type"], s["scheme"]) for s in schemes.values()] == [("http", "bearer")]
        assert secured == set(operations) - UNPROTECTED
        assert all(operations[key]["security"] == [{name: []} for name in schemes] for key in secured)
    else:
        assert schemes == {} and secured == set()
