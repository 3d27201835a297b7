"""The dashboard in a real browser against a real `drl serve` (issue 9's Tests section).

One `drl serve` subprocess with auth on (SQLite, local artifacts, its own worker process under a
temporary --home; a token from `drl token create` on that home's database), and Debian's
chromium driven by Playwright. Two tiny digits experiments are submitted through the API, first
ENDLESS (trains until cancelled: its progress can be watched however slow the browser is to
start), then TINY (every stage, in seconds). In one browser session:

- a page opened without the cookie goes to sign-in, a wrong token is refused there, the right
  one signs in (and a run page in a fresh context without the cookie goes to sign-in too);
- the runs page shows ENDLESS's progress advance with no reload (the same document throughout);
- ENDLESS's page: Cancel, and the page itself turns to cancelled;
- TINY's page, once it succeeded: the loss, accuracy-against-t and code-usage charts drawn by
  uPlot with data (its canvas painted, each series with values), the test codes' scatter, the
  sample grid image loaded;
- both ticked on the runs page and compared: both listed, the loss chart drawn.

A screenshot of each page is written to $DRL_TEST_ARTIFACTS/dashboard-browser, else to
tmp_path/screenshots (the folder is printed), pass or fail; a failure also leaves failure.png,
the experiments as the API shows them and the server's log beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("worker_fixtures")
from test_cli_service import STOP_TIMEOUT_S, drl, drl_env, free_port  # noqa: E402
from worker_fixtures import TINY_SPEC, wait_for  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
STARTUP_TIMEOUT_S = 90
# Generous for a loaded 2-core machine; each wait ends as soon as its condition holds.
PIPELINE_TIMEOUT_S = 150
UI_TIMEOUT_MS = 30_000

TINY = {**TINY_SPEC, "name": "browser-tiny"}
ENDLESS = {**TINY_SPEC, "name": "browser-endless",
           "train": {**TINY_SPEC["train"], "iterations": 100_000, "log_every": 2,
                     "checkpoint_every": 100_000}}


def screenshot_folder(tmp_path: Path) -> Path:
    root = os.environ.get("DRL_TEST_ARTIFACTS")
    folder = Path(root) / "dashboard-browser" if root else tmp_path / "screenshots"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@contextmanager
def drl_serve_with_auth(home: Path, data_dir: Path, log_path: Path) -> Iterator[tuple[str, str]]:
    """`drl serve` with DRL_AUTH_ENABLED on a free port, and a token of user alice made by
    `drl token create` before it starts; yields (base URL, token). Stopped (SIGTERM, then
    SIGKILL of its group) when the block ends."""
    env = drl_env(home, data_dir) | {"DRL_AUTH_ENABLED": "true"}
    created = drl("token", "create", "alice", "--home", str(home), env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    port = free_port()
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "drl_cli.main", "serve", "--port", str(port), "--home", str(home),
             "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"drl serve did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, token
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def fd_lenet_classifiers_kept(request: pytest.FixtureRequest, home: Path) -> Iterator[None]:
    """The digits FD-LeNet classifier the sample job needs, kept between runs in pytest's
    cache folder (when the cache plugin is on), where tests/test_bench.py's dashboard bench
    keeps it too: a fresh --home would train it again, half a minute of this machine. Its
    file name hashes its settings and training data, so a stale one is never picked."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        yield
        return
    kept, used = cache.mkdir("drl-home") / "cache" / "fd_lenet", home / "cache" / "fd_lenet"
    kept.mkdir(parents=True, exist_ok=True)
    used.mkdir(parents=True, exist_ok=True)
    for classifier in kept.glob("*.pt"):
        shutil.copy2(classifier, used / classifier.name)
    try:
        yield
    finally:
        for classifier in used.glob("*.pt"):
            if not (kept / classifier.name).exists():
                shutil.copy2(classifier, kept / classifier.name)


def submit(url: str, token: str, spec: dict) -> int:
    response = httpx.post(f"{url}/experiments", json=spec, timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# What uPlot drew into a chart figure: the series' non-null value counts (from the instance
# dashboard.js keeps on the figure) and how many of its canvas's pixels are painted.
DRAWN_CHART = """figure => {
  const plot = figure.plot, canvas = figure.querySelector("canvas");
  if (!plot || !canvas) { return null; }
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
  return {x: plot.data[0].length, painted: painted,
          series: plot.data.slice(1).map(s => s.filter(v => v !== null && v !== undefined).length)};
}"""


def test_a_browser_watches_cancels_inspects_and_compares_runs_on_drl_serve(
        request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: scripts/ensure_services.sh installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    shots = screenshot_folder(tmp_path)
    print(f"\ndashboard screenshots: {shots}")
    home = tmp_path / "home"
    with fd_lenet_classifiers_kept(request, home), \
            drl_serve_with_auth(home, data_dir, shots / "serve.log") as (url, token), \
            sync_playwright() as playwright:
        endless, tiny = submit(url, token, ENDLESS), submit(url, token, TINY)
        api = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        expect.set_options(timeout=UI_TIMEOUT_MS)

        def shoot(name: str) -> None:
            page.screenshot(path=shots / f"{name}.png", full_page=True)

        try:
            # --- auth: no cookie -> sign-in; a wrong token refused; the right one accepted
            page.goto(f"{url}/")
            expect(page).to_have_url(re.compile(r"/sign-in\?next=%2F$"))
            shoot("01-sign-in")
            page.fill("input[name=token]", "drl_not-a-token")
            page.click("button[type=submit]")
            expect(page.locator("p.problem[role=alert]")).to_contain_text("not valid")
            expect(page.locator("input[name=token]")).to_be_visible()     # still the sign-in form
            shoot("02-sign-in-refused")
            # the refusal is a 401 page, which the browser's console reports as such
            assert all("status of 401" in error for error in errors), errors
            errors.clear()
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{url}/")

            # --- the runs page: ENDLESS's progress advances with no reload
            row = page.locator(f'tr[data-run="{endless}"]')
            expect(row).to_be_visible()
            expect(page.locator(f'tr[data-run="{tiny}"]')).to_be_visible()
            page.evaluate("window.sameDocument = true")
            progress = row.locator("progress")
            seen: list[int] = []

            def moved() -> bool:
                if progress.count():
                    step = int(float(progress.get_attribute("value") or 0))
                    if not seen or step != seen[-1]:
                        seen.append(step)
                return len(seen) >= 2 and 0 < seen[0] < seen[-1]

            wait_for(moved, PIPELINE_TIMEOUT_S, f"run {endless}'s progress to advance on the page")
            assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
            assert seen == sorted(seen), seen
            expect(row.locator(".status")).to_have_text("running")
            print(f"steps shown on the runs page: {seen}")
            shoot("03-runs-live")

            # --- ENDLESS's page: cancel it while it trains; the page turns to cancelled
            page.goto(f"{url}/runs/{endless}")
            expect(page.locator("#run-status")).to_have_text("running")
            page.click("#live form[action$='/cancel'] button")
            expect(page).to_have_url(f"{url}/runs/{endless}?done=cancel")
            expect(page.locator("#run-status")).to_have_text("cancelled")
            assert api.get(f"/experiments/{endless}").json()["status"] == "cancelled"
            shoot("04-run-cancelled")

            # --- TINY's page once it succeeded: charts drawn with data, samples loaded
            wait_for(lambda: api.get(f"/experiments/{tiny}").json()["status"] in
                     ("succeeded", "failed", "cancelled"), PIPELINE_TIMEOUT_S, f"run {tiny} to finish")
            assert api.get(f"/experiments/{tiny}").json()["status"] == "succeeded"
            page.goto(f"{url}/runs/{tiny}")
            expect(page.locator("#run-status")).to_have_text("succeeded")
            for chart_id in ("loss", "accuracy", "code-usage"):
                figure = page.locator(f'figure[data-chart-id="{chart_id}"]')
                expect(figure.locator("canvas")).to_have_count(1)
                drawn = figure.evaluate(DRAWN_CHART)
                assert drawn and drawn["x"] > 0 and drawn["painted"] > 0, (chart_id, drawn)
                assert drawn["series"] and all(n > 0 for n in drawn["series"]), (chart_id, drawn)
            loss = page.locator('figure[data-chart-id="loss"]').evaluate(DRAWN_CHART)
            assert loss["x"] == TINY["train"]["iterations"] // TINY["train"]["log_every"], loss
            expect(page.locator("#scatter figure canvas")).to_have_count(1)
            sample = page.locator("figure.sample img")
            expect(sample).to_have_count(1)
            expect(sample).to_have_js_property("complete", True)
            assert sample.evaluate("img => img.naturalWidth") > 0
            shoot("05-run-succeeded")

            # --- compare the two, ticked on the runs page
            page.goto(f"{url}/")
            page.check(f"#pick-{tiny}")
            page.check(f"#pick-{endless}")
            page.click("#compare button[type=submit]")
            expect(page).to_have_url(re.compile(rf"/compare\?id=\d+&id=\d+$"))
            expect(page.locator("li[data-compared]")).to_have_count(2)
            compared = page.locator('figure[data-chart-id="loss"]').evaluate(DRAWN_CHART)
            assert compared and compared["painted"] > 0 and len(compared["series"]) == 2, compared
            assert all(n > 0 for n in compared["series"]), compared
            expect(page.locator("figure.sample img").first).to_have_js_property("complete", True)
            assert page.locator("figure.sample img").first.evaluate("img => img.naturalWidth") > 0
            shoot("06-compare")

            # --- a run page without the cookie goes to sign-in
            stranger = browser.new_page()
            stranger.goto(f"{url}/runs/{tiny}")
            expect(stranger).to_have_url(re.compile(rf"/sign-in\?next=%2Fruns%2F{tiny}$"))
            stranger.close()
            assert errors == []
        except BaseException:
            page.screenshot(path=shots / "failure.png", full_page=True)
            with contextlib.suppress(httpx.HTTPError):
                (shots / "experiments.json").write_text(json.dumps(
                    [api.get(f"/experiments/{i}").json() for i in (endless, tiny)], indent=1))
            raise
        finally:
            browser.close()
            api.close()
