"""The one HTTP layer between Python and the drl service, for the Client and the drl CLI:
where the server is, the token, retries, and error answers raised as drl.errors exceptions.

The server is `url`, else $DRL_API_URL, else http://127.0.0.1:8000; the token is `token`,
else $DRL_TOKEN (none: a server with auth off).

A request is sent again, after a pause, when
- it could not be sent (connection refused, connect timeout): nothing reached the server;
- the connection broke after it was sent, and sending it twice does no harm: an idempotent
  method (GET, PUT, DELETE, ...) or a request with an Idempotency-Key;
- the server answered 503 with Retry-After (a database or broker that is down, every
  database session busy): nothing was done, and the server said when to come back.
The pause is Retry-After when the server gave one, else exponential backoff with jitter. A
429 is not retried: a per-user limit lasts until the user's own jobs finish.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import Unreachable, error_for, retry_after_s

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Transport errors raised before any byte of the request left: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a request is sent again (see the module docstring)."""

    retries: int = 3            # tries after the first one
    backoff_s: float = 0.5      # the first pause without Retry-After; doubled each time
    max_wait_s: float = 30.0    # no pause is longer, Retry-After included

    def pause(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based). Without Retry-After, between
        half and all of backoff_s * 2**retry: clients cut off together come back apart."""
        if retry_after is not None:
            return min(retry_after, self.max_wait_s)
        return min(self.backoff_s * 2 ** retry, self.max_wait_s) * random.uniform(0.5, 1.0)


NO_RETRIES = RetryPolicy(retries=0)


def may_send_again(method: str, headers: httpx.Headers, err: httpx.TransportError) -> bool:
    return (isinstance(err, _NOT_SENT) or method.upper() in IDEMPOTENT_METHODS
            or "Idempotency-Key" in headers)


def unreachable(url: str, err: httpx.TransportError, lost: bool = False) -> Unreachable:
    """'cannot reach the drl server at URL (connection refused)', or 'lost ...' when the
    connection broke mid-answer."""
    if isinstance(err, httpx.ConnectError):
        refused = "refused" in str(err).lower()
        reason = "connection refused" if refused else str(err) or "cannot connect"
    elif isinstance(err, httpx.TimeoutException):
        reason = "timed out"
    else:
        reason = str(err) or type(err).__name__
    return Unreachable(f"{'lost' if lost else 'cannot reach'} the drl server at {url} ({reason})")


class Connection:
    """An HTTP client on the drl server: `request` and `stream` answer a response, or raise a
    DrlError for an error answer or a server that cannot be reached."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("DRL_API_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("DRL_TOKEN") or None
        self.retry = retry
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer (2xx or 3xx) to `method path`; kwargs as httpx takes them (params, json,
        headers, content)."""
        return self._send(self._http.build_request(method, path, **kwargs), stream=False)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it comes, with no read timeout (a followed log
        may be quiet for long). A connection lost while reading raises Unreachable ('lost
        the drl server ...'): the caller knows how far it got, and may ask again from there."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        response = self._send(self._http.build_request(method, path, timeout=timeout, **kwargs),
                              stream=True)
        try:
            yield response
        except httpx.TransportError as err:
            raise unreachable(self.url, err, lost=True) from None
        finally:
            response.close()

    def _send(self, request: httpx.Request, stream: bool) -> httpx.Response:
        retry = 0
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as err:
                last_try = retry >= self.retry.retries
                if last_try or not may_send_again(request.method, request.headers, err):
                    raise unreachable(self.url, err) from None
                time.sleep(self.retry.pause(retry))
            else:
                if not response.is_error:
                    return response
                response.read()
                response.close()
                retry_after = retry_after_s(response)
                said_when = response.status_code == 503 and retry_after is not None
                if not said_when or retry >= self.retry.retries:
                    raise error_for(response)
                time.sleep(self.retry.pause(retry, retry_after))
            retry += 1

    def close(self) -> None:
        self._http.close()
