"""What a failed call to the drl service raises: one exception class per kind of answer.

Every error the service sends is an RFC 9457 problem (`application/problem+json`: type,
title, status, detail; api/problems.py), and each exception carries it:

    DrlError                    .status .type .title .detail .problem (the whole body)
                                .retry_after (seconds, when the server said when to retry)
    ├── ClientError             4xx: the request was wrong; sending it again will not help
    │   ├── Unauthorized        401: no token, or one that is unknown or revoked
    │   ├── Forbidden           403: neither the experiment's owner nor an admin
    │   ├── NotFound            404: no such experiment, job, t, step, ...
    │   ├── Conflict            409
    │   │   └── NotReady        409 of type not-ready: its job has not produced it yet
    │   ├── InvalidRequest      422: .errors lists [{field, message}]
    │   └── RateLimited         429: a per-user limit (its detail names it)
    ├── ServerError             5xx
    │   └── Unavailable         503: a dependency is down or the server is busy
    └── Unreachable             no answer: the server could not be reached (status None)

The mapping is by the problem's type where one says more than its status (not-ready), else by
the status, so a client can `except NotReady:` and wait, or `except ClientError:` to tell its
own mistakes from the server's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

PROBLEM_TYPE_PREFIX = "urn:drl:problem:"
NOT_READY_TYPE = PROBLEM_TYPE_PREFIX + "not-ready"


class DrlError(Exception):
    """A call to the drl service that did not succeed."""

    def __init__(self, detail: str, *, status: int | None = None, type: str = "about:blank",
                 title: str = "", problem: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail, self.status, self.type, self.title = detail, status, type, title
        self.problem = problem or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.detail if self.status is None else f"{self.status} {self.title}: {self.detail}"


class ClientError(DrlError):
    """4xx: the request was wrong (a bad field, an unknown id, not allowed, not yet)."""


class Unauthorized(ClientError):
    pass


class Forbidden(ClientError):
    pass


class NotFound(ClientError):
    pass


class Conflict(ClientError):
    pass


class NotReady(Conflict):
    """The result's job has not produced it yet: the detail says what that job is doing."""


class InvalidRequest(ClientError):
    @property
    def errors(self) -> list[dict[str, str]]:
        """[{field, message}] for each invalid field (`model.kind`, `t`, ...)."""
        return list(self.problem.get("errors") or [])


class RateLimited(ClientError):
    pass


class ServerError(DrlError):
    """5xx: the server failed (a bug, or a dependency that is down)."""


class Unavailable(ServerError):
    pass


class Unreachable(DrlError):
    """No answer at all: connection refused, timed out, or lost mid-answer."""


_BY_STATUS: dict[int, type[DrlError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: InvalidRequest,
    429: RateLimited, 503: Unavailable,
}


def error_for(response: httpx.Response) -> DrlError:
    """The exception for an error response (its body read), carrying its problem."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    if problem.get("detail"):
        detail = " ".join(str(problem["detail"]).split())
    else:   # not a problem: a proxy's page, say; its start is the best clue
        detail = f"{status} {response.reason_phrase}: {' '.join(response.text[:200].split())}"
    kind = str(problem.get("type") or "about:blank")
    if kind == NOT_READY_TYPE:
        cls: type[DrlError] = NotReady
    else:
        cls = _BY_STATUS.get(status) or (ClientError if status < 500 else ServerError)
    return cls(detail, status=status, type=kind,
               title=str(problem.get("title") or response.reason_phrase), problem=problem,
               retry_after=retry_after_s(response))


def retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the service sends seconds), or None."""
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None
