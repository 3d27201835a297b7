"""The web dashboard (issue 9): pages rendered by the API process, on real PostgreSQL, with a
tiny experiment the worker's own code took through train -> encode -> probe -> sample (run
in this process on the embedded queue: the data a real run stores, without a Celery worker).

- every vendored front-end file matches its manifest (sha256, licence), and no page refers
  to anything outside the server;
- the OpenAPI document lists no page, and /docs still works;
- the runs page (filters, pages, live refresh while something runs) and the run page (spec,
  jobs, curves as chart data, samples, embeddings as .npy) from the experiment's real rows;
- actions post through the API's endpoint functions and show its problem on refusal;
- auth on: cookie sign-in, sign-out, a revoked token back to sign-in, fragments refused
  exactly as the API refuses a request without a token, a non-owner's action refused;
- errors are pages: an unknown id is a 404 page;
- one real browser (Debian's chromium, driven by Playwright) signs in and sees the run's
  charts drawn.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import create_token, revoke_tokens
from api.dashboard.rendering import PACKAGE, STATIC_URL
from api.dashboard.runs_view import PAGE_SIZE
from api.dashboard.sign_in import COOKIE
from api.main import create_app
from drl_core.artifact_keys import embedding_key
from drl_core.db import make_engine, session_factory
from drl_core.experiments import create_experiment
from drl_core.models import Experiment, Job, User
from drl_core.queue import make_celery
from drl_core.settings import Settings
from worker.context import WorkerResources
from worker.tasks import run_job

pytest.register_assert_rewrite("worker_fixtures")
from live_server import serving  # noqa: E402
from worker_fixtures import service_settings_for, tiny_spec  # noqa: E402

VENDOR = Path(str(PACKAGE / "static" / "vendor"))
CHROMIUM = Path("/usr/bin/chromium")


# --- the module's database, settings and finished experiment -----------------------------


@pytest.fixture(scope="module")
def settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # The embedded filesystem queue under home: messages are written, nothing consumes them.
    return service_settings_for(pg_url, tmp_path_factory.mktemp("dashboard_home"), None,
                                broker_url=None)


@pytest.fixture(scope="module")
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_enabled": True})


@pytest.fixture(scope="module")
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def finished(settings: Settings, sessions: sessionmaker[Session]) -> int:
    """The tiny experiment, every job run by the worker's run_job, in pipeline order."""
    celery = make_celery(settings)
    with sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(), None, None, celery_app=celery)
        experiment_id, job_ids = experiment.id, [job.id for job in experiment.jobs]
    resources = WorkerResources(settings)
    try:
        outcomes = [run_job(job_id, resources, celery) for job_id in job_ids]
    finally:
        resources.dispose()
        celery.close()
    assert outcomes == ["succeeded"] * 4
    return experiment_id


@pytest.fixture
def queued(settings: Settings, sessions: sessionmaker[Session],
           finished: int) -> Iterator[Callable[..., int]]:
    """Makes queued experiments (nothing runs them), deleted after the test, so that the
    module's finished experiment stays the only one between tests."""
    celery = make_celery(settings)
    made: list[int] = []

    def make(name: str = "queued", owner: str | None = None) -> int:
        with sessions() as session:
            owner_id = user_id(session, owner) if owner else None
            experiment, _ = create_experiment(session, tiny_spec().model_copy(update={"name": name}), owner_id, None,
                                              celery_app=celery)
            made.append(experiment.id)
            return experiment.id

    yield make
    celery.close()
    with sessions() as session:
        session.execute(sa.delete(Experiment).where(Experiment.id.in_(made)))
        session.commit()


def user_id(session: Session, name: str) -> int:
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        user = User(name=name)
        session.add(user)
        session.commit()
    return user.id


def token_for(sessions: sessionmaker[Session], name: str) -> str:
    with sessions() as session:
        token = create_token(session, name, f"dashboard-{name}")
        session.commit()
    return token


@pytest.fixture(scope="module")
def client(settings: Settings, finished: int) -> Iterator[TestClient]:
    """Auth off (embedded, localhost): every page just opens."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
def auth_client(auth_settings: Settings, finished: int) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, token: str, next_path: str = "/") -> None:
    response = client.post("/sign-in", data={"token": token, "next": next_path})
    assert response.status_code == 303, response.text


def run_rows(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', html)]


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def is_page(response, status: int) -> str:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


# --- vendored files, external references, the OpenAPI document --------------------------


def test_every_vendored_file_matches_its_manifest() -> None:
    manifest = json.loads((VENDOR / "vendor.json").read_text())
    listed = {entry["file"] for entry in manifest["files"]}
    assert listed == {p.name for p in VENDOR.iterdir()} - {"vendor.json"}, "unlisted or missing files"
    for entry in manifest["files"]:
        data = (VENDOR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
        package = manifest["packages"][entry["package"]]
        assert (entry["version"], entry["license"]) == (package["version"], package["license"])
        assert entry["version"] in entry["file"] or entry["file"] == package["license_file"]
    for name, package in manifest["packages"].items():
        assert package["license_file"] in listed, f"{name}: its licence text is not vendored"
        assert package["tarball"].endswith(f"-{package['version']}.tgz")


def assert_nothing_external(html: str, client: TestClient) -> None:
    """No URL to another host, and every file the page names is served by the app."""
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", html.replace("://testserver", "")), \
        re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z].{0,60}", html).group(0)
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/", "#", "data:")) and not url.startswith("//"), url
        if url.startswith(STATIC_URL):
            assert client.get(url).status_code == 200, url


def test_pages_load_nothing_from_elsewhere(client: TestClient, auth_client: TestClient,
                                           finished: int) -> None:
    for path in ("/", f"/runs/{finished}", "/runs/999999"):
        response = client.get(path)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert_nothing_external(response.text, client)
    assert_nothing_external(is_page(auth_client.get("/sign-in"), 200), auth_client)


def test_the_openapi_document_lists_no_page(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/runs", "/fragments", "/sign-", "/compare"))]
    assert "/experiments" in paths
    assert client.get("/docs").status_code == 200


# --- the runs page -----------------------------------------------------------------------


def test_runs_page_shows_the_finished_experiment(client: TestClient, finished: int) -> None:
    html = is_page(client.get("/"), 200)
    assert run_rows(html) == [finished]
    row = html[html.index(f'<tr data-run="{finished}"'):]
    row = row[:row.index("</tr>")]
    for text in ("digits-drl-static", ">drl<", ">digits<", "status-succeeded", "30/30",
                 'max="30" value="30"', "UTC"):
        assert text in row, text
    # best-t accuracy: the linear probe's test value at the t chosen on validation
    assert re.search(r"0\.\d+ <span class=\"muted\">at t=[01]\.\d+ \(linear\)", row), row
    assert "hx-trigger" not in html   # nothing runs: no refresh


def test_runs_page_refreshes_itself_while_anything_runs(client: TestClient, queued) -> None:
    queued("waiting")
    html = is_page(client.get("/"), 200)
    assert 'hx-get="/fragments/runs?page=1"' in html and 'hx-trigger="every 3s"' in html
    fragment = is_page(client.get("/fragments/runs", params={"page": 1}), 200)
    assert fragment.startswith('<section id="runs" hx-get=') and "<html" not in fragment


def test_runs_filters_and_pages(client: TestClient, queued, finished: int) -> None:
    mine = [queued(f"pagetest-{i}", owner="bob") for i in range(PAGE_SIZE + 2)]
    newest_first = mine[::-1]
    page1 = is_page(client.get("/", params={"q": "PAGETEST"}), 200)
    assert run_rows(page1) == newest_first[:PAGE_SIZE]
    assert f"{len(mine)} experiments" in page1 and "page 1 of 2" in page1
    assert 'href="/?q=PAGETEST&amp;page=2"' in page1
    page2 = is_page(client.get("/", params={"q": "PAGETEST", "page": 2}), 200)
    assert run_rows(page2) == newest_first[PAGE_SIZE:]
    assert run_rows(client.get("/", params={"status": "succeeded"}).text) == [finished]
    assert run_rows(client.get("/", params={"owner": "bob", "page": 2}).text) == newest_first[PAGE_SIZE:]
    assert run_rows(client.get("/", params={"owner": "nobody"}).text) == []
    both = {"status": "queued", "owner": "bob", "q": "pagetest-1"}
    expected = [i for i in newest_first if re.fullmatch(r"pagetest-1\d?", name_of(client, i))]
    assert run_rows(client.get("/", params=both).text) == expected
    assert run_rows(client.get("/fragments/runs", params=both).text) == expected
    assert ">bob</option>" in page1
    # the JSON API lists through the same function
    assert client.get("/experiments", params={"status": "queued", "limit": 5}).json()["total"] == len(mine)
    assert is_page(client.get("/", params={"status": "bogus"}), 422).count("status") >= 1


def name_of(client: TestClient, experiment_id: int) -> str:
    return client.get(f"/experiments/{experiment_id}").json()["name"]


# --- the run page ------------------------------------------------------------------------


def chart_data(html: str) -> dict[str, dict]:
    """Each chart figure's data, by id (JSON in a single-quoted attribute: Jinja's tojson
    writes ' < > & as \\u escapes)."""
    charts = [json.loads(data) for data in re.findall(r"<figure [^>]*data-chart='([^']*)'", html)]
    return {chart["id"]: chart for chart in charts}


def test_run_page_shows_spec_jobs_curves_samples_and_embeddings(
        client: TestClient, settings: Settings, finished: int) -> None:
    html = is_page(client.get(f"/runs/{finished}"), 200)
    assert "batch_size: 16" in html and "kind: drl" in html                # the spec as YAML
    jobs = re.findall(r'<tr data-job="(\d+)">\s*<td>#\d+</td>\s*<td>(\w+)</td>\s*<td><span class="status '
                      r'status-(\w+)">', html)
    assert [(kind, status) for _, kind, status in jobs] == [
        ("train", "succeeded"), ("encode", "succeeded"), ("probe", "succeeded"), ("sample", "succeeded")]
    assert html.count('<td class="number">1/3</td>') == 4                   # attempt / max
    assert "trained 30 steps on cpu" in html                                # a log tail

    charts = chart_data(html)
    loss = charts["loss"]
    metrics = client.get(f"/experiments/{finished}/metrics", params={"key": "loss"}).json()
    assert loss["x"] == [p["step"] for p in metrics["points"]] == [10, 20, 30]
    assert loss["series"][0]["values"] == [p["value"] for p in metrics["points"]]
    probes = client.get(f"/experiments/{finished}/probes").json()
    accuracy = charts["accuracy"]
    assert accuracy["x"] == probes["t_values"] == [0.0, 0.5, 1.0]
    labels = [s["label"] for s in accuracy["series"]]
    assert "linear" in labels and "linear (untrained control)" in labels and "silhouette" not in labels
    linear_control = next(s for s in accuracy["series"] if s["label"] == "linear (untrained control)")
    assert linear_control["dashed"] and linear_control["values"] == [r["linear"] for r in probes["control_rows"]]
    usage = client.get(f"/experiments/{finished}/code-usage").json()
    code_usage = charts["code-usage"]
    assert code_usage["x"] == usage["t_values"]
    assert [s["label"] for s in code_usage["series"] if not s["dashed"]] == [
        f"code gain, step {c['step']}" for c in usage["checkpoints"]]
    for chart_id in ("loss", "accuracy", "code-usage"):
        assert f'data-chart-id="{chart_id}"' in html

    sample_job = int(jobs[3][0])
    assert f'src="/runs/{finished}/samples/{sample_job}.png"' in html and "FD-LeNet" in html
    png = client.get(f"/runs/{finished}/samples/{sample_job}.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    assert f'href="/runs/{finished}/embeddings.npy?t=0.5&amp;split=test"' in html
    npy = client.get(f"/runs/{finished}/embeddings.npy", params={"t": 0.5, "split": "test"})
    assert npy.status_code == 200 and 'filename="experiment' in npy.headers["content-disposition"]
    stored = np.load(io.BytesIO((settings.artifact_dir / embedding_key(finished, "test", 0.5)).read_bytes()))
    assert np.array_equal(np.load(io.BytesIO(npy.content)), stored) and stored.shape == (100, 4)

    assert 'hx-trigger="every' not in html                   # finished: the page is still
    fragment = is_page(client.get(f"/fragments/runs/{finished}"), 200)
    assert fragment.startswith('<section id="live"') and chart_data(fragment).keys() == charts.keys()


def test_the_test_codes_in_2d(client: TestClient, settings: Settings, finished: int) -> None:
    html = client.get(f"/runs/{finished}").text
    best = client.get(f"/experiments/{finished}").json()["summary"]["best_t"]["linear"]["t"]
    assert f'/fragments/runs/{finished}/scatter?t={best}" hx-trigger="load"' in html
    fragment = is_page(client.get(f"/fragments/runs/{finished}/scatter", params={"t": 0.5}), 200)
    (scatter,) = chart_data(fragment).values()
    codes = np.load(io.BytesIO((settings.artifact_dir / embedding_key(finished, "test", 0.5)).read_bytes()))
    points = np.column_stack([scatter["x"], scatter["y"]])
    assert points.shape == (100, 2) and len(scatter["labels"]) == 100
    assert scatter["x_label"].startswith("PC 1 (")                   # a 4-d code, projected
    # principal axes: uncorrelated, variance decreasing, at most the codes' total variance
    covariance = np.cov(points.T)
    assert abs(covariance[0, 1]) < 1e-6 * covariance[0, 0] and covariance[0, 0] >= covariance[1, 1]
    assert covariance.trace() <= np.cov(codes.T.astype(np.float64)).trace() * (1 + 1e-9)
    missing = is_page(client.get(f"/fragments/runs/{finished}/scatter", params={"t": 0.3}), 200)
    assert "no test embeddings at t=0.300; computed t: 0, 0.5, 1" in missing


def test_unknown_ids_are_404_pages(client: TestClient) -> None:
    assert "experiment 999999 not found" in is_page(client.get("/runs/999999"), 404)
    assert "experiment_id" in is_page(client.get("/runs/abc"), 422)
    # fragments and files answer as the API does
    assert is_problem(client.get("/fragments/runs/999999"), 404)["detail"] == "experiment 999999 not found"
    assert is_problem(client.get("/runs/999999/samples/1.png"), 404)


def test_compare_overlays_curves_and_lines_up_samples(client: TestClient, queued,
                                                      finished: int) -> None:
    other = queued("other-run")                          # the same tiny spec but its name
    assert f'name="id" value="{finished}" form="compare"' in client.get("/").text
    html = is_page(client.get("/compare", params={"id": [finished, other]}), 200)
    charts = chart_data(html)
    assert charts["loss"]["x"] == [10, 20, 30]
    assert [s["label"] for s in charts["loss"]["series"]] == [f"#{finished} digits-drl-static"]
    probes = client.get(f"/experiments/{finished}/probes").json()
    (accuracy,) = charts["accuracy"]["series"]
    assert accuracy["values"] == [row["linear"] for row in probes["rows"]]
    differences = re.findall(r"<tr><td><code>([\w.]+)</code></td><td>([^<]*)</td><td>([^<]*)</td></tr>", html)
    assert differences == [("name", "null", "other-run")]
    # one sample setting in both runs: the finished run's grid beside the queued run's job
    assert html.count('<h3 class="sample-settings">') == 1
    assert "sampler pc · steps 10 · t_init 1.0 · prior gaussian · code_source encoded" in html
    assert f'src="/runs/{finished}/samples/' in html and re.search(r"job #\d+ queued", html)

    assert "pick 2 to 8 runs to compare, got 1" in is_page(client.get("/compare", params={"id": [finished]}), 422)
    assert is_page(client.get("/compare", params={"id": list(range(1, 10))}), 422)
    assert "experiment 999999 not found" in is_page(
        client.get("/compare", params={"id": [finished, 999999]}), 404)


# --- actions -----------------------------------------------------------------------------


def test_actions_post_through_the_api_and_show_its_problems(client: TestClient, queued,
                                                            sessions: sessionmaker[Session]) -> None:
    experiment_id = queued("to-act-on")
    page = f"/runs/{experiment_id}"

    refused = is_page(client.post(f"{page}/resume"), 409)                   # nothing to resume
    assert "has no failed or cancelled job to resume" in refused and 'role="alert"' in refused

    response = client.post(f"{page}/samples", data={"steps": "5", "sampler": "ode", "count": ""})
    assert response.status_code == 303 and response.headers["location"].startswith(f"{page}?done=samples&job=")
    job_id = int(parse_qs(urlsplit(response.headers["location"]).query)["job"][0])
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.kind == "sample" and job.params["sample"]["steps"] == 5
        assert job.params["sample"]["sampler"] == "ode"
    assert f"Sample job {job_id} was queued" in client.get(response.headers["location"]).text

    invalid = is_page(client.post(f"{page}/samples", data={"steps": "many"}), 422)
    assert "<code>steps</code>" in invalid
    assert client.post(f"{page}/encodings", data={"t": "0.25, 0.75"}).status_code == 303
    assert "<code>t.0</code>" in is_page(client.post(f"{page}/encodings", data={"t": "2"}), 422)

    assert client.post(f"{page}/cancel").headers["location"] == f"{page}?done=cancel"
    assert client.get(f"/experiments/{experiment_id}").json()["status"] == "cancelled"
    assert client.post(f"{page}/resume").headers["location"] == f"{page}?done=resume"
    assert client.get(f"/experiments/{experiment_id}").json()["status"] == "queued"

    foreign = client.post(f"{page}/cancel", headers={"Origin": "http://evil.example"})
    assert "may not act on this dashboard" in is_page(foreign, 403)

    assert client.post(f"{page}/delete").headers["location"] == f"/?done=delete&id={experiment_id}"
    assert f"Experiment {experiment_id} was deleted" in client.get(f"/?done=delete&id={experiment_id}").text
    assert is_page(client.get(page), 404)
    assert is_page(client.post(f"{page}/cancel"), 404)


# --- auth on -----------------------------------------------------------------------------


def test_with_auth_on_pages_need_the_cookie_and_fragments_refuse_as_the_api(
        auth_client: TestClient, sessions: sessionmaker[Session], finished: int) -> None:
    auth_client.cookies.clear()
    assert auth_client.get("/").headers["location"] == "/sign-in?next=%2F"
    assert auth_client.get(f"/runs/{finished}").headers["location"] == f"/sign-in?next=%2Fruns%2F{finished}"
    api = auth_client.get("/experiments")
    for resource in ("/fragments/runs", f"/fragments/runs/{finished}", f"/runs/{finished}/embeddings.npy?t=0.5"):
        refused = auth_client.get(resource, headers={"HX-Request": "true",
                                                     "HX-Current-URL": f"http://testserver/runs/{finished}"})
        assert is_problem(refused, 401) | {"instance": ""} == api.json() | {"instance": ""}
        assert refused.headers["www-authenticate"] == api.headers["www-authenticate"]
        assert refused.headers["hx-redirect"] == f"/sign-in?next=%2Fruns%2F{finished}"
    posted = auth_client.post(f"/runs/{finished}/cancel", headers={"Referer": f"http://testserver/runs/{finished}"})
    assert posted.headers["location"] == f"/sign-in?next=%2Fruns%2F{finished}"

    wrong = is_page(auth_client.post("/sign-in", data={"token": "drl_wrong", "next": "/"}), 401)
    assert "not valid" in wrong and COOKIE not in auth_client.cookies

    token = token_for(sessions, "carol")
    response = auth_client.post("/sign-in", data={"token": token, "next": f"/runs/{finished}"})
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{finished}"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "carol" in is_page(auth_client.get("/"), 200) and "Sign out" in auth_client.get("/").text
    assert is_page(auth_client.get("/fragments/runs"), 200)
    assert is_page(auth_client.get(f"/runs/{finished}"), 200)

    with sessions() as session:                         # revoked: back to sign-in, cookie gone
        revoke_tokens(session, "carol")
        session.commit()
    expired = auth_client.get(f"/runs/{finished}")
    assert expired.headers["location"] == f"/sign-in?next=%2Fruns%2F{finished}&expired=1"
    assert f'{COOKIE}=""' in expired.headers["set-cookie"] and "Max-Age=0" in expired.headers["set-cookie"]
    assert "no longer valid" in auth_client.get(expired.headers["location"]).text


def test_sign_in_and_out(auth_client: TestClient, client: TestClient,
                         sessions: sessionmaker[Session]) -> None:
    auth_client.cookies.clear()
    token = token_for(sessions, "dave")
    response = auth_client.post("/sign-in", data={"token": token, "next": "//evil.example/x"})
    assert response.headers["location"] == "/"                     # never to another site
    out = auth_client.post("/sign-out")
    assert out.headers["location"] == "/sign-in" and "Max-Age=0" in out.headers["set-cookie"]
    assert COOKIE not in auth_client.cookies
    assert auth_client.get("/").status_code == 303
    # auth off: no sign-in at all
    assert client.get("/sign-in").headers["location"] == "/"


def test_only_the_owner_may_act(auth_client: TestClient, queued,
                                sessions: sessionmaker[Session]) -> None:
    auth_client.cookies.clear()
    experiment_id = queued("erin's", owner="erin")
    sign_in(auth_client, token_for(sessions, "frank"))
    refused = is_page(auth_client.post(f"/runs/{experiment_id}/cancel"), 403)
    assert f"only the owner of experiment {experiment_id}" in refused
    sign_in(auth_client, token_for(sessions, "erin"))
    assert auth_client.post(f"/runs/{experiment_id}/cancel").status_code == 303
    auth_client.cookies.clear()


# --- a real browser ----------------------------------------------------------------------


def test_a_browser_signs_in_and_sees_the_run_and_its_charts(
        auth_settings: Settings, sessions: sessionmaker[Session], finished: int,
        tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: scripts/ensure_services.sh installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    token = token_for(sessions, "grace")
    with serving(auth_settings) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text)
                    if message.type == "error" else None)
            page.goto(base + "/")
            expect(page).to_have_url(re.compile(r"/sign-in\?next=%2F$"))
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            row = page.locator(f'tr[data-run="{finished}"]')
            expect(row).to_contain_text("succeeded")
            page.screenshot(path=tmp_path / "runs.png", full_page=True)
            row.locator("a").first.click()
            expect(page).to_have_url(f"{base}/runs/{finished}")
            for chart_id in ("loss", "accuracy", "code-usage"):
                expect(page.locator(f'figure[data-chart-id="{chart_id}"] canvas')).to_have_count(1)
            expect(page.locator("figure.scatter canvas")).to_have_count(1)
            expect(page.locator("figure.sample img")).to_have_js_property("complete", True)
            assert page.locator("figure.sample img").evaluate("img => img.naturalWidth") > 0
            page.screenshot(path=tmp_path / "run.png", full_page=True)
            assert errors == []
        finally:
            browser.close()


# --- a kind without a code ---------------------------------------------------------------


def test_a_vdm_run_shows_bits_per_dim_and_no_probes(client: TestClient, settings: Settings,
                                                    sessions: sessionmaker[Session]) -> None:
    """vdm learns no code: no probe or code-usage section, no encode form; its test-set
    bits/dim term by term, as its train job stored them."""
    celery = make_celery(settings)
    with sessions() as session:
        experiment, _ = create_experiment(session, tiny_spec(model={"kind": "vdm"}), None, None,
                                          celery_app=celery)
        experiment_id, job_ids = experiment.id, [job.id for job in experiment.jobs]
    resources = WorkerResources(settings)
    try:
        assert [run_job(job_id, resources, celery) for job_id in job_ids] == ["succeeded"] * 2
    finally:
        resources.dispose()
        celery.close()
    html = is_page(client.get(f"/runs/{experiment_id}"), 200)
    bits = client.get(f"/experiments/{experiment_id}").json()["summary"]["bits_per_dim"]
    assert "<h2>Bits/dim</h2>" in html and f"{bits['total']:.4g}" in html
    assert f"{bits['diffusion']:.4g}" in html and f"{bits['prior']:.4g}" in html
    assert set(chart_data(html)) == {"loss"}
    assert "Probe accuracy" not in html and "Code usage" not in html and "/encodings" not in html
    assert "Draw samples" in html and "figure class=\"sample\"" in html
