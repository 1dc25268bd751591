"""Who is asking: a session cookie for pages, a Bearer token for /api/*, CSRF on forms.

Always on: without credentials /api/* answers 401 and pages redirect to /login. Failed
logins are counted per peer address and, past a limit, refused for a while; every login,
failed login and refusal is a web event in the audit database.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from typing import Final

from fastapi import HTTPException, Request

from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.web.state import users_of

__all__ = [
    "LOGIN_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "LoginLimiter",
    "NeedsLogin",
    "api_user",
    "check_csrf",
    "csrf_token",
    "page_user",
    "peer_of",
]

LOGIN_FAILURES: Final = 5  # failed logins from one address within the window...
LOGIN_WINDOW_SECONDS: Final = 300.0  # ...and it is refused until the window has passed


class NeedsLogin(Exception):
    """A page was asked for without a session: the app redirects to /login."""


class LoginLimiter:
    """Failed logins per peer address, in this process's memory."""

    def __init__(self) -> None:
        """No failures yet."""
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, peer: str) -> deque[float]:
        times = self._failures.setdefault(peer, deque())
        cutoff = time.monotonic() - LOGIN_WINDOW_SECONDS
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def blocked(self, peer: str) -> bool:
        """Whether this address has failed too often lately."""
        with self._lock:
            return len(self._recent(peer)) >= LOGIN_FAILURES

    def failed(self, peer: str) -> None:
        """Count one failed login."""
        with self._lock:
            self._recent(peer).append(time.monotonic())

    def succeeded(self, peer: str) -> None:
        """Forget this address's failures."""
        with self._lock:
            self._failures.pop(peer, None)


def peer_of(request: Request) -> str:
    """The client's address, as the connection shows it."""
    return request.client.host if request.client is not None else "?"


def _session_user(request: Request) -> User | None:
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    user = users_of(request).get(name)
    if user is None:
        request.session.clear()  # the user was removed: the session ends with it
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
