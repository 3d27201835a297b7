"""Who is looking at the dashboard: the bearer token, kept in a cookie.

A browser cannot add `Authorization: Bearer` to a page load, so the sign-in page puts the
token in a cookie, and every dashboard page, fragment and action checks it with the API's
own `authenticate` (the same lookup, the same refusals: unknown, revoked, missing). The cookie
is HttpOnly (no script can read the token) and SameSite=Lax (another site's form cannot post
an action with it; a link from elsewhere still opens the dashboard signed in). With auth off
(embedded, localhost) nobody signs in and every page just opens.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from fastapi import Request, Response

from api.auth import authenticate
from api.deps import SessionDep, app_state
from api.problems import FORBIDDEN, Problem
from drl_core.models import User

COOKIE = "drl_token"
# The token does not expire (it is valid until revoked); the cookie lasts a working week, so
# a forgotten browser does not stay signed in for ever.
COOKIE_MAX_AGE_S = 7 * 24 * 3600
SIGN_IN_PATH = "/sign-in"


class SignInRequired(Exception):
    """The dashboard's refusal: `problem` is the API's 401 for the same token; `expired` is
    True when a cookie was sent but its token is no longer valid (revoked)."""

    def __init__(self, problem: Problem, expired: bool) -> None:
        super().__init__(problem.detail)
        self.problem, self.expired = problem, expired


def dashboard_user(request: Request, session: SessionDep) -> User | None:
    """The signed-in user (None with auth off); SignInRequired without a valid cookie."""
    if not app_state(request).settings.auth_enabled:
        return None
    token = request.cookies.get(COOKIE) or None
    try:
        user = authenticate(session, "Bearer" if token else None, token)
    except Problem as refused:
        raise SignInRequired(refused, expired=token is not None) from None
    request.state.dashboard_user = user   # for the page header (rendering.render)
    return user


def remember_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE_S, path=cookie_path(request),
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")


def forget_token(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=cookie_path(request), httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")


def cookie_path(request: Request) -> str:
    # Behind a proxy that mounts the app under a prefix, the cookie belongs to that prefix.
    return root_path(request) or "/"


def local_path(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None: after sign-in the browser goes back
    where it was, never to another site (`//evil.example` is another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def sign_in_url(request: Request, expired: bool) -> str:
    """The sign-in page, asked to come back afterwards to the page the browser showed: the
    one `request` asked for; for an htmx fragment, the page it was asked from; for a form
    post, the page that held the form."""
    if "HX-Request" in request.headers:
        back = _local_path_of(request.headers.get("HX-Current-URL"))
    elif request.method != "GET":
        back = _local_path_of(request.headers.get("Referer"))
    else:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": back or f"{root_path(request)}/"}
    if expired:
        query["expired"] = "1"
    return f"{root_path(request)}{SIGN_IN_PATH}?{urlencode(query)}"


def _local_path_of(url: str | None) -> str | None:
    parts = urlsplit(url or "")
    return local_path(parts.path + (f"?{parts.query}" if parts.query else ""))


def root_path(request: Request) -> str:
    """The prefix a proxy mounts the app under ("" without one): every link needs it."""
    return request.scope.get("root_path", "").rstrip("/")


def same_origin(request: Request) -> None:
    """403 for a form posted from another site. The cookie's SameSite=Lax already keeps it
    off another site's posts; the Origin header a browser sends with every POST checks it
    again, for older browsers and same-site subdomains."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("Host"):
        raise Problem(403, f"a form posted from {origin[:100]} may not act on this dashboard",
                      type=FORBIDDEN, title="Forbidden")
