"""The web dashboard (issue 9): pages for people, served by the API process itself at `/`.

Server-rendered (Jinja2 templates), live through htmx fragments, curves drawn by uPlot; every
file a page loads is served by the app from static/ (third-party files pinned in
static/vendor/vendor.json with their sha256 and licence), so it works on a box without
internet. The pages are not part of the OpenAPI document: it describes the JSON API only.

- /                      runs page (filters, pages, live while anything runs)
- /runs/{id}             run page (spec, jobs, curves, codes in 2-d, samples, actions)
- /compare?id=..&id=..   2 to 8 runs: curves overlaid, spec differences, samples lined up
- /sign-in, /sign-out    the sign-in cookie, when auth is on
- /fragments/...         what htmx polls; /runs/{id}/... files and action posts
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.dashboard import account, actions, routes
from api.dashboard.rendering import PACKAGE, STATIC_URL

# Where the dashboard's HTML forms post (application/x-www-form-urlencoded): the only paths
# whose request bodies may be something other than JSON (api/request_limits.py).
FORM_PATHS = ("/sign-in", "/sign-out", "/runs/")


def install_dashboard(app: FastAPI) -> None:
    app.mount(STATIC_URL, StaticFiles(directory=str(PACKAGE / "static")), name="dashboard-static")
    for router in (account.router, routes.pages, routes.resources, actions.router):
        app.include_router(router, include_in_schema=False)
