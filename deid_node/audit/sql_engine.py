"""The audit engine: creation from a URL, SQLite tuning, transactions, PHI-free errors.

Apart from :mod:`deid_node.audit.db` so that migrations, which need transactions and error
translation too, do not import the database they are run for.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    NoSuchModuleError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from deid_node.database_url import sqlite_file, sqlite_memory
from deid_node.errors import AuditError, AuditUnavailable

__all__ = [
    "DEFAULT_CONNECTIONS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_audit_engine",
    "is_transient",
    "transaction",
    "translate_errors",
]

DEFAULT_CONNECTIONS: Final = 4

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_BEGIN_OPTION: Final = "deid_node_sqlite_begin"
_URL_HINT: Final = (
    "expected an SQLAlchemy URL such as sqlite:///var/audit.db "
    "or postgresql+psycopg://user@host/deid; check [database] url"
)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


# SQLSTATE classes and codes that say "try again": connection exceptions (08), serialization
# failure and deadlock (40001, 40P01), too many connections (53300), the server shutting
# down or starting (57P01, 57P02, 57P03).
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether a database error should go away by itself: the same call, retried later,
    is expected to succeed (a lost or refused connection, a server restart, a
    serialization failure, SQLite's lock held too long)."""
    if isinstance(exc, DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        state = str(getattr(orig, "sqlstate", "") or "")
        if state.startswith("08") or state in _TRANSIENT_STATES:
            return True
        if isinstance(orig, sqlite3.OperationalError):
            return "locked" in str(orig) or "busy" in str(orig)
        # psycopg's own OperationalError without a state: it never reached the server.
        return type(orig).__name__ == "OperationalError" and not state
    return False


def _db_error(action: str, exc: SQLAlchemyError) -> AuditError:
    # str(exc) of a StatementError carries the SQL and its parameters, which may be PHI
    # (linkage rows): describe only the driver's own first line.
    cause: BaseException = exc.orig if isinstance(exc, StatementError) and exc.orig else exc
    detail = _first_line(str(cause)) or type(cause).__name__
    kind = AuditUnavailable if is_transient(exc) else AuditError
    return kind(
        f"audit database could not {action}: {detail}; check that [database] url names "
        "a reachable database this user can write"
    )


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into one-line AuditErrors saying what could not be done."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise _db_error(action, exc) from None


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """A connection in a transaction, committed when the block ends without error."""
    with engine.connect() as conn:
        if write:
            # SQLite: take the write lock up front so busy_timeout applies, instead of
            # failing when a read transaction later tries to write.
            conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield conn


def _switch_to_wal(cursor: Any) -> str:
    # The switch takes an exclusive lock and fails at once with "database is locked" when
    # another connection holds one, busy_timeout or not: retry until that timeout.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode in ("wal", "memory"):
                return mode
            return str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _on_sqlite_connect(dbapi_connection: object, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        # Let SQLAlchemy emit BEGIN itself, so DDL in a migration step is transactional too
        # (the sqlite3 module's legacy mode autocommits DDL).
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        mode = _switch_to_wal(cursor)
        if mode not in ("wal", "memory"):
            raise AuditError(
                f"audit database could not switch to WAL mode (it stays in {mode!r}): "
                "check that the database file and its folder are writable"
            )
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(str(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN")))


def _prepare_sqlite_file(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        problem = (
            "a file is in the way"
            if isinstance(exc, FileExistsError | NotADirectoryError)
            else exc.strerror
        )
        raise AuditError(
            f"cannot create the audit database folder {path.parent}: {problem}; "
            "check [database] url"
        ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.is_dir():
            raise AuditError(
                f"audit database {path} is a folder: point [database] url at a file"
            ) from None
        if not os.access(path, os.R_OK | os.W_OK):
            raise AuditError(
                f"audit database {path} is not readable and writable by this user: "
                "fix its permissions"
            ) from None
        return
    except OSError as exc:
        raise AuditError(
            f"cannot create the audit database {path}: {exc.strerror}; "
            "check that its folder is writable"
        ) from None
    os.close(fd)
    os.chmod(path, 0o600)  # an empty file is a valid empty SQLite database


def create_audit_engine(url: str, connections: int = DEFAULT_CONNECTIONS) -> Engine:
    """Create the engine for an audit database URL (SQLite file tuned for WAL), unmigrated.

    A server database gets a pool of `connections` (and as many more at peaks), each
    checked before use, so a connection a server restart cut is replaced, not reported:
    size the server's max_connections for every process of every node.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise AuditError(f"invalid audit database url: {_URL_HINT}") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    options: dict[str, object] = {}
    if sqlite_memory(url):
        # One shared connection, or every connection would see its own empty database.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif not is_sqlite:
        options = {
            "pool_size": connections,
            "max_overflow": connections,
            "pool_pre_ping": True,
            "pool_timeout": 30,
        }
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
            # A node must notice a server that went away, not wait on a dead socket.
            options["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError:
        raise AuditError(
            f"unsupported audit database url scheme {parsed.drivername!r}: {_URL_HINT}"
        ) from None
    except ImportError as exc:
        raise AuditError(
            f"the database driver for {parsed.drivername!r} is not installed "
            f"(missing module {exc.name!r}): install it, e.g. pip install 'deid-node[postgres]'"
        ) from None
    except (ArgumentError, ValueError, TypeError) as exc:
        raise AuditError(
            f"invalid audit database url ({_first_line(str(exc))}): {_URL_HINT}"
        ) from None
    path = sqlite_file(url)
    if path is not None:
        # Only now that the driver is known to exist: a bad URL leaves no file behind.
        _prepare_sqlite_file(path)
    if is_sqlite:
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    return engine
