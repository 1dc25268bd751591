"""Who is asking: a session cookie for pages, a Bearer token for /api/*, CSRF on forms.

Always on: without credentials /api/* answers 401 and pages redirect to /login. A session
names its user and carries the user's session nonce, checked on every request: a new
nonce in the audit database (logout, password change, `users logout`, the user removed)
ends every session of that user, whatever cookies were copied.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request

from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.web.state import users_of

__all__ = [
    "NeedsLogin",
    "api_user",
    "check_csrf",
    "csrf_token",
    "end_sessions",
    "page_user",
    "peer_of",
    "start_session",
]


class NeedsLogin(Exception):
    """A page was asked for without a session: the app redirects to /login."""


def peer_of(request: Request) -> str:
    """The client's address: the connection's peer, or what a trusted proxy forwarded."""
    return request.client.host if request.client is not None else "?"


def start_session(request: Request, user: User) -> None:
    """A new session for `user` (after a good password), with a fresh CSRF token."""
    request.session.clear()
    request.session["user"] = user.name
    request.session["nonce"] = users_of(request).session_nonce(user)
    csrf_token(request)


def end_sessions(request: Request) -> User | None:
    """End this session and every other session of its user; the user, if it was valid."""
    user = _session_user(request)
    request.session.clear()
    if user is not None:
        users_of(request).end_sessions(user.name)
    return user


def _session_user(request: Request) -> User | None:
    """The user of the request's session cookie, if it names one whose sessions go on."""
    name, nonce = request.session.get("user"), request.session.get("nonce")
    if not isinstance(name, str) or not isinstance(nonce, str):
        return None
    user = users_of(request).session_user(name, nonce)
    if user is None:
        request.session.clear()  # ended (logout, new password, user removed): a new login
    return user


def api_user(request: Request) -> User:
    """The user behind an /api/* request: Bearer token, else the page's session; else 401."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = users_of(request).user_for_token(header[7:].strip(), now())
        if user is not None:
            return user
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    user = _session_user(request)
    if user is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return user


def page_user(request: Request) -> User:
    """The user behind a page; without a session, a redirect to /login."""
    user = _session_user(request)
    if user is None:
        raise NeedsLogin()
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use), for every form's hidden field."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, sent: str | None) -> None:
    """403 unless a form carried this session's CSRF token."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
