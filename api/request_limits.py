"""Request bodies the API accepts: JSON, at most MAX_BODY_BYTES.

Every body this API takes is a small JSON document (a spec, a list of t, sampling
parameters), so anything else is refused before a route reads it:
- a body larger than MAX_BODY_BYTES: 413, from its Content-Length before a byte is read, or
  while a chunked body streams in (never held in memory beyond the limit). Without this the
  server would parse, validate and echo back whatever size a client sends;
- a body whose Content-Type is missing or not JSON (`application/json` or
  `application/*+json`): 415 naming the Content-Type received. `curl -d` sends
  `application/x-www-form-urlencoded` by default, which FastAPI (strict about the content
  type) would otherwise report as a baffling "body: Input should be a valid dictionary".
  The dashboard's HTML forms post urlencoded bodies: its paths (`form_paths`) take those too.

Both answers are problem+json like every other error (api/problems.py). The OpenAPI document
lists them on every operation that takes a body (BODY_STATUSES), with the 400 this middleware
answers for a Content-Length that is not a number and FastAPI for a body that is not UTF-8.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response, problem_type

MAX_BODY_BYTES = 1024 * 1024   # a full ExperimentSpec is ~2 KB

TOO_LARGE = problem_type("body-too-large")                   # 413
UNSUPPORTED_MEDIA = problem_type("unsupported-media-type")   # 415

_BODY_METHODS = {"POST", "PUT", "PATCH"}
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

# What a request with a body may be answered before its route runs: every route that takes
# one declares them (tests/test_api_schema.py checks that none forgets).
BODY_STATUSES = (400, 413, 415)


def is_json_media_type(content_type: str) -> bool:
    """`application/json`, `application/problem+json`, ... with any parameters (charset)."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestLimitsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer every response)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES,
                 form_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Path prefixes whose routes take HTML forms (the dashboard's): a urlencoded body
        # is accepted there too, within the same size limit.
        self.form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is not None and not declared.strip().isdigit():
            await self._refuse(scope, send, Problem(
                400, f"Content-Length: expected a number of bytes, got {declared[:40]!r}"))
            return
        has_body = chunked or (declared is not None and int(declared) > 0)
        if not has_body:
            await self.app(scope, receive, send)
            return
        content_type = headers.get("content-type")
        if content_type is None or not (is_json_media_type(content_type)
                                        or self._is_form(scope, content_type)):
            got = "no Content-Type header" if content_type is None else repr(content_type[:100])
            await self._refuse(scope, send, Problem(
                415, f"Content-Type: expected application/json, got {got}",
                type=UNSUPPORTED_MEDIA, title="Unsupported media type",
                headers={"Accept": "application/json"}))
            return
        if declared is not None and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send, self._too_large(int(declared)))
            return
        if declared is not None:
            # The server (h11/httptools) never delivers more than Content-Length bytes.
            await self.app(scope, receive, send)
            return
        # Chunked: read it here, up to the limit, then hand the app the body as one message.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(scope, send, self._too_large(None))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _is_form(self, scope: Scope, content_type: str) -> bool:
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        media = content_type.split(";", 1)[0].strip().lower()
        return media == FORM_MEDIA_TYPE and path.startswith(self.form_paths)

    def _too_large(self, size: int | None) -> Problem:
        got = f"{size} bytes" if size is not None else "more"
        return Problem(413, f"body: at most {self.max_body_bytes} bytes are accepted, got {got}",
                       type=TOO_LARGE, title="Request body too large")

    @staticmethod
    async def _refuse(scope: Scope, send: Send, problem: Problem) -> None:
        response = problem_response(Request(scope), problem)
        # The body was not read: close the connection rather than leave it half-consumed.
        response.headers["Connection"] = "close"
        await response(scope, _no_receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()   # later calls: wait for the disconnect, as the server would

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
