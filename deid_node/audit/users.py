"""Web console users, API tokens, session nonces and web events: their SQL.

Passwords are stored as Argon2id hashes (argon2-cffi); API tokens, which are random and
long, as their SHA-256. Neither is ever stored or logged as given. Each user has a random
session nonce that every session cookie of theirs carries: a new nonce ends them all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update

from deid_node.audit.records import format_time
from deid_node.audit.schema import API_TOKENS, USERS, WEB_EVENTS
from deid_node.audit.sql_engine import transaction, translate_errors
from deid_node.errors import AuditError

__all__ = ["MIN_PASSWORD_LENGTH", "User", "Users", "check_user_name"]

MIN_PASSWORD_LENGTH: Final = 10
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASHER: Final = PasswordHasher()  # Argon2id with the library's current parameters
# Checked against when the name is unknown, so a wrong name costs what a wrong password does.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    """A console user, as the console needs it."""

    id: int
    name: str
    created_at: datetime


def check_user_name(name: str) -> str:
    """The name if it is valid, else AuditError saying what a name may hold."""
    if not _NAME.match(name):
        raise AuditError(
            f"invalid user name {name!r}: 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )
    return name


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuditError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")


def _nonce() -> str:
    return secrets.token_urlsafe(24)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Users:
    """Users, tokens and web events over the audit database's engine."""

    def __init__(self, engine: Engine) -> None:
        """Wrap the (migrated) audit engine."""
        self._engine = engine

    def add(self, name: str, password: str, now: datetime) -> None:
        """Add a user; AuditError if the name is taken or the password too short."""
        check_user_name(name)
        _check_password(password)
        values = {
            "name": name,
            "password_hash": _HASHER.hash(password),
            "created_at": format_time(now),
            "session_nonce": _nonce(),
        }
        with translate_errors("add a user"), transaction(self._engine, write=True) as conn:
            if conn.execute(select(USERS.c.id).where(USERS.c.name == name)).first() is not None:
                raise AuditError(f"user {name!r} exists already: remove it first to replace it")
            conn.execute(insert(USERS).values(values))

    def remove(self, name: str) -> None:
        """Remove a user and its tokens; AuditError if there is no such user."""
        with translate_errors("remove a user"), transaction(self._engine, write=True) as conn:
            user_id = conn.scalar(select(USERS.c.id).where(USERS.c.name == name))
            if user_id is None:
                raise AuditError(f"no user {name!r}: see deid-node users list")
            conn.execute(delete(API_TOKENS).where(API_TOKENS.c.user_id == user_id))
            conn.execute(delete(USERS).where(USERS.c.id == user_id))

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; every session of theirs ends (their tokens stay)."""
        _check_password(password)
        self._update(name, "change a password", password_hash=_HASHER.hash(password))

    def end_sessions(self, name: str) -> None:
        """End every session of a user (a new nonce); AuditError if there is no such user."""
        self._update(name, "end sessions")

    def _update(self, name: str, what: str, **values: str) -> None:
        with translate_errors(what), transaction(self._engine, write=True) as conn:
            done = conn.execute(
                update(USERS).where(USERS.c.name == name).values(session_nonce=_nonce(), **values)
            )
            if done.rowcount != 1:
                raise AuditError(f"no user {name!r}: see deid-node users list")

    def session_nonce(self, user: User) -> str:
        """The nonce a new session of the user carries (made if the user has none yet)."""
        u = USERS.c
        with translate_errors("start a session"), transaction(self._engine, write=True) as conn:
            conn.execute(
                update(USERS)
                .where(u.id == user.id, u.session_nonce.is_(None))
                .values(session_nonce=_nonce())
            )
            nonce = conn.scalar(select(u.session_nonce).where(u.id == user.id))
        if not isinstance(nonce, str):
            raise AuditError(f"user {user.name!r} was removed meanwhile")
        return nonce

    def session_user(self, name: str, nonce: str) -> User | None:
        """The user of a session cookie, or None if the user is gone or the nonce changed."""
        u = USERS.c
        with translate_errors("check a session"), transaction(self._engine, write=False) as conn:
            row = conn.execute(
                select(u.id, u.name, u.created_at, u.session_nonce).where(u.name == name)
            ).first()
        if row is None or not row[3] or not hmac.compare_digest(row[3].encode(), nonce.encode()):
            return None
        return User(row[0], row[1], datetime.fromisoformat(row[2]))

    def list(self) -> list[User]:
        """Every user, by name."""
        u = USERS.c
        with translate_errors("list users"), transaction(self._engine, write=False) as conn:
            rows = conn.execute(select(u.id, u.name, u.created_at).order_by(u.name)).all()
        return [User(r[0], r[1], datetime.fromisoformat(r[2])) for r in rows]

    def check_password(self, name: str, password: str) -> User | None:
        """The user if the password is theirs, else None (as slow for an unknown name)."""
        u = USERS.c
        with translate_errors("check a password"), transaction(self._engine, write=False) as conn:
            row = conn.execute(
                select(u.id, u.name, u.created_at, u.password_hash).where(u.name == name)
            ).first()
        try:
            _HASHER.verify(row[3] if row is not None else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        return User(row[0], row[1], datetime.fromisoformat(row[2]))

    def new_token(self, name: str, now: datetime) -> str:
        """A new API token for the user (shown once: only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        with translate_errors("make a token"), transaction(self._engine, write=True) as conn:
            user_id = conn.scalar(select(USERS.c.id).where(USERS.c.name == name))
            if user_id is None:
                raise AuditError(f"no user {name!r}: add it first (deid-node users add)")
            conn.execute(
                insert(API_TOKENS).values(
                    user_id=user_id, token_hash=_token_hash(token), created_at=format_time(now)
                )
            )
        return token

    def user_for_token(self, token: str, now: datetime) -> User | None:
        """The user a token belongs to, or None; notes when it was last used."""
        u, t = USERS.c, API_TOKENS.c
        digest = _token_hash(token)
        with translate_errors("check a token"), transaction(self._engine, write=False) as conn:
            row = conn.execute(
                select(u.id, u.name, u.created_at, t.id, t.last_used_at)
                .select_from(API_TOKENS.join(USERS, t.user_id == u.id))
                .where(t.token_hash == digest)
            ).first()
        if row is None:
            return None
        stamp = format_time(now)
        if row[4] is None or row[4][:16] != stamp[:16]:  # at most one write a minute a token
            with (
                translate_errors("note a token's use"),
                transaction(self._engine, write=True) as conn,
            ):
                conn.execute(update(API_TOKENS).where(t.id == row[3]).values(last_used_at=stamp))
        return User(row[0], row[1], datetime.fromisoformat(row[2]))

    def record_event(
        self, now: datetime, user_name: str, peer: str, kind: str, detail: str | None = None
    ) -> None:
        """Note a login, a failed login or an action."""
        values = {
            "at": format_time(now),
            "user_name": user_name[:64],
            "peer_address": peer[:255],
            "kind": kind,
            "detail": detail,
        }
        with translate_errors("record a web event"), transaction(self._engine, write=True) as conn:
            conn.execute(insert(WEB_EVENTS).values(values))

    def iter_events(self, limit: int = 100) -> Iterator[dict[str, object]]:
        """The newest web events first."""
        w = WEB_EVENTS.c
        stmt = select(WEB_EVENTS).order_by(w.id.desc()).limit(limit)
        with translate_errors("read web events"), transaction(self._engine, write=False) as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        yield from rows
