"""Signing in and out of the dashboard (api/dashboard/sign_in.py says how the cookie works).

Sign-in takes a token made by `drl token create NAME`, checks it with the API's
`authenticate`, and keeps it in the cookie; a refused token is the sign-in page again with
the API's reason (401). Sign-out clears the cookie. With auth off both just go to the runs page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import authenticate
from api.dashboard.rendering import PageRoute, form_fields, redirect, render
from api.dashboard.sign_in import (SIGN_IN_PATH, forget_token, local_path, remember_token, root_path,
                                   same_origin)
from api.deps import SessionDep, app_state
from api.problems import Problem

router = APIRouter(route_class=PageRoute)

Form = Annotated[dict[str, str], Depends(form_fields)]


@router.get(SIGN_IN_PATH)
def sign_in_page(request: Request, next: str = "", expired: str = "") -> Response:
    if not app_state(request).settings.auth_enabled:
        return redirect(request, "/")
    reason = "Your token is no longer valid (revoked?): sign in again." if expired else None
    return render(request, "sign_in.html", next=local_path(next) or "", reason=reason)


@router.post(SIGN_IN_PATH, dependencies=[Depends(same_origin)])
def sign_in(request: Request, session: SessionDep, form: Form) -> Response:
    back = local_path(form.get("next")) or root_path(request) + "/"
    if not app_state(request).settings.auth_enabled:
        return redirect(request, "/")
    token = form.get("token", "").strip()
    try:
        authenticate(session, "Bearer" if token else None, token or None)
    except Problem as refused:
        return render(request, "sign_in.html", refused.status, next=local_path(form.get("next")) or "",
                      reason=refused.detail)
    response = Response(status_code=303, headers={"Location": back})
    remember_token(response, request, token)
    return response


@router.post("/sign-out", dependencies=[Depends(same_origin)])
def sign_out(request: Request) -> Response:
    response = redirect(request, SIGN_IN_PATH if app_state(request).settings.auth_enabled else "/")
    forget_token(response, request)
    return response
