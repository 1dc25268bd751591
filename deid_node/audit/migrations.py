"""Schema migrations: each version's step as a frozen copy, applied one transaction each.

A step is never edited once released: it builds the schema as that version had it, so an
existing database of any version upgrades to the current one (:mod:`.schema`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, TypeAlias

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from deid_node.audit.schema import SCHEMA_VERSION
from deid_node.audit.sql_engine import transaction, translate_errors
from deid_node.errors import AuditError

__all__ = ["MIGRATIONS", "Migration", "MigrationStep", "migrate"]

MigrationStep: TypeAlias = Callable[[Connection], None]
Migration: TypeAlias = tuple[int, MigrationStep]

# The frozen steps' own id type, not the current schema's: they must never change.
_ID = BigInteger().with_variant(Integer(), "sqlite")


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


def _add_pixels_column_v3(conn: Connection) -> None:
    """Version 3: objects say what was done to burned-in text in their pixels (frozen)."""
    conn.exec_driver_sql("ALTER TABLE objects ADD COLUMN pixels VARCHAR")


def _create_forwards_v4(conn: Connection) -> None:
    """Version 4: the forwarding outbox, one row per object and destination (frozen)."""
    md = MetaData()
    Table("objects", md, Column("id", _ID, primary_key=True))  # for the foreign key only
    Table(
        "forwards",
        md,
        Column("id", _ID, primary_key=True),
        Column("object_id", _ID, ForeignKey("objects.id"), nullable=False),
        Column("destination", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_error", String),
        Column("created_at", String(32), nullable=False),
        Column("next_attempt_at", String(32), nullable=False),
        Column("claimed_by", String(255)),
        Column("claimed_at", String(32)),
        Column("sent_at", String(32)),
        Column("output_path", String, nullable=False),
        Column("sop_class_uid", String(64)),
        Column("transfer_syntax_uid", String(64)),
        Column("pseudo_study_uid", String(64)),
        Column("pseudo_sop_uid", String(64)),
        Column("keep_output", Integer, nullable=False),
        Index("ix_forwards_object_id", "object_id"),
        Index("ix_forwards_due", "destination", "state", "next_attempt_at"),
        Index("ix_forwards_sop", "destination", "pseudo_sop_uid"),
    )
    md.tables["forwards"].create(conn)


def _create_web_tables_v5(conn: Connection) -> None:
    """Version 5: web console users, their API tokens, and web events (frozen)."""
    md = MetaData()
    Table(
        "users",
        md,
        Column("id", _ID, primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("password_hash", String(255), nullable=False),
        Column("created_at", String(32), nullable=False),
    )
    Table(
        "api_tokens",
        md,
        Column("id", _ID, primary_key=True),
        Column("user_id", _ID, ForeignKey("users.id"), nullable=False),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", String(32), nullable=False),
        Column("last_used_at", String(32)),
        Index("ix_api_tokens_user_id", "user_id"),
    )
    Table(
        "web_events",
        md,
        Column("id", _ID, primary_key=True),
        Column("at", String(32), nullable=False),
        Column("user_name", String(64), nullable=False),
        Column("peer_address", String(255), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("detail", String),
        Index("ix_web_events_at", "at"),
    )
    md.create_all(conn)


def _create_jobs_v6(conn: Connection) -> None:
    """Version 6: de-identification jobs from the web console, and the indexes its pages
    need on objects (frozen)."""
    for name, columns in (
        ("ix_objects_status_received", "status, received_at, id"),
        ("ix_objects_calling_ae_received", "calling_ae, received_at, id"),
        ("ix_objects_profile_received", "profile, received_at, id"),
        ("ix_objects_pseudo_series_uid", "pseudo_series_uid"),
        ("ix_objects_pseudo_sop_uid", "pseudo_sop_uid"),
    ):
        conn.exec_driver_sql(f"CREATE INDEX {name} ON objects ({columns})")
    md = MetaData()
    Table(
        "jobs",
        md,
        Column("id", _ID, primary_key=True),
        Column("created_at", String(32), nullable=False),
        Column("user_name", String(64), nullable=False),
        Column("profile", String(255), nullable=False),
        Column("fields", String, nullable=False),
        Column("status", String(16), nullable=False),
        Column("total", Integer, nullable=False),
        Column("done", Integer, nullable=False),
        Column("written", Integer, nullable=False),
        Column("quarantined", Integer, nullable=False),
        Column("finished_at", String(32)),
        Column("error", String),
        Index("ix_jobs_created_at", "created_at"),
    )
    md.create_all(conn)


def _add_session_nonce_v7(conn: Connection) -> None:
    """Version 7: each user's session nonce, which every session cookie must carry (frozen)."""
    conn.exec_driver_sql("ALTER TABLE users ADD COLUMN session_nonce VARCHAR(64)")


def _add_receipts_and_origin_v8(conn: Connection) -> None:
    """Version 8: objects record their spool receipt and their origin (node or offline);
    associations the node that served them (frozen)."""
    conn.exec_driver_sql("ALTER TABLE objects ADD COLUMN receipt_id VARCHAR(64)")
    conn.exec_driver_sql("CREATE INDEX ix_objects_receipt_id ON objects (receipt_id)")
    conn.exec_driver_sql(
        "ALTER TABLE objects ADD COLUMN origin VARCHAR(16) DEFAULT 'node' NOT NULL"
    )
    # Offline runs marked their rows by calling AE, called AE and peer "(offline)".
    conn.exec_driver_sql(
        "UPDATE objects SET origin = 'offline' WHERE association_id IS NULL "
        "AND calling_ae = '(offline)' AND called_ae = '(offline)' AND peer_address = '(offline)'"
    )
    conn.exec_driver_sql("ALTER TABLE associations ADD COLUMN node VARCHAR(64)")


def _add_node_columns_v9(conn: Connection) -> None:
    """Version 9: objects and forward jobs name the node that wrote them; a job says whether
    other nodes can read its file (frozen)."""
    conn.exec_driver_sql("ALTER TABLE objects ADD COLUMN node VARCHAR(64)")
    conn.exec_driver_sql("CREATE INDEX ix_objects_node ON objects (node)")
    conn.exec_driver_sql("ALTER TABLE forwards ADD COLUMN node VARCHAR(64)")
    conn.exec_driver_sql("ALTER TABLE forwards ADD COLUMN shared INTEGER DEFAULT 0 NOT NULL")


MIGRATIONS: Final[tuple[Migration, ...]] = (
    (1, _create_v1),
    (2, _add_linkage_columns_v2),
    (3, _add_pixels_column_v3),
    (4, _create_forwards_v4),
    (5, _create_web_tables_v5),
    (6, _create_jobs_v6),
    (7, _add_session_nonce_v7),
    (8, _add_receipts_and_origin_v8),
    (9, _add_node_columns_v9),
)


# pg_advisory_lock's key for migrations: "deid" in ASCII, so other tools' keys rarely collide.
MIGRATION_LOCK: Final = 0x64656964


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock while migrating: nodes starting together migrate
    one after the other (the later ones find nothing to do). SQLite needs none: each
    step's write transaction (BEGIN IMMEDIATE) and the version re-read under it suffice."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        conn.commit()  # a session lock: held across transactions, released below
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            conn.commit()


def _bootstrap_version(engine: Engine) -> None:
    with transaction(engine, write=True) as conn:
        SCHEMA_VERSION.create(conn, checkfirst=True)
        if conn.scalar(select(func.count()).select_from(SCHEMA_VERSION)) == 0:
            conn.execute(insert(SCHEMA_VERSION).values(version=0))


def migrate(engine: Engine, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply each step newer than the database's version, one transaction each; return it."""
    versions = [version for version, _ in steps]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... in order, got {versions}")
    latest = len(versions)
    with translate_errors("be opened"), engine.connect():
        pass
    with translate_errors("take the migration lock"), _migration_lock(engine):
        return _migrate_locked(engine, steps, latest)


def _migrate_locked(engine: Engine, steps: Sequence[Migration], latest: int) -> int:
    with translate_errors("create its schema_version table"):
        try:
            _bootstrap_version(engine)
        except SQLAlchemyError:
            # Another node created it at the same moment (PostgreSQL); the table is there now.
            _bootstrap_version(engine)
    current = 0
    with translate_errors("read its schema version"), engine.connect() as conn:
        current = conn.scalar(select(SCHEMA_VERSION.c.version)) or 0
    if current > latest:
        raise AuditError(
            f"audit database schema version {current} is newer than this deid-node "
            f"supports ({latest}): upgrade deid-node"
        )
    for version, step in steps:
        with translate_errors(f"migrate to schema version {version}"):
            with transaction(engine, write=True) as conn:
                # Re-read under a lock: another node may have applied this step meanwhile.
                current = conn.scalar(select(SCHEMA_VERSION.c.version).with_for_update()) or 0
                if current >= version:
                    continue
                step(conn)
                conn.execute(update(SCHEMA_VERSION).values(version=version))
            current = version
    return current
