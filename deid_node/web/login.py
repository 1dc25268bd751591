"""Logging in and out: a form with CSRF, rate-limited, every attempt a web event."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deid_node.clock import now
from deid_node.web.auth import check_csrf, csrf_token, peer_of
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
    if limiter.blocked(peer):
        users.record_event(now(), name, peer, "login_refused", "too many failed logins")
        return _form(request, "Too many failed logins from this address: try again later.", 429)
    user = users.check_password(name, password)
    if user is None:
        limiter.failed(peer)
        users.record_event(now(), name, peer, "login_failed")
        return _form(request, "Wrong user name or password.", 401)
    limiter.succeeded(peer)
    users.record_event(now(), user.name, peer, "login")
    request.session.clear()
    request.session["user"] = user.name
    csrf_token(request)  # a fresh one for the new session
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session."""
    check_csrf(request, csrf)
    name = request.session.get("user")
    if isinstance(name, str):
        users_of(request).record_event(now(), name, peer_of(request), "logout")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
