"""Audit database: one row per received object and per association; the only module with SQL.

Times are stored as fixed-width UTC ISO 8601 strings (``2026-11-22T05:01:02.123456Z``), so
they compare correctly as text on every database and export without conversion. Original
identifiers are stored only in the ``linkage`` table, for profiles with ``record_linkage``.
Schema changes go through :data:`MIGRATIONS`, applied by :func:`migrate` one transaction per
step, so an existing database survives an upgrade.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TextIO, TypeAlias

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql import Executable

from deid_node.errors import AuditError

__all__ = [
    "ASSOCIATION_COLUMNS",
    "ASSOCIATION_OUTCOMES",
    "LINKAGE_COLUMNS",
    "MIGRATIONS",
    "OBJECT_COLUMNS",
    "STATUSES",
    "STUDY_COLUMNS",
    "AssociationFilters",
    "AuditDB",
    "Filters",
    "LinkageRecord",
    "Migration",
    "MigrationStep",
    "ObjectRecord",
    "Status",
    "StudySummary",
    "create_audit_engine",
    "format_time",
    "migrate",
    "open_audit",
    "parse_time",
    "write_csv",
]

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
STREAM_BATCH: Final = 1000
_BEGIN_OPTION: Final = "deid_node_sqlite_begin"
_URL_HINT: Final = (
    "expected an SQLAlchemy URL such as sqlite:///var/audit.db "
    "or postgresql+psycopg://user@host/deid; check [database] url"
)
_TIME_HINT: Final = "expected ISO 8601 such as 2026-11-22 or 2026-11-22T05:00:00Z"


class Status(StrEnum):
    """What became of a received object."""

    STORED = "stored"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


STATUSES: Final[tuple[str, ...]] = tuple(s.value for s in Status)
# How an association ended, as in the associations.outcome column; "open" selects rows
# with no outcome yet (running, or the node died during them).
ASSOCIATION_OUTCOMES: Final = ("released", "aborted", "closed", "rejected", "open")

# --------------------------------------------------------------------------------------------
# Current schema (ORM). Migrations below hold their own frozen copy of each version's schema.

_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid


class Base(DeclarativeBase):
    """Declarative base of the audit tables."""


class ObjectRow(Base):
    """One received object and what became of it; no original identifiers."""

    __tablename__ = "objects"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    received_at: Mapped[str] = mapped_column(String(32), index=True)
    processed_at: Mapped[str | None] = mapped_column(String(32))
    association_id: Mapped[str | None] = mapped_column(String(64), index=True)
    calling_ae: Mapped[str] = mapped_column(String(64), index=True)
    called_ae: Mapped[str] = mapped_column(String(64))
    peer_address: Mapped[str] = mapped_column(String(255))
    profile: Mapped[str] = mapped_column(String(255), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String)
    pseudo_patient_id: Mapped[str | None] = mapped_column(String(255))
    pseudo_study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    pseudo_series_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_sop_uid: Mapped[str | None] = mapped_column(String(64))
    output_path: Mapped[str | None] = mapped_column(String)
    quarantine_path: Mapped[str | None] = mapped_column(String)


class AssociationRow(Base):
    """One association, accepted or rejected."""

    __tablename__ = "associations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[str] = mapped_column(String(32), index=True)
    ended_at: Mapped[str | None] = mapped_column(String(32))
    peer_address: Mapped[str] = mapped_column(String(255))
    calling_ae: Mapped[str] = mapped_column(String(64))
    called_ae: Mapped[str] = mapped_column(String(64))
    objects: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String)


class LinkageRow(Base):
    """Original identifiers of one object; PHI, written only for profiles with record_linkage."""

    __tablename__ = "linkage"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    object_id: Mapped[int] = mapped_column(_ID, ForeignKey("objects.id"), index=True)
    profile: Mapped[str] = mapped_column(String(255))
    original_patient_id: Mapped[str | None] = mapped_column(String)
    original_patient_name: Mapped[str | None] = mapped_column(String)
    original_study_uid: Mapped[str | None] = mapped_column(String(64))
    original_series_uid: Mapped[str | None] = mapped_column(String(64))
    original_sop_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_patient_id: Mapped[str | None] = mapped_column(String(255))
    pseudo_study_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_sop_uid: Mapped[str | None] = mapped_column(String(64))
    original_accession_number: Mapped[str | None] = mapped_column(String)
    date_shift_days: Mapped[int | None] = mapped_column(Integer)  # None: dates not shifted


class SchemaVersion(Base):
    """The single row holding the schema version the database has been migrated to."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


_OBJECTS = Base.metadata.tables["objects"]
_ASSOCIATIONS = Base.metadata.tables["associations"]
_LINKAGE = Base.metadata.tables["linkage"]
_SCHEMA_VERSION = Base.metadata.tables["schema_version"]

OBJECT_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in _OBJECTS.columns)
ASSOCIATION_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in _ASSOCIATIONS.columns)
LINKAGE_COLUMNS: Final[tuple[str, ...]] = (
    "object_id",
    "received_at",
    "calling_ae",
    "profile",
    "original_patient_id",
    "original_patient_name",
    "original_study_uid",
    "original_series_uid",
    "original_sop_uid",
    "pseudo_patient_id",
    "pseudo_study_uid",
    "pseudo_series_uid",
    "pseudo_sop_uid",
    # Added in schema version 2; last, so scripts reading earlier columns by position work.
    "original_accession_number",
    "date_shift_days",
)
_TIME_COLUMNS: Final = frozenset({"received_at", "processed_at", "started_at", "ended_at"})

# --------------------------------------------------------------------------------------------
# Records and filters


@dataclass(frozen=True)
class ObjectRecord:
    """What the pipeline reports for one received object (every objects column but id)."""

    received_at: datetime
    processed_at: datetime | None
    association_id: str | None
    calling_ae: str
    called_ae: str
    peer_address: str
    profile: str
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    size_bytes: int
    status: str
    reason: str | None
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None
    pseudo_series_uid: str | None
    pseudo_sop_uid: str | None
    output_path: str | None
    quarantine_path: str | None = None


@dataclass(frozen=True)
class LinkageRecord:
    """Original and pseudonymous identifiers of one object, for profiles with record_linkage.

    ``date_shift_days`` is the offset added to every date (retain-longitudinal-modified-dates),
    None when dates were not shifted: with it, a shifted date maps back to the original.
    """

    profile: str
    original_patient_id: str | None
    original_patient_name: str | None
    original_accession_number: str | None
    original_study_uid: str | None
    original_series_uid: str | None
    original_sop_uid: str | None
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None
    pseudo_sop_uid: str | None
    date_shift_days: int | None


@dataclass(frozen=True)
class Filters:
    """Which objects a query selects; ``since`` is inclusive, ``until`` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    calling_ae: str | None = None
    profile: str | None = None
    status: str | None = None
    study: str | None = None

    def __post_init__(self) -> None:
        _check_range(self.since, self.until)
        if self.status is not None:
            _check_status(self.status, "status filter")


@dataclass(frozen=True)
class AssociationFilters:
    """Which associations a query selects, by start time (``until`` exclusive)."""

    since: datetime | None = None
    until: datetime | None = None
    calling_ae: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        _check_range(self.since, self.until)
        if self.outcome is not None and self.outcome not in ASSOCIATION_OUTCOMES:
            raise AuditError(
                f"invalid outcome filter {self.outcome!r}: expected one of "
                f"{', '.join(ASSOCIATION_OUTCOMES)}"
            )


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise AuditError(
                f"filter '{name}' is a naive datetime: give a timezone-aware one "
                "(parse_time() returns UTC)"
            )
    if since is not None and until is not None and since >= until:
        raise AuditError(
            f"invalid time range: since {format_time(since)} is not before "
            f"until {format_time(until)}; until is exclusive"
        )


@dataclass(frozen=True)
class StudySummary:
    """Counts for one pseudonymous study of one profile and calling AE.

    Objects without a study (quarantined or rejected before de-identification) are
    summarised per association instead: ``association_id`` says which.
    """

    pseudo_study_uid: str | None
    pseudo_patient_id: str | None
    calling_ae: str
    profile: str
    first_received_at: datetime
    last_received_at: datetime
    objects: int
    stored: int
    quarantined: int
    duplicate: int
    rejected: int
    association_id: str | None = None


STUDY_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(StudySummary))

# --------------------------------------------------------------------------------------------
# Times


def format_time(value: datetime) -> str:
    """Return an aware datetime as fixed-width UTC ISO 8601 with microseconds and ``Z``."""
    if value.utcoffset() is None:
        raise AuditError("naive datetime given: audit times must be timezone-aware (UTC)")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time (naive means UTC) into an aware UTC datetime."""
    stripped = text.strip()
    try:
        if not stripped:
            raise ValueError(text)
        value = datetime.fromisoformat(stripped)
    except ValueError:
        raise AuditError(f"invalid time {text!r}: {_TIME_HINT}") from None
    if value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _time_from_db(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _time_to_db(value: object, field: str) -> str:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise AuditError(f"{field} must be a timezone-aware datetime, e.g. datetime.now(UTC)")
    return format_time(value)


def _check_status(value: str, what: str) -> str:
    if value not in STATUSES:
        raise AuditError(f"invalid {what} {value!r}: expected one of {', '.join(STATUSES)}")
    return str(Status(value).value)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise AuditError(f"invalid limit {limit}: expected a positive integer")


# --------------------------------------------------------------------------------------------
# Errors


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
def _translate(action: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise _db_error(action, exc) from None


@contextmanager
def _transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    with engine.connect() as conn:
        if write:
            # SQLite: take the write lock up front so busy_timeout applies, instead of
            # failing when a read transaction later tries to write.
            conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield conn


# --------------------------------------------------------------------------------------------
# Engine


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


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _prepare_sqlite_file(url: URL) -> None:
    database = url.database or ""
    if database.startswith("file:"):  # a sqlite3 URI (uri=true): the caller manages the file
        return
    path = Path(database).expanduser()
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
    is_file = is_sqlite and not _is_sqlite_memory(parsed)
    options: dict[str, object] = {}
    if is_sqlite and not is_file:
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
    if is_file:
        # Only now that the driver is known to exist: a bad URL leaves no file behind.
        _prepare_sqlite_file(parsed)
    if is_sqlite:
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    return engine


# --------------------------------------------------------------------------------------------
# Migrations

MigrationStep: TypeAlias = Callable[[Connection], None]
Migration: TypeAlias = tuple[int, MigrationStep]


def _create_v1(conn: Connection) -> None:
    """Version 1: objects, associations and linkage tables (a frozen copy, never edited)."""
    md = MetaData()
    Table(
        "objects",
        md,
        Column("id", _ID, primary_key=True),
        Column("received_at", String(32), nullable=False),
        Column("processed_at", String(32)),
        Column("association_id", String(64)),
        Column("calling_ae", String(64), nullable=False),
        Column("called_ae", String(64), nullable=False),
        Column("peer_address", String(255), nullable=False),
        Column("profile", String(255), nullable=False),
        Column("sop_class_uid", String(64)),
        Column("transfer_syntax_uid", String(64)),
        Column("size_bytes", BigInteger, nullable=False),
        Column("status", String(16), nullable=False),
        Column("reason", String),
        Column("pseudo_patient_id", String(255)),
        Column("pseudo_study_uid", String(64)),
        Column("pseudo_series_uid", String(64)),
        Column("pseudo_sop_uid", String(64)),
        Column("output_path", String),
        Column("quarantine_path", String),
        *(
            Index(f"ix_objects_{name}", name)
            for name in (
                "received_at",
                "association_id",
                "calling_ae",
                "profile",
                "status",
                "pseudo_study_uid",
            )
        ),
    )
    Table(
        "associations",
        md,
        Column("id", String(64), primary_key=True),
        Column("started_at", String(32), nullable=False),
        Column("ended_at", String(32)),
        Column("peer_address", String(255), nullable=False),
        Column("calling_ae", String(64), nullable=False),
        Column("called_ae", String(64), nullable=False),
        Column("objects", Integer, nullable=False),
        Column("outcome", String(32)),
        Column("reason", String),
        Index("ix_associations_started_at", "started_at"),
    )
    Table(
        "linkage",
        md,
        Column("id", _ID, primary_key=True),
        Column("object_id", _ID, ForeignKey("objects.id"), nullable=False),
        Column("profile", String(255), nullable=False),
        Column("original_patient_id", String),
        Column("original_patient_name", String),
        Column("original_study_uid", String(64)),
        Column("original_series_uid", String(64)),
        Column("original_sop_uid", String(64)),
        Column("pseudo_patient_id", String(255)),
        Column("pseudo_study_uid", String(64)),
        Column("pseudo_sop_uid", String(64)),
        Index("ix_linkage_object_id", "object_id"),
    )
    md.create_all(conn)


def _add_linkage_columns_v2(conn: Connection) -> None:
    """Version 2: linkage keeps the original accession number and the date shift (frozen)."""
    conn.exec_driver_sql("ALTER TABLE linkage ADD COLUMN original_accession_number VARCHAR")
    conn.exec_driver_sql("ALTER TABLE linkage ADD COLUMN date_shift_days INTEGER")


MIGRATIONS: Final[tuple[Migration, ...]] = ((1, _create_v1), (2, _add_linkage_columns_v2))


def _bootstrap_version(engine: Engine) -> None:
    with _transaction(engine, write=True) as conn:
        _SCHEMA_VERSION.create(conn, checkfirst=True)
        if conn.scalar(select(func.count()).select_from(_SCHEMA_VERSION)) == 0:
            conn.execute(insert(_SCHEMA_VERSION).values(version=0))


def migrate(engine: Engine, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply each step newer than the database's version, one transaction each; return it."""
    versions = [version for version, _ in steps]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... in order, got {versions}")
    latest = len(versions)
    with _translate("be opened"), engine.connect():
        pass
    with _translate("create its schema_version table"):
        try:
            _bootstrap_version(engine)
        except SQLAlchemyError:
            # Another node created it at the same moment (PostgreSQL); the table is there now.
            _bootstrap_version(engine)
    current = 0
    with _translate("read its schema version"), engine.connect() as conn:
        current = conn.scalar(select(_SCHEMA_VERSION.c.version)) or 0
    if current > latest:
        raise AuditError(
            f"audit database schema version {current} is newer than this deid-node "
            f"supports ({latest}): upgrade deid-node"
        )
    for version, step in steps:
        with _translate(f"migrate to schema version {version}"):
            with _transaction(engine, write=True) as conn:
                # Re-read under a lock: another node may have applied this step meanwhile.
                current = conn.scalar(select(_SCHEMA_VERSION.c.version).with_for_update()) or 0
                if current >= version:
                    continue
                step(conn)
                conn.execute(update(_SCHEMA_VERSION).values(version=version))
            current = version
    return current


# --------------------------------------------------------------------------------------------
# The database


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    o = _OBJECTS.c
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(o.received_at >= format_time(filters.since))
    if filters.until is not None:
        conditions.append(o.received_at < format_time(filters.until))
    if filters.calling_ae is not None:
        conditions.append(o.calling_ae == filters.calling_ae)
    if filters.profile is not None:
        conditions.append(o.profile == filters.profile)
    if filters.status is not None:
        conditions.append(o.status == filters.status)
    if filters.study is not None:
        conditions.append(o.pseudo_study_uid == filters.study)
    return conditions


def _row_dict(mapping: RowMapping) -> dict[str, object]:
    return {
        str(key): _time_from_db(value) if key in _TIME_COLUMNS and isinstance(value, str) else value
        for key, value in mapping.items()
    }


def _fields(record: object) -> dict[str, object]:
    # A shallow copy: these records hold only scalars, and dataclasses.asdict() deep-copies
    # (measurably slow in the receiving process, where every object's row is built).
    return dict(vars(record))


def _object_values(record: ObjectRecord) -> dict[str, object]:
    values = _fields(record)
    values["received_at"] = _time_to_db(record.received_at, "received_at")
    if record.processed_at is not None:
        values["processed_at"] = _time_to_db(record.processed_at, "processed_at")
    values["status"] = _check_status(record.status, "object status")
    return values


class AuditDB:
    """The audit database: one engine, short transactions, streamed reads."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database :func:`migrate` has brought up to date."""
        self._engine = engine

    def __enter__(self) -> AuditDB:
        """Return self; the database is closed when the block ends."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the database."""
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    # -- writes ---------------------------------------------------------------------------

    def record_objects(
        self, items: Sequence[tuple[ObjectRecord, LinkageRecord | None]]
    ) -> list[int]:
        """Insert objects (and their linkage rows) in one transaction; return their ids."""
        object_values = [_object_values(record) for record, _ in items]
        if not object_values:
            return []
        with _translate("record objects"), _transaction(self._engine, write=True) as conn:
            ids = list(
                conn.scalars(
                    insert(_OBJECTS).returning(_OBJECTS.c.id, sort_by_parameter_order=True),
                    object_values,
                )
            )
            linkage_values = [
                {"object_id": object_id, **_fields(linkage)}
                for object_id, (_, linkage) in zip(ids, items, strict=True)
                if linkage is not None
            ]
            if linkage_values:
                conn.execute(insert(_LINKAGE), linkage_values)
        return ids

    def record_association_start(
        self,
        assoc_id: str,
        started_at: datetime,
        peer_address: str,
        calling_ae: str,
        called_ae: str,
    ) -> None:
        """Insert the row of an association that was just accepted."""
        values = {
            "id": assoc_id,
            "started_at": _time_to_db(started_at, "started_at"),
            "peer_address": peer_address,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "objects": 0,
        }
        with _translate("record an association"), _transaction(self._engine, write=True) as conn:
            conn.execute(insert(_ASSOCIATIONS).values(values))

    def record_association_end(
        self,
        assoc_id: str,
        ended_at: datetime,
        objects: int,
        outcome: str,
        reason: str | None = None,
    ) -> None:
        """Complete an association's row with its end, object count and outcome."""
        values = {
            "ended_at": _time_to_db(ended_at, "ended_at"),
            "objects": objects,
            "outcome": outcome,
            "reason": reason,
        }
        with (
            _translate("record an association end"),
            _transaction(self._engine, write=True) as conn,
        ):
            result = conn.execute(
                update(_ASSOCIATIONS).where(_ASSOCIATIONS.c.id == assoc_id).values(values)
            )
            found = result.rowcount > 0
        if not found:
            raise AuditError(
                f"no association {assoc_id!r} in the audit database: "
                "call record_association_start first"
            )

    def record_rejected_association(
        self,
        assoc_id: str,
        at: datetime,
        peer_address: str,
        calling_ae: str,
        called_ae: str,
        reason: str,
    ) -> None:
        """Insert the single row of an association that was rejected (outcome 'rejected')."""
        moment = _time_to_db(at, "at")
        values = {
            "id": assoc_id,
            "started_at": moment,
            "ended_at": moment,
            "peer_address": peer_address,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "objects": 0,
            "outcome": "rejected",
            "reason": reason,
        }
        with (
            _translate("record a rejected association"),
            _transaction(self._engine, write=True) as conn,
        ):
            conn.execute(insert(_ASSOCIATIONS).values(values))

    def update_object(
        self, object_id: int, *, linkage: LinkageRecord | None = None, **changes: object
    ) -> None:
        """Change columns of one object row, e.g. status and quarantine_path after a retry.

        ``linkage`` adds the object's linkage row in the same transaction.
        """
        values: dict[str, object] = {}
        for key, value in changes.items():
            if key not in OBJECT_COLUMNS or key == "id":
                allowed = ", ".join(c for c in OBJECT_COLUMNS if c != "id")
                raise AuditError(f"cannot update object column {key!r}: expected one of {allowed}")
            if key in _TIME_COLUMNS and value is not None:
                value = _time_to_db(value, key)
            elif key == "status":
                value = _check_status(str(value), "object status")
            values[key] = value
        if not values and linkage is None:
            return
        with (
            _translate(f"update object {object_id}"),
            _transaction(self._engine, write=True) as conn,
        ):
            where = _OBJECTS.c.id == object_id
            if values:
                found = conn.execute(update(_OBJECTS).where(where).values(values)).rowcount > 0
            else:
                found = conn.execute(select(_OBJECTS.c.id).where(where)).first() is not None
            if not found:  # raised inside: nothing is written, the transaction rolls back
                raise AuditError(f"no object with audit id {object_id}: check the id")
            if linkage is not None:
                conn.execute(insert(_LINKAGE).values(object_id=object_id, **_fields(linkage)))

    # -- reads ----------------------------------------------------------------------------

    def get_object(self, object_id: int) -> dict[str, object] | None:
        """Return one object row by id, or None."""
        with _translate("read an object"), _transaction(self._engine, write=False) as conn:
            row = conn.execute(select(_OBJECTS).where(_OBJECTS.c.id == object_id)).first()
        return None if row is None else _row_dict(row._mapping)

    def get_association(self, assoc_id: str) -> dict[str, object] | None:
        """Return one association row by id, or None."""
        with _translate("read an association"), _transaction(self._engine, write=False) as conn:
            stmt = select(_ASSOCIATIONS).where(_ASSOCIATIONS.c.id == assoc_id)
            row = conn.execute(stmt).first()
        return None if row is None else _row_dict(row._mapping)

    def iter_objects(
        self, filters: Filters, limit: int | None = None, *, newest_first: bool = False
    ) -> Iterator[dict[str, object]]:
        """Stream object rows matching the filters (close or exhaust it).

        In id order (the order they were recorded), or ``newest_first`` by receipt.
        """
        _check_limit(limit)
        o = _OBJECTS.c
        order = (o.received_at.desc(), o.id.desc()) if newest_first else (o.id,)
        stmt = select(_OBJECTS).where(*_conditions(filters)).order_by(*order)
        return self._stream(stmt.limit(limit), "read objects")

    def iter_associations(
        self, filters: AssociationFilters, limit: int | None = None
    ) -> Iterator[dict[str, object]]:
        """Stream association rows matching the filters, newest first (close or exhaust it)."""
        _check_limit(limit)
        a = _ASSOCIATIONS.c
        conditions: list[ColumnElement[bool]] = []
        if filters.since is not None:
            conditions.append(a.started_at >= format_time(filters.since))
        if filters.until is not None:
            conditions.append(a.started_at < format_time(filters.until))
        if filters.calling_ae is not None:
            conditions.append(a.calling_ae == filters.calling_ae)
        if filters.outcome == "open":
            conditions.append(a.outcome.is_(None))
        elif filters.outcome is not None:
            conditions.append(a.outcome == filters.outcome)
        stmt = (
            select(_ASSOCIATIONS)
            .where(*conditions)
            .order_by(a.started_at.desc(), a.id.desc())
            .limit(limit)
        )
        return self._stream(stmt, "read associations")

    def iter_linkage(
        self, filters: Filters, limit: int | None = None
    ) -> Iterator[dict[str, object]]:
        """Stream linkage rows (PHI) of objects matching the filters, as LINKAGE_COLUMNS."""
        _check_limit(limit)
        o, lk = _OBJECTS.c, _LINKAGE.c
        from_objects = {"received_at", "calling_ae", "pseudo_series_uid"}
        stmt = (
            select(*((o if name in from_objects else lk)[name] for name in LINKAGE_COLUMNS))
            .select_from(_LINKAGE.join(_OBJECTS, lk.object_id == o.id))
            .where(*_conditions(filters))
            .order_by(lk.id)
        )
        return self._stream(stmt.limit(limit), "read linkage")

    def _stream(self, stmt: Executable, action: str) -> Iterator[dict[str, object]]:
        with _translate(action), _transaction(self._engine, write=False) as conn:
            result = conn.execution_options(yield_per=STREAM_BATCH).execute(stmt)
            for row in result:
                yield _row_dict(row._mapping)

    def study_summaries(self, filters: Filters, limit: int | None = None) -> list[StudySummary]:
        """Summarise matching objects per pseudonymous study, profile and calling AE.

        Newest first (by the last object received). Objects without a study are
        summarised per association, so one sender's failures do not merge with another's.
        """
        _check_limit(limit)
        o = _OBJECTS.c

        def count(status: Status) -> ColumnElement[int]:
            return func.coalesce(func.sum(case((o.status == status.value, 1), else_=0)), 0)

        association = case((o.pseudo_study_uid.is_(None), o.association_id), else_=None)
        last = func.max(o.received_at)
        stmt = (
            select(
                o.pseudo_study_uid,
                func.max(o.pseudo_patient_id),
                o.calling_ae,
                o.profile,
                func.min(o.received_at),
                last,
                func.count(),
                count(Status.STORED),
                count(Status.QUARANTINED),
                count(Status.DUPLICATE),
                count(Status.REJECTED),
                association,
            )
            .where(*_conditions(filters))
            .group_by(o.pseudo_study_uid, o.profile, o.calling_ae, association)
            .order_by(
                last.desc(), o.pseudo_study_uid.nulls_last(), o.profile, o.calling_ae, association
            )
            .limit(limit)
        )
        with _translate("summarise studies"), _transaction(self._engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        return [
            StudySummary(
                pseudo_study_uid=row[0],
                pseudo_patient_id=row[1],
                calling_ae=row[2],
                profile=row[3],
                first_received_at=_time_from_db(row[4]),
                last_received_at=_time_from_db(row[5]),
                objects=int(row[6]),
                stored=int(row[7]),
                quarantined=int(row[8]),
                duplicate=int(row[9]),
                rejected=int(row[10]),
                association_id=row[11],
            )
            for row in rows
        ]

    def quarantined(self, limit: int | None = None) -> list[dict[str, object]]:
        """Return quarantined objects (id, received_at, calling_ae, profile, reason, path)."""
        _check_limit(limit)
        o = _OBJECTS.c
        stmt = (
            select(o.id, o.received_at, o.calling_ae, o.profile, o.reason, o.quarantine_path)
            .where(o.status == Status.QUARANTINED.value)
            .order_by(o.id)
            .limit(limit)
        )
        with (
            _translate("read quarantined objects"),
            _transaction(self._engine, write=False) as conn,
        ):
            return [_row_dict(row._mapping) for row in conn.execute(stmt)]


def open_audit(url: str) -> AuditDB:
    """Open the audit database at an SQLAlchemy URL, creating or upgrading its schema."""
    engine = create_audit_engine(url)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return AuditDB(engine)


# --------------------------------------------------------------------------------------------
# CSV


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def write_csv(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    out: TextIO,
    *,
    line_end: str = "\r\n",
) -> int:
    """Write rows as CSV with a header (open ``out`` with newline=''); return the count.

    RFC 4180 ends lines with CRLF (what spreadsheets expect); ``line_end="\\n"`` suits Unix
    tools. Line breaks inside a quoted value are kept as they are either way.
    """
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([_csv_value(row.get(column)) for column in columns])
        count += 1
    return count
