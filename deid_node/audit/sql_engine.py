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
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError, StatementError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from deid_node.database_url import sqlite_file, sqlite_memory
from deid_node.errors import AuditError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_audit_engine",
    "transaction",
    "translate_errors",
]

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_BEGIN_OPTION: Final = "deid_node_sqlite_begin"
_URL_HINT: Final = (
    "expected an SQLAlchemy URL such as sqlite:///var/audit.db "
    "or postgresql+psycopg://user@host/deid; check [database] url"
)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _db_error(action: str, exc: SQLAlchemyError) -> AuditError:
    # str(exc) of a StatementError carries the SQL and its parameters, which may be PHI
    # (linkage rows): describe only the driver's own first line.
    cause: BaseException = exc.orig if isinstance(exc, StatementError) and exc.orig else exc
    detail = _first_line(str(cause)) or type(cause).__name__
    return AuditError(
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


def create_audit_engine(url: str) -> Engine:
    """Create the engine for an audit database URL (SQLite file tuned for WAL), unmigrated."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise AuditError(f"invalid audit database url: {_URL_HINT}") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    options: dict[str, object] = {}
    if sqlite_memory(url):
        # One shared connection, or every connection would see its own empty database.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError:
        raise AuditError(
            f"unsupported audit database url scheme {parsed.drivername!r}: {_URL_HINT}"
        ) from None
    except ImportError as exc:
        raise AuditError(
            f"the database driver for {parsed.drivername!r} is not installed "
            f"(missing module {exc.name!r}): install it, e.g. pip install psycopg[binary]"
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
