"""Every error is an RFC 9457 problem: `application/problem+json` with type, title, status,
detail and instance (the request path); validation problems add `errors: [{field, message}]`.

Problem types are URNs (`urn:drl:problem:<slug>`): stable identifiers that clients can switch
on, which do not pretend to be documentation pages (RFC 9457 section 3.1.1 lets a type be a
non-resolvable URI). Plain HTTP errors with nothing to add (an unknown route, a wrong method)
use `about:blank`, whose title is the HTTP reason phrase, as the RFC prescribes.

Handlers are installed for FastAPI's request validation (422), Starlette's HTTP errors
(404 unknown route, 405 with its Allow header, ...), `Problem` raised by the application, a
dependency that is down or saturated (503 with Retry-After: database, broker, artifact store,
every database session in use), and any other exception: a 500 problem that says an internal
error happened and leaks no traceback (the traceback goes to the server log).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as DatabaseInterfaceError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.db_sessions import DatabaseBusy
from drl_core.artifacts import ArtifactStoreError
from drl_core.job_limits import LimitExceeded
from drl_engine.spec import SpecError, merged_list_errors, more_entries, shown_value

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:drl:problem:"
BLANK = "about:blank"

# Where a request value came from; dropped from the field name (`query.limit` -> `limit`).
_LOCATIONS = {"body", "query", "path", "header", "cookie"}

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

log = logging.getLogger("drl.api")


def problem_type(slug: str) -> str:
    return TYPE_PREFIX + slug


# The types this API uses, for reference and for clients:
VALIDATION = problem_type("validation-error")      # 422: a field is invalid (see `errors`)
NOT_FOUND = problem_type("not-found")              # 404: no such experiment, job, t, ...
UNAUTHORIZED = problem_type("unauthorized")        # 401: missing or unknown bearer token
FORBIDDEN = problem_type("forbidden")              # 403: neither its owner nor an admin
CONFLICT = problem_type("conflict")                # 409: idempotency key reused with another spec
NOT_READY = problem_type("not-ready")              # 409: a result its job has not produced yet
NO_ENCODER = problem_type("no-encoder")            # 422: the model kind has no code (vdm)
NO_CODE_SCORE = problem_type("no-code-conditioned-score")  # 422: its score takes no code (not drl/vdrl)
LIMIT_EXCEEDED = problem_type("limit-exceeded")    # 429: a per-user limit (a setting) would be passed
UNAVAILABLE = problem_type("service-unavailable")  # 503: database, broker or store down
BUSY = problem_type("busy")                        # 503: every database session in use
INTERNAL = problem_type("internal-error")          # 500: a bug; details only in the server log


class Problem(Exception):
    """Raise from anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = BLANK,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.type = status, detail, type
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(detail: str, **extra: Any) -> Problem:
    return Problem(404, detail, type=NOT_FOUND, title="Not found", **extra)


def limit_problem(err: LimitExceeded) -> Problem:
    """A request that would take its user past a limit of the service (drl_core/job_limits.py):
    429, naming the limit, its value, what the user has and what the request asked for."""
    return Problem(429, str(err), type=LIMIT_EXCEEDED, title="Limit exceeded", limit=err.limit,
                   limit_value=err.value, queued=err.current, requested=err.adding)


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def validation_problem(errors: Sequence[Mapping[str, str]], detail: str | None = None) -> Problem:
    """A 422 whose detail lists every `field: message` (one line) unless one is given."""
    detail = detail or "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(422, detail, type=VALIDATION, title="Invalid request", errors=list(errors))


def field_name(loc: Iterable[Any]) -> str:
    """`("query", "limit")` -> `limit`; `("body", "model", "kind")` -> `model.kind`;
    `("header", "idempotency-key")` -> `Idempotency-Key`; list positions stay
    (`evaluate.t_grid.3`); a whole-body error is `body`."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in _LOCATIONS:
        if parts[0] == "header":  # FastAPI lower-cases header names: give the usual spelling
            parts[1] = "-".join(word.capitalize() for word in parts[1].split("-"))
        parts = parts[1:]
    return ".".join(parts) or "body"


def pydantic_field_errors(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> list[dict[str, str]]:
    """pydantic/FastAPI error dicts -> [{field, message}], naming each field (the entries of
    one list that fail alike as one)."""
    out = []
    for e, more in merged_list_errors(errors):
        if e.get("type") == "json_invalid":
            # loc is ("body", <character position>): the body as a whole is not JSON
            ctx = e.get("ctx") or {}
            out.append(field_error("body", f"not valid JSON ({ctx.get('error', e['msg'])})"))
            continue
        name = field_name(e.get("loc", ()))
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if name == "body":  # a cross-field check: its message starts with the field it names
            name = field_in_message(message, prefix or "body")
        elif prefix:
            name = f"{prefix}.{name}"
        if e.get("type") == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif e.get("type") != "missing" and isinstance(e.get("input"), (str, int, float)):
            message += f" (got {shown_value(e['input'])})"
        out.append(field_error(name, message + more_entries(more)))
    return out


def spec_problem(err: SpecError, prefix: str = "") -> Problem:
    """A SpecError (from parse_spec or a service function) as a 422 naming the fields.

    parse_spec raises `SpecError(...) from None` while handling pydantic's ValidationError,
    which stays reachable as `__context__`: its structured errors give the `errors` list
    and the detail. A SpecError without one (a cross-field check) is the detail as it is.
    """
    cause = err.__context__
    if isinstance(cause, ValidationError):
        # The detail is rebuilt from the errors (values cut by shown_value): SpecError's own
        # message quotes every value whole.
        return validation_problem(pydantic_field_errors(cause.errors(), prefix))
    return validation_problem([field_error(field_in_message(str(err), prefix or "body"), str(err))],
                              detail=str(err))


# The engine's messages start with the dotted field they are about: `dataset.path: ...`,
# `sample.code_source 'grid' needs ...`.
_LEADING_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)+)\b")


def field_in_message(message: str, default: str) -> str:
    """The dotted field a message starts with, else `default`."""
    match = _LEADING_FIELD.match(message)
    return match.group(1) if match else default


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
    }
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers,
                        media_type=PROBLEM_MEDIA_TYPE)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(request, validation_problem(pydantic_field_errors(exc.errors())))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    headers = exc.headers
    if status == 404:
        detail = f"no route {request.method} {request.url.path}"
    elif status == 405:
        allowed = allowed_methods(request)
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        headers = {**(exc.headers or {}), "Allow": allowed}
    else:
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
    return problem_response(request, Problem(status, detail, headers=headers))


def allowed_methods(request: Request) -> str:
    """Every method the path allows, found by asking each route whether it would fully
    match the request with that method. Starlette's own Allow header names only the first
    route whose path matched (here /experiments is two routes, GET and POST)."""
    allowed = [
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in request.app.router.routes)
    ]
    return ", ".join(allowed)


# Retry-After (seconds): a dependency that is down takes a while to come back; a saturated
# API frees a session within milliseconds to seconds.
RETRY_AFTER_DOWN_S = 5
RETRY_AFTER_BUSY_S = 1


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A dependency (database, broker, artifact store) failed mid-request: 503, retryable.
    The error's words name hosts and ports (sometimes credentials, in a DSN): they go to the
    server log, not to the client. Any other database error is a bug: a 500."""
    if isinstance(exc, DBAPIError) and not _lost_database(exc):
        return await _on_unexpected(request, exc)
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path,
                _dependency(exc), exc)
    return problem_response(request, Problem(
        503, f"the {_dependency(exc)} is unavailable; retry later (the server log says why)",
        type=UNAVAILABLE, title="Service unavailable",
        headers={"Retry-After": str(RETRY_AFTER_DOWN_S)},
    ))


def _lost_database(exc: DBAPIError) -> bool:
    """The connection failed (server down, restarted, network), not the statement."""
    return exc.connection_invalidated or isinstance(
        exc, (DatabaseOperationalError, DatabaseInterfaceError))


async def _on_busy(request: Request, exc: Exception) -> JSONResponse:
    """No database session or connection freed up in time (api/db_sessions.py): the API is
    saturated, not broken; the client should come back in a moment."""
    log.warning("%s %s: busy: %s", request.method, request.url.path, exc)
    return problem_response(request, Problem(
        503, "the server is busy (every database connection is in use); retry in a moment",
        type=BUSY, title="Service unavailable", headers={"Retry-After": str(RETRY_AFTER_BUSY_S)},
    ))


def _dependency(exc: Exception) -> str:
    if isinstance(exc, KombuOperationalError):
        return "broker"
    if isinstance(exc, ArtifactStoreError):
        return "artifact store"
    return "database"


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, Problem(
        500, "an internal error occurred; the server log has the details",
        type=INTERNAL, title="Internal server error",
    ))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for unavailable in (KombuOperationalError, ArtifactStoreError, DBAPIError):
        app.add_exception_handler(unavailable, _on_unavailable)
    for busy in (DatabaseBusy, PoolTimeoutError):
        app.add_exception_handler(busy, _on_busy)
    # Exception (rather than a middleware) reaches Starlette's ServerErrorMiddleware, the
    # outermost layer, so even errors in other middleware become a problem.
    app.add_exception_handler(Exception, _on_unexpected)


# For the OpenAPI document: what an error response looks like.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "example": VALIDATION},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object",
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        }},
    },
    "required": ["type", "title", "status", "detail"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented as a problem+json."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
