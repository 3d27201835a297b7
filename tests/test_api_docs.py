"""/docs and /redoc load nothing from the internet: every script, stylesheet and icon they
name is a path on the app, served by it, and readable without a token when auth is on.

The app runs on an SQLite file and the embedded queue (as `drl serve` does): these pages
touch neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from drl_core.settings import Settings

ASSET_URL = re.compile(r'(?:src|href)="([^"]*)"')
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(params=[False, True], ids=["auth-off", "auth-on"])
def client(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=None,
                        auth_enabled=request.param)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def local_assets(client: TestClient, page: str) -> list[str]:
    """The asset URLs `page` names, after checking that it names no other host."""
    response = client.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text, response.text
    urls = ASSET_URL.findall(response.text)
    assert urls and all(url.startswith("/docs-static/") for url in urls), urls
    return urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_app(client: TestClient, page: str) -> None:
    urls = local_assets(client, page)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        response = client.get(url)  # no Authorization header, auth on or off
        assert response.status_code == 200, url
        assert CONTENT_TYPES[Path(url).suffix] in response.headers["content-type"], url
        assert len(response.content) > 1000, url
    assert "/openapi.json" in client.get(page).text


def test_swagger_ui_reads_the_openapi_version_the_app_writes(client: TestClient) -> None:
    """Swagger UI before 5.0 answers FastAPI's OpenAPI 3.1 document with "Unable to render
    this definition": a blank /docs again, with every asset a 200."""
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and "/embeddings" in schema.json()["paths"]
    bundle = next(url for url in local_assets(client, "/docs") if url.endswith("swagger-ui-bundle.js"))
    if schema.json()["openapi"].startswith("3.1"):
        assert "isOAS31" in client.get(bundle).text  # Swagger UI 5's OpenAPI 3.1 plugin


def test_oauth2_redirect_and_auth_unchanged(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/docs-static/no-such-file.js").status_code == 404
    auth_on = client.app.state.drl.settings.auth_enabled
    assert client.get("/experiments").status_code == (401 if auth_on else 200)


def test_docs_behind_a_path_prefix(sqlite_url: str, tmp_path: Path) -> None:
    """Behind a proxy that strips /drl (uvicorn --root-path /drl), the page's URLs keep it."""
    app = create_app(Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=None))
    with TestClient(app, root_path="/drl") as client:
        text = client.get("/docs").text
    assert "'/drl/openapi.json'" in text
    assert all(url.startswith("/drl/docs-static/") for url in ASSET_URL.findall(text))
