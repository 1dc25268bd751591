"""Logging in and out: a form with CSRF, rate-limited, every attempt a web event."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deid_node.clock import now
from deid_node.web.auth import check_csrf, csrf_token, end_sessions, peer_of, start_session
from deid_node.web.state import limiter_of, render, users_of

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    """The login form."""
    return _form(request, None, 200)


def _form(request: Request, error: str | None, status: int) -> Response:
    context = {"csrf": csrf_token(request), "error": error, "user": None}
    return render(request, "login.html", context, status)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Check the password; on success a session, on failure the form again."""
    check_csrf(request, csrf)
    peer = peer_of(request)
    limiter = limiter_of(request)
    users = users_of(request)
    name = username.strip()[:64]
    refusal = limiter.refusal(peer, name)
    if refusal is not None:
        users.record_event(now(), name, peer, "login_refused", refusal.reason)
        seconds = max(1, math.ceil(refusal.seconds))
        message = f"{refusal.reason.capitalize()}: try again in {seconds} s."
        response = _form(request, message, 429)
        response.headers["Retry-After"] = str(seconds)
        return response
    user = users.check_password(name, password)
    if user is None:
        limiter.failed(peer, name)
        users.record_event(now(), name, peer, "login_failed")
        return _form(request, "Wrong user name or password.", 401)
    limiter.succeeded(peer, name)
    users.record_event(now(), user.name, peer, "login")
    start_session(request, user)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session, and every other session of its user."""
    check_csrf(request, csrf)
    user = end_sessions(request)
    if user is not None:
        users_of(request).record_event(now(), user.name, peer_of(request), "logout")
    return RedirectResponse("/login", status_code=303)
