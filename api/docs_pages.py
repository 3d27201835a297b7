"""/docs (Swagger UI), /docs/oauth2-redirect and /redoc with their JavaScript and CSS served by
the app itself (at /docs-static) instead of a CDN, so they work on a box without internet."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
DOCS_ASSETS_URL = "/docs-static"
# The fastapi-offline package's copy of the files FastAPI's pages load from jsDelivr:
# swagger-ui-bundle.js, swagger-ui.css (Swagger UI 5), redoc.standalone.js, favicon.png.
# Not swagger-ui-bundle (the package): its Swagger UI 4.15 refuses FastAPI's OpenAPI 3.1
# document ("Unable to render this definition"); Swagger UI reads 3.1 from 5.0 on.
DOCS_ASSETS = files("fastapi_offline") / "static"


def install_docs(app: FastAPI) -> None:
    """/docs, /docs/oauth2-redirect and /redoc as FastAPI's defaults make them (same pages,
    same parameters), loading their assets from DOCS_ASSETS_URL. Like the defaults, and like
    /openapi.json, they are on the app itself, outside PROTECTED: readable without a token."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(DOCS_ASSETS)), name="docs-static")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url  # /docs/oauth2-redirect

    def root_of(request: Request) -> str:
        # Behind a proxy that strips a prefix, every URL a page loads needs it back.
        return request.scope.get("root_path", "").rstrip("/")

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = root_of(request)
        assets = root + DOCS_ASSETS_URL
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def swagger_ui_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()  # an inline script, no assets

    async def redoc_html(request: Request) -> HTMLResponse:
        root = root_of(request)
        return get_redoc_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # a fonts.googleapis.com stylesheet; ReDoc falls back to system fonts
        )

    app.add_route(DOCS_URL, swagger_ui_html, include_in_schema=False)
    if oauth2_redirect_url:
        app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc_html, include_in_schema=False)
