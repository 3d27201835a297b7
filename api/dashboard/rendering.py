"""Rendering dashboard responses: templates, error pages, and the two kinds of route.

A *page* route (something a person navigates to, or a form posts to) answers every error as
a page: an unknown id is a 404 page, an invalid value a 422 page, both with the API's problem
detail; without a valid sign-in it redirects to the sign-in page. A *resource* route (an
htmx fragment, an image, a download) answers exactly as the JSON API does: a 401 problem
without a valid sign-in (plus HX-Redirect, so htmx takes the browser to sign-in) and a
problem+json for any other error.

Every dashboard response carries a Content-Security-Policy that lets the browser load
nothing but this server's own files.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.dashboard.sign_in import SignInRequired, forget_token, root_path, sign_in_url
from api.deps import app_state
from api.problems import Problem, problem_response, pydantic_field_errors, validation_problem

PACKAGE = files("api.dashboard")
STATIC_URL = "/dashboard-static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'")

templates = Jinja2Templates(directory=str(PACKAGE / "templates"))


def _when(value: datetime | None) -> str:
    """A timestamp as the team reads it: UTC, to the second."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


templates.env.filters.update(when=_when, duration=_duration, number=_number)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """`template` with `context`, plus what every template uses: the request, the link
    prefix (`root`), the static files' URL, whether auth is on and who is signed in."""
    context |= {"root": root_path(request), "static": root_path(request) + STATIC_URL,
                "auth_enabled": app_state(request).settings.auth_enabled,
                "user": getattr(request.state, "dashboard_user", None)}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def error_page(request: Request, problem: Problem) -> HTMLResponse:
    """The problem as a page, with its status code and detail."""
    response = render(request, "error.html", problem.status, problem=problem)
    for name, value in problem.headers.items():
        response.headers.setdefault(name, value)
    return response


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 See Other to a dashboard path: after a form post the browser loads it with GET."""
    return RedirectResponse(root_path(request) + path, status_code=303)


async def form_fields(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded; the API's request limits
    bound its size), the last value of a repeated name winning."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """A route whose errors are pages and whose refusal is a redirect to sign-in."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handle(request)
            except SignInRequired as refused:
                response = RedirectResponse(sign_in_url(request, refused.expired), status_code=303)
                if refused.expired:
                    forget_token(response, request)
                return response
            except Problem as problem:
                return error_page(request, problem)
            except RequestValidationError as invalid:
                return error_page(request, validation_problem(pydantic_field_errors(invalid.errors())))
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            return response

        return page


class ResourceRoute(APIRoute):
    """A route answered like the JSON API: without a valid sign-in, the API's own 401 for
    the same (missing or invalid) token."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def resource(request: Request) -> Response:
            try:
                response = await handle(request)
            except SignInRequired as refused:
                response = problem_response(request, refused.problem)
                response.headers["HX-Redirect"] = sign_in_url(request, refused.expired)
                return response
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            return response

        return resource
