"""The Python client (drl/client.py) for notebooks, which the drl CLI uses too:

- the README's notebook example, run exactly as written against a real `drl serve`, and the
  client's other methods against the experiment it made (logs, probes, samples, checkpoint
  pins, errors);
- every endpoint of the OpenAPI document has a method that calls it, and the keys the
  client's result types name are the API's;
- error answers raise typed exceptions carrying the problem; connection errors and 503s with
  Retry-After are retried with backoff, a POST cut off after it was sent is not (httpx's
  MockTransport stands in for the server there);
- the server and the token come from the environment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import drl.connection
from drl import errors
from drl.client import Client
from drl.connection import RetryPolicy
from drl.resources import SCHEMAS

pytest.register_assert_rewrite("test_cli_service")
from test_cli_service import FINISH_TIMEOUT_S, STOP_TIMEOUT_S, served  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()


def readme_python_example() -> str:
    (block,) = re.findall(r"```python\n(.*?)\n```", README, re.S)
    return block


# --- against a real drl serve ------------------------------------------------------------


def test_the_readme_example_runs_end_to_end_against_drl_serve(served, monkeypatch) -> None:
    url, serve, _ = served
    example = readme_python_example()
    assert len(example.splitlines()) == 5 and example.startswith("from drl.client import Client")
    monkeypatch.setenv("DRL_API_URL", url)   # as a notebook on the team box is configured
    monkeypatch.delenv("DRL_TOKEN", raising=False)
    monkeypatch.chdir(REPO_ROOT)             # the example's spec path is the repository's
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)   # noqa: S102 - our own README

    codes, labels = namespace["codes"], namespace["labels"]
    assert codes.shape == (120, 6) and codes.dtype == np.float32 and np.isfinite(codes).all()
    assert labels.shape == (120,) and set(labels.tolist()) <= set(range(10))
    client: Client = namespace["client"]
    experiment_id = namespace["experiment"]["id"]
    assert client.experiment(experiment_id)["status"] == "succeeded"

    # The rest of the pipeline's results, through their methods.
    train, encode, probe, sample = client.jobs(experiment_id)
    assert [j["kind"] for j in (train, encode, probe, sample)] == ["train", "encode", "probe", "sample"]
    whole_log = client.log(train["id"])
    assert whole_log.startswith("=== attempt 1 on ") and client.job(train["id"])["log_tail"]
    assert "".join(client.follow_log(train["id"])) == whole_log   # a finished job: all of it, then the end
    assert client.log(train["id"], offset=10) == whole_log.encode()[10:].decode()
    assert client.probes(experiment_id)["t_values"] == [0.0, 0.5, 1.0]
    assert client.metrics(experiment_id, "loss", max_points=5)["total_points"] > 0
    assert client.code_usage(experiment_id)["checkpoints"]
    (listed,) = client.samples(experiment_id)
    assert client.sample_png(experiment_id, listed["job_id"])[:8] == b"\x89PNG\r\n\x1a\n"
    control = client.embeddings(experiment_id, 0.5, encoder="random_init", split="train")
    assert control.codes.shape == (200, 6) and control.labels.shape == (200,)
    assert client.experiments(limit=5)["total"] == 1
    assert client.health()["status"] == "ok" and client.ready()["checks"]["database"] == "ok"

    # Errors carry the server's problem.
    with pytest.raises(errors.NotFound) as missing_t:
        client.embeddings(experiment_id, 0.3)
    assert missing_t.value.problem["computed_t"] == [0.0, 0.5, 1.0]
    assert missing_t.value.type == "urn:drl:problem:not-found"
    with pytest.raises(errors.InvalidRequest) as invalid:
        client.submit({"model": {"kind": "gan"}})
    assert [e["field"] for e in invalid.value.errors] == ["model.kind"]
    with pytest.raises(errors.Conflict):
        client.resume(experiment_id)   # nothing failed or was cancelled
    # Checkpoints: the spec saves at steps 6 and 12, both kept; pinned, then unpinned.
    stored = [(c["step"], c["pinned"]) for c in client.checkpoints(experiment_id)]
    assert stored == [(6, False), (12, False)]
    assert client.pin(experiment_id, 6)["pinned"] is True
    with pytest.raises(errors.NotFound) as no_step:
        client.pin(experiment_id, 7)
    assert no_step.value.problem["stored_steps"] == [6, 12]
    assert client.unpin(experiment_id, 6)["pinned"] is False
    job = client.encode(experiment_id, [0.25])
    assert job["kind"] == "encode" and job["params"]["t"] == [0.25]
    drawn = client.sample(experiment_id, count=4, steps=2)
    assert drawn["kind"] == "sample" and drawn["params"]["sample"]["steps"] == 2
    client.cancel(experiment_id)
    client.delete(experiment_id)
    with pytest.raises(errors.NotFound, match=f"experiment {experiment_id} not found"):
        client.experiment(experiment_id)
    client.close()
    serve.terminate()
    serve.wait(STOP_TIMEOUT_S)


# --- endpoints and types -----------------------------------------------------------------


class Sent(Exception):
    """Raised by the recording transport: the request went out, the test has what it needs."""


# Each operation of the OpenAPI document: the client method that calls it, with arguments.
ENDPOINTS: dict[tuple[str, str], tuple[str, tuple, dict]] = {
    ("GET", "/healthz"): ("health", (), {}),
    ("GET", "/readyz"): ("ready", (), {}),
    ("POST", "/experiments"): ("submit", ({"name": "x"},), {}),
    ("GET", "/experiments"): ("experiments", (), {}),
    ("GET", "/experiments/{experiment_id}"): ("experiment", (1,), {}),
    ("DELETE", "/experiments/{experiment_id}"): ("delete", (1,), {}),
    ("POST", "/experiments/{experiment_id}/cancel"): ("cancel", (1,), {}),
    ("POST", "/experiments/{experiment_id}/resume"): ("resume", (1,), {}),
    ("GET", "/experiments/{experiment_id}/checkpoints"): ("checkpoints", (1,), {}),
    ("POST", "/experiments/{experiment_id}/checkpoints/{step}/pin"): ("pin", (1, 6), {}),
    ("DELETE", "/experiments/{experiment_id}/checkpoints/{step}/pin"): ("unpin", (1, 6), {}),
    ("GET", "/experiments/{experiment_id}/jobs"): ("jobs", (1,), {}),
    ("GET", "/jobs/{job_id}"): ("job", (2,), {}),
    ("GET", "/queue"): ("queue", (), {}),
    ("GET", "/jobs/{job_id}/log"): ("log", (2,), {}),
    ("GET", "/embeddings"): ("embeddings", (1, 0.5), {}),
    ("GET", "/embeddings/labels"): ("labels", (1,), {}),
    ("POST", "/experiments/{experiment_id}/encodings"): ("encode", (1, [0.5]), {}),
    ("GET", "/experiments/{experiment_id}/probes"): ("probes", (1,), {}),
    ("GET", "/experiments/{experiment_id}/code-usage"): ("code_usage", (1,), {}),
    ("GET", "/experiments/{experiment_id}/metrics"): ("metrics", (1,), {}),
    ("POST", "/experiments/{experiment_id}/samples"): ("sample", (1,), {"count": 4}),
    ("GET", "/experiments/{experiment_id}/samples"): ("samples", (1,), {}),
    ("GET", "/experiments/{experiment_id}/samples/{job_id}.png"): ("sample_png", (1, 2), {}),
}
# Operations that answer what another one does: the client calls that one.
ALIASES = {("GET", "/experiments/{experiment_id}/samples/{job_id}"):
           ("GET", "/experiments/{experiment_id}/samples/{job_id}.png")}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from api.main import create_app
    from drl_core.settings import Settings

    return create_app(Settings(home=tmp_path_factory.mktemp("home"))).openapi()


def test_every_endpoint_has_a_client_method_that_calls_it(openapi: dict[str, Any]) -> None:
    operations = {(method.upper(), path) for path, ops in openapi["paths"].items() for method in ops}
    missing = operations - ENDPOINTS.keys() - ALIASES.keys()
    assert not missing, f"add a method to drl/client.py (and a row here) for {sorted(missing)}"
    assert not ENDPOINTS.keys() - operations, "a method for an endpoint the API no longer has"
    for (method, template), (name, args, kwargs) in ENDPOINTS.items():
        sent: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            raise Sent

        with Client("http://drl.test", transport=httpx.MockTransport(record)) as client, \
                pytest.raises(Sent):
            getattr(client, name)(*args, **kwargs)
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        assert sent[0].method == method and re.fullmatch(pattern, sent[0].url.path), \
            f"{name} sent {sent[0].method} {sent[0].url.path}, not {method} {template}"


def test_the_result_types_name_only_keys_the_api_has(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for name, typed in SCHEMAS.items():
        keys = typed.__required_keys__ | typed.__optional_keys__
        unknown = keys - schemas[name]["properties"].keys()
        assert not unknown, f"drl/resources.py {typed.__name__} names {unknown}, not in {name}"


# --- errors and retries, against a scripted server ---------------------------------------


def problem(status: int, detail: str, type_: str = "about:blank", **extra: Any) -> httpx.Response:
    body = {"type": type_, "title": "t", "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


def scripted(*answers: httpx.Response | Exception, retry: RetryPolicy = RetryPolicy(backoff_s=0)
             ) -> tuple[Client, list[httpx.Request]]:
    """A Client whose server gives `answers` in turn (an exception: the connection fails)."""
    pending, sent = list(answers), []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        step = pending.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return Client("http://drl.test", retry=retry, transport=httpx.MockTransport(answer)), sent


@pytest.mark.parametrize("answer, kind", [
    (problem(401, "no token"), errors.Unauthorized),
    (problem(403, "only the owner", "urn:drl:problem:forbidden", owner="alice"), errors.Forbidden),
    (problem(404, "experiment 9 not found", "urn:drl:problem:not-found"), errors.NotFound),
    (problem(409, "its encode job 3 is running", "urn:drl:problem:not-ready"), errors.NotReady),
    (problem(409, "nothing to resume", "urn:drl:problem:conflict"), errors.Conflict),
    (problem(413, "too large"), errors.ClientError),
    (problem(429, "2 running jobs is your limit", "urn:drl:problem:rate-limited"), errors.RateLimited),
    (problem(500, "an internal error occurred", "urn:drl:problem:internal-error"), errors.ServerError),
    (problem(503, "not ready: database", "urn:drl:problem:service-unavailable"), errors.Unavailable),
])
def test_an_error_answer_is_a_typed_exception_carrying_its_problem(answer, kind) -> None:
    client, _ = scripted(answer)
    with pytest.raises(kind) as raised:
        client.experiment(9)
    err = raised.value
    assert type(err) is kind and isinstance(err, errors.DrlError)
    assert (err.status, err.detail) == (answer.status_code, answer.json()["detail"])
    assert err.type == answer.json()["type"] and err.problem == answer.json()
    assert isinstance(err, errors.ClientError) == (answer.status_code < 500)


def test_invalid_fields_and_answers_that_are_not_problems() -> None:
    client, _ = scripted(
        problem(422, "model.kind: bad", "urn:drl:problem:validation-error",
                errors=[{"field": "model.kind", "message": "bad"}]),
        httpx.Response(502, text="<html><body>Bad gateway</body></html>"),
        httpx.Response(429, json={"detail": "3 queued jobs is your limit"}, headers={"Retry-After": "60"}))
    with pytest.raises(errors.InvalidRequest) as invalid:
        client.submit({"model": {"kind": "gan"}})
    assert invalid.value.errors == [{"field": "model.kind", "message": "bad"}]
    with pytest.raises(errors.ServerError) as proxy:
        client.experiments()
    assert proxy.value.detail == "502 Bad Gateway: <html><body>Bad gateway</body></html>"
    with pytest.raises(errors.RateLimited) as limited:   # a quota: not retried
        client.sample(1)
    assert limited.value.retry_after == 60 and str(limited.value).endswith("3 queued jobs is your limit")


def test_connection_errors_are_retried_with_growing_pauses(monkeypatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(drl.connection.time, "sleep", pauses.append)
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    client, sent = scripted(refused, refused, httpx.Response(200, json={"status": "ok"}),
                            retry=RetryPolicy(retries=3, backoff_s=1.0))
    assert client.health() == {"status": "ok"} and len(sent) == 3
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0   # backoff_s * 2**n, jittered

    client, sent = scripted(*[refused] * 4, retry=RetryPolicy(retries=3, backoff_s=1.0))
    with pytest.raises(errors.Unreachable) as down:
        client.health()
    assert len(sent) == 4 and down.value.status is None
    assert str(down.value) == "cannot reach the drl server at http://drl.test (connection refused)"


def test_a_503_with_retry_after_is_sent_again_after_it(monkeypatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(drl.connection.time, "sleep", pauses.append)
    busy = problem(503, "the server is busy", "urn:drl:problem:busy")
    busy.headers["Retry-After"] = "1"
    created = httpx.Response(201, json={"id": 7})
    client, sent = scripted(busy, created)
    assert client.submit({"name": "x"}) == {"id": 7}   # a POST too: the server did nothing
    assert pauses == [1.0] and len(sent) == 2
    client, sent = scripted(problem(503, "not ready: broker"))   # no Retry-After: an answer
    with pytest.raises(errors.Unavailable):
        client.ready()
    assert len(sent) == 1


def test_a_post_cut_off_after_it_was_sent_is_not_sent_twice(monkeypatch) -> None:
    monkeypatch.setattr(drl.connection.time, "sleep", lambda s: None)
    cut = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    client, sent = scripted(cut, httpx.Response(202, json={"id": 3}))
    with pytest.raises(errors.Unreachable):
        client.sample(1, count=4)   # it may have queued a job: sending it again could queue two
    assert len(sent) == 1
    client, sent = scripted(cut, httpx.Response(201, json={"id": 3}))
    assert client.submit({"name": "x"}, idempotency_key="k") == {"id": 3}   # the key makes it safe
    client, sent = scripted(cut, httpx.Response(200, json={"id": 3}))
    assert client.experiment(3) == {"id": 3} and len(sent) == 2   # a GET is always safe


def test_the_server_and_the_token_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DRL_API_URL", "http://gpu-box:8000/")
    monkeypatch.setenv("DRL_TOKEN", "drl_secret")
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200, json=[]))
    with Client(transport=transport) as client:
        assert client.url == "http://gpu-box:8000"
        client.jobs(1)
    assert str(sent[0].url) == "http://gpu-box:8000/experiments/1/jobs"
    assert sent[0].headers["Authorization"] == "Bearer drl_secret"
    with Client("http://other:1", token="drl_mine", transport=transport) as client:   # arguments win
        client.jobs(1)
    assert str(sent[1].url).startswith("http://other:1/") and sent[1].headers["Authorization"] == "Bearer drl_mine"
    monkeypatch.delenv("DRL_TOKEN")
    with Client(transport=transport) as client:
        client.jobs(1)
    assert "Authorization" not in sent[2].headers


def test_a_spec_file_is_validated_here_and_sends_only_what_it_sets(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(201, json={"id": 1}))
    with Client("http://drl.test", transport=transport) as client:
        client.submit(REPO_ROOT / "examples" / "digits_tiny.yaml")
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: {kind: gan}\n")
        from drl_engine.spec import SpecError
        with pytest.raises(SpecError, match="model.kind"):
            client.submit(str(bad))
    body = json.loads(sent[0].content)
    assert len(sent) == 1 and body["train"]["iterations"] == 12 and "objective" not in body


def test_the_client_loads_without_torch() -> None:
    code = "import sys, drl.client, drl.errors; print('torch' in sys.modules, 'numpy' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert shown.stdout.split() == ["False", "False"], shown.stderr
