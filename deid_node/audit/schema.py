"""The current audit schema (ORM tables): the single source of its tables and columns.

Migrations hold their own frozen copy of each version; this module is what the latest
version must equal (``tests/audit/test_database.py`` checks that).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "API_TOKENS",
    "ASSOCIATIONS",
    "ASSOCIATION_COLUMNS",
    "FORWARDS",
    "FORWARD_STATES",
    "JOBS",
    "LINKAGE",
    "LINKAGE_COLUMNS",
    "OBJECTS",
    "OBJECT_COLUMNS",
    "SCHEMA_VERSION",
    "TIME_COLUMNS",
    "USERS",
    "WEB_EVENTS",
    "AssociationRow",
    "Base",
    "ForwardRow",
    "LinkageRow",
    "ObjectRow",
    "SchemaVersion",
]

_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid


class Base(DeclarativeBase):
    """Declarative base of the audit tables."""


class ObjectRow(Base):
    """One received object and what became of it; no original identifiers."""

    __tablename__ = "objects"
    # Added in version 6, for the web console: filtered pages newest first, and an
    # instance or a series found by its pseudonym, without a scan of every row.
    __table_args__ = (
        Index("ix_objects_status_received", "status", "received_at", "id"),
        Index("ix_objects_calling_ae_received", "calling_ae", "received_at", "id"),
        Index("ix_objects_profile_received", "profile", "received_at", "id"),
        Index("ix_objects_pseudo_series_uid", "pseudo_series_uid"),
        Index("ix_objects_pseudo_sop_uid", "pseudo_sop_uid"),
    )

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
    # Added in version 3: what was done to burned-in text (counts, rules, syntax change).
    pixels: Mapped[str | None] = mapped_column(String)
    # Added in version 8. The spool entry a node row records (its stem): a redo after a
    # crash finds its own row by it, so an object is recorded once however often it is
    # processed. Empty for offline rows and refused objects.
    receipt_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Version 8: who wrote the row, "node" or "offline" (`deid-node deidentify`): the
    # console shows what the node wrote, never an offline run's output.
    origin: Mapped[str] = mapped_column(String(16), server_default="node")
    # Added in version 9: the node (`[node] name`) that received and wrote it; several
    # nodes share one database. Offline rows (origin offline) name none.
    node: Mapped[str | None] = mapped_column(String(64), index=True)


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
    # Added in version 8: the node that served it (`[node] name` since version 9), so that
    # a node's start closes its own associations a crash left open, not another node's.
    node: Mapped[str | None] = mapped_column(String(64))


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


class ForwardRow(Base):
    """One object's job for one destination: the durable outbox (added in version 4).

    Written in the transaction that writes its object's row. The columns the sender needs
    are copied from the object, so claiming a batch reads one table.
    """

    __tablename__ = "forwards"
    __table_args__ = (
        Index("ix_forwards_due", "destination", "state", "next_attempt_at"),
        Index("ix_forwards_sop", "destination", "pseudo_sop_uid"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    object_id: Mapped[int] = mapped_column(_ID, ForeignKey("objects.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # pending, in_flight, sent, failed
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[str] = mapped_column(String(32))
    next_attempt_at: Mapped[str] = mapped_column(String(32))
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[str | None] = mapped_column(String(32))
    output_path: Mapped[str] = mapped_column(String)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_study_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_sop_uid: Mapped[str | None] = mapped_column(String(64))
    keep_output: Mapped[int] = mapped_column(Integer)  # 0: delete the file once all are sent
    # Added in version 9: the node that wrote output_path. With per-node output only that
    # node's forwarder takes the job; with shared output any node's does.
    node: Mapped[str | None] = mapped_column(String(64))
    # Version 9: 1 when that node's output is shared storage (`[node] output_shared`).
    shared: Mapped[int] = mapped_column(Integer, server_default="0")


class UserRow(Base):
    """A web console user (added in version 5): the password only as an Argon2id hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[str] = mapped_column(String(32))
    # Added in version 7: a session cookie is valid only while it carries this value; a new
    # one (logout, password change, `users logout`) ends every session of the user.
    session_nonce: Mapped[str | None] = mapped_column(String(64))


class ApiTokenRow(Base):
    """An API token of a user (version 5): only its SHA-256, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(_ID, ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(32))
    last_used_at: Mapped[str | None] = mapped_column(String(32))


class WebEventRow(Base):
    """What happened in the web console that an operator must be able to trace (version 5):
    logins, failed logins, actions. Never a value of the data."""

    __tablename__ = "web_events"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    at: Mapped[str] = mapped_column(String(32), index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    peer_address: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String)


class JobRow(Base):
    """A de-identification job from the web console's form (added in version 6)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32), index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(255))
    fields: Mapped[str] = mapped_column(String)  # the form's project fields, JSON
    status: Mapped[str] = mapped_column(String(16))  # queued, running, done, failed
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer)
    written: Mapped[int] = mapped_column(Integer)
    quarantined: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String)


class SchemaVersion(Base):
    """The single row holding the schema version the database has been migrated to."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


OBJECTS: Final = Base.metadata.tables["objects"]
ASSOCIATIONS: Final = Base.metadata.tables["associations"]
LINKAGE: Final = Base.metadata.tables["linkage"]
FORWARDS: Final = Base.metadata.tables["forwards"]
USERS: Final = Base.metadata.tables["users"]
API_TOKENS: Final = Base.metadata.tables["api_tokens"]
WEB_EVENTS: Final = Base.metadata.tables["web_events"]
JOBS: Final = Base.metadata.tables["jobs"]
SCHEMA_VERSION: Final = Base.metadata.tables["schema_version"]

OBJECT_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in OBJECTS.columns)
ASSOCIATION_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in ASSOCIATIONS.columns)
# What a linkage export holds: linkage columns joined with a few of the object's.
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
FORWARD_STATES: Final = ("pending", "in_flight", "sent", "failed")
# Stored as fixed-width UTC ISO 8601 text, read back as aware datetimes.
TIME_COLUMNS: Final = frozenset({"received_at", "processed_at", "started_at", "ended_at"})
