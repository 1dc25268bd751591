"""The audit database: writes and queries over one engine, short transactions, streamed reads.

Times are stored as fixed-width UTC ISO 8601 strings (``2026-11-22T05:01:02.123456Z``), so
they compare correctly as text on every database and export without conversion. Original
identifiers are stored only in the ``linkage`` table, for profiles with ``record_linkage``.
:func:`open_audit` brings the schema up to date (:mod:`.migrations`) before anything is read.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final

from sqlalchemy import ColumnElement, Connection, Engine, case, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql import Executable

from deid_node.audit.conditions import object_conditions
from deid_node.audit.migrations import migrate
from deid_node.audit.outbox import Outbox
from deid_node.audit.records import (
    STATUSES,
    AssociationFilters,
    Filters,
    Forwarding,
    LinkageRecord,
    ObjectRecord,
    StudySummary,
    check_status,
    format_time,
)
from deid_node.audit.schema import (
    ASSOCIATIONS,
    FORWARDS,
    LINKAGE,
    LINKAGE_COLUMNS,
    OBJECT_COLUMNS,
    OBJECTS,
    TIME_COLUMNS,
)
from deid_node.audit.sql_engine import (
    DEFAULT_CONNECTIONS,
    create_audit_engine,
    transaction,
    translate_errors,
)
from deid_node.errors import AuditError, AuditUnavailable
from deid_node.object_status import Origin, Status

if TYPE_CHECKING:
    from deid_node.audit.jobs import Jobs
    from deid_node.audit.users import Users

__all__ = ["AuditDB", "open_audit"]

log = logging.getLogger(__name__)

STREAM_BATCH: Final = 1000


def _time_from_db(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _time_to_db(value: object, field: str) -> str:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise AuditError(f"{field} must be a timezone-aware datetime, e.g. datetime.now(UTC)")
    return format_time(value)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise AuditError(f"invalid limit {limit}: expected a positive integer")


def _with_output() -> list[ColumnElement[bool]]:
    """The node's objects whose de-identified output was written (stored, or stored again).

    Offline rows are left out: their output is wherever that run wrote it, not the node's.
    """
    o = OBJECTS.c
    return [
        o.origin == Origin.NODE.value,
        o.status.in_((Status.STORED.value, Status.DUPLICATE.value)),
        o.output_path.is_not(None),
        o.pseudo_sop_uid.is_not(None),
    ]


def _nodes(first: str | None, last: str | None, count: int) -> str:
    """The nodes a study came through, as a summary shows them: "gw-1", "gw-1,gw-2", or
    "gw-1,...,gw-9 (4)" for more than two."""
    if first is None or last is None:
        return ""
    if first == last:
        return first
    return f"{first},{last}" if count <= 2 else f"{first},...,{last} ({count})"


def _row_dict(mapping: RowMapping) -> dict[str, object]:
    return {
        str(key): _time_from_db(value) if key in TIME_COLUMNS and isinstance(value, str) else value
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
    values["status"] = check_status(record.status, "object status")
    return values


def _forward_jobs(
    conn: Connection, object_id: int, values: dict[str, object], forwarding: Forwarding
) -> list[dict[str, object]]:
    """Job rows for one object (its row's values): stored, or a duplicate not yet forwarded."""
    status, sop_uid = values.get("status"), values.get("pseudo_sop_uid")
    if not values.get("output_path") or status not in (Status.STORED, Status.DUPLICATE):
        return []
    destinations = list(forwarding.destinations)
    if status == Status.DUPLICATE and sop_uid:
        # A re-sent object replaced its own file: a job that is pending, in flight or done
        # for it already sends (or sent) that file. Only one that failed is added again.
        f = FORWARDS.c
        have = set(
            conn.scalars(
                select(f.destination).where(
                    f.pseudo_sop_uid == sop_uid,
                    f.destination.in_(destinations),
                    f.state != "failed",
                )
            )
        )
        destinations = [d for d in destinations if d not in have]
    stamp = values.get("processed_at") or values.get("received_at")
    return [
        {
            "object_id": object_id,
            "destination": destination,
            "state": "pending",
            "attempts": 0,
            "created_at": stamp,
            "next_attempt_at": stamp,
            "output_path": values["output_path"],
            "sop_class_uid": values.get("sop_class_uid"),
            "transfer_syntax_uid": values.get("transfer_syntax_uid"),
            "pseudo_study_uid": values.get("pseudo_study_uid"),
            "pseudo_sop_uid": sop_uid,
            "keep_output": int(forwarding.keep_output),
            "node": values.get("node"),
            "shared": int(forwarding.shared),
        }
        for destination in destinations
    ]


def _settle_redone(
    conn: Connection, values: list[dict[str, object]], redone: Sequence[bool]
) -> dict[int, int]:
    """Decide the rows of objects processed again after a crash; {index: existing id}.

    A redo (the node died, or a worker, between writing an object's output and
    committing its row) finds its own earlier output and the pipeline calls it a
    duplicate. Here, under the write lock, the audit says what it was: a receipt that
    already has a row is not recorded twice, and a duplicate whose output has no
    ``stored`` row yet (nor one earlier in this batch) becomes ``stored``. A real second
    send keeps ``duplicate``: the first send's row is there.
    """
    o = OBJECTS.c
    redo = [i for i, flag in enumerate(redone) if flag and i < len(values)]
    receipts = {str(values[i]["receipt_id"]) for i in redo if values[i].get("receipt_id")}
    found: dict[str, int] = {}
    if receipts:
        stmt = select(o.receipt_id, func.min(o.id)).where(o.receipt_id.in_(receipts))
        found = {str(r): int(i) for r, i in conn.execute(stmt.group_by(o.receipt_id))}
    known = {
        i: found[str(values[i]["receipt_id"])] for i in redo if values[i].get("receipt_id") in found
    }
    # Profile and pseudonymous SOP Instance UID name an object's output file, whatever
    # folder the node was started from.
    outputs = {
        i: (str(v["profile"]), str(v["pseudo_sop_uid"]))
        for i, v in enumerate(values)
        if i not in known and v["output_path"] and v["pseudo_sop_uid"]
    }
    doubtful = [i for i in redo if i in outputs and values[i]["status"] == Status.DUPLICATE]
    if not doubtful:
        return known
    stmt = select(o.profile, o.pseudo_sop_uid).where(
        o.pseudo_sop_uid.in_({outputs[i][1] for i in doubtful}),
        o.status == Status.STORED.value,
        o.origin == Origin.NODE.value,
    )
    stored = {(str(profile), str(sop)) for profile, sop in conn.execute(stmt)}
    # New rows of this batch that stored these objects count too, whatever their order.
    stored.update(key for i, key in outputs.items() if values[i]["status"] == Status.STORED)
    for i in doubtful:
        if outputs[i] not in stored:
            values[i]["status"] = Status.STORED.value
            stored.add(outputs[i])
    return known


def _insert_association(conn: Connection, values: dict[str, object]) -> None:
    """Insert an association row unless it is there: a retry after a cut connection may
    follow a commit that went through."""
    a = ASSOCIATIONS.c
    if conn.execute(select(a.id).where(a.id == values["id"])).first() is None:
        conn.execute(insert(ASSOCIATIONS).values(values))


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

    @property
    def outbox(self) -> Outbox:
        """The forwarding outbox over the same engine."""
        return Outbox(self._engine)

    @property
    def jobs(self) -> Jobs:
        """The web console's de-identification jobs over the same engine."""
        from deid_node.audit.jobs import Jobs

        return Jobs(self._engine)

    @property
    def users(self) -> Users:
        """Web console users, tokens and events over the same engine."""
        from deid_node.audit.users import Users  # argon2 only for those who need it

        return Users(self._engine)

    def record_objects(
        self,
        items: Sequence[tuple[ObjectRecord, LinkageRecord | None]],
        forwards: Sequence[Forwarding | None] = (),
        *,
        redone: Sequence[bool] = (),
    ) -> list[int]:
        """Insert objects (and their linkage rows) in one transaction; return their ids.

        `forwards` (parallel to `items`) adds each stored object's forward jobs in that
        same transaction: an object is recorded with its jobs or not at all.

        `redone` (parallel to `items`) marks objects processed again after a crash
        (:func:`_settle_redone`): one whose receipt already has a row is not recorded
        again (that row's id is returned), and a ``duplicate`` whose output has no
        ``stored`` row is recorded as ``stored``.
        """
        object_values = [_object_values(record) for record, _ in items]
        if not object_values:
            return []
        with translate_errors("record objects"), transaction(self._engine, write=True) as conn:
            known = _settle_redone(conn, object_values, redone) if any(redone) else {}
            new = [i for i in range(len(object_values)) if i not in known]
            ids = dict(known)
            if new:
                inserted = conn.scalars(
                    insert(OBJECTS).returning(OBJECTS.c.id, sort_by_parameter_order=True),
                    [object_values[i] for i in new],
                )
                ids.update(zip(new, inserted, strict=True))
            linkage_values = [
                {"object_id": ids[i], **_fields(linkage)}
                for i, (_, linkage) in enumerate(items)
                if linkage is not None and i not in known
            ]
            if linkage_values:
                conn.execute(insert(LINKAGE), linkage_values)
            jobs = [
                job
                for i, forwarding in enumerate(forwards)
                if forwarding is not None and i < len(object_values) and i not in known
                for job in _forward_jobs(conn, ids[i], object_values[i], forwarding)
            ]
            if jobs:
                conn.execute(insert(FORWARDS), jobs)
        return [ids[i] for i in range(len(object_values))]

    def record_association_start(
        self,
        assoc_id: str,
        started_at: datetime,
        peer_address: str,
        calling_ae: str,
        called_ae: str,
        node: str | None = None,
    ) -> None:
        """Insert the row of an association that was just accepted (by `node`)."""
        values = {
            "id": assoc_id,
            "started_at": _time_to_db(started_at, "started_at"),
            "peer_address": peer_address,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "objects": 0,
            "node": node,
        }
        with (
            translate_errors("record an association"),
            transaction(self._engine, write=True) as conn,
        ):
            _insert_association(conn, values)

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
            translate_errors("record an association end"),
            transaction(self._engine, write=True) as conn,
        ):
            result = conn.execute(
                update(ASSOCIATIONS).where(ASSOCIATIONS.c.id == assoc_id).values(values)
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
        node: str | None = None,
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
            "node": node,
        }
        with (
            translate_errors("record a rejected association"),
            transaction(self._engine, write=True) as conn,
        ):
            _insert_association(conn, values)

    def close_interrupted(self, node: str, ids: Collection[str] | None = None) -> int:
        """Close associations a crash left open, as ``interrupted``: those of `node` (and
        of a node from before schema version 8, which named none), or only `ids`.

        For a node's start, once what it acknowledged before is recorded (or, with `ids`,
        once what a dead receiving process acknowledged is): each gets the number of its
        object rows and, as its end, its last object's receipt (or its start). Returns how
        many were closed.
        """
        a, o = ASSOCIATIONS.c, OBJECTS.c
        only = [a.id.in_(list(ids))] if ids is not None else []
        objects = select(func.count()).where(o.association_id == a.id).scalar_subquery()
        last = select(func.max(o.received_at)).where(o.association_id == a.id).scalar_subquery()
        stmt = (
            update(ASSOCIATIONS)
            .where(
                a.ended_at.is_(None),
                a.outcome.is_(None),
                (a.node == node) | a.node.is_(None),
                *only,
            )
            .values(
                ended_at=func.coalesce(last, a.started_at),
                objects=objects,
                outcome="interrupted",
                reason="cut by a crash of the node or of its receiving process",
            )
        )
        with (
            translate_errors("close interrupted associations"),
            transaction(self._engine, write=True) as conn,
        ):
            return int(conn.execute(stmt).rowcount or 0)

    def update_object(
        self,
        object_id: int,
        *,
        linkage: LinkageRecord | None = None,
        forwarding: Forwarding | None = None,
        **changes: object,
    ) -> None:
        """Change columns of one object row, e.g. status and quarantine_path after a retry.

        ``linkage`` adds the object's linkage row, ``forwarding`` its forward jobs (if it is
        now stored), in the same transaction.
        """
        values: dict[str, object] = {}
        for key, value in changes.items():
            if key not in OBJECT_COLUMNS or key == "id":
                allowed = ", ".join(c for c in OBJECT_COLUMNS if c != "id")
                raise AuditError(f"cannot update object column {key!r}: expected one of {allowed}")
            if key in TIME_COLUMNS and value is not None:
                value = _time_to_db(value, key)
            elif key == "status":
                value = check_status(str(value), "object status")
            values[key] = value
        if not values and linkage is None:
            return
        with (
            translate_errors(f"update object {object_id}"),
            transaction(self._engine, write=True) as conn,
        ):
            where = OBJECTS.c.id == object_id
            if values:
                found = conn.execute(update(OBJECTS).where(where).values(values)).rowcount > 0
            else:
                found = conn.execute(select(OBJECTS.c.id).where(where)).first() is not None
            if not found:  # raised inside: nothing is written, the transaction rolls back
                raise AuditError(f"no object with audit id {object_id}: check the id")
            if linkage is not None:
                conn.execute(insert(LINKAGE).values(object_id=object_id, **_fields(linkage)))
            if forwarding is not None:
                row = conn.execute(select(OBJECTS).where(where)).one()
                jobs = _forward_jobs(conn, object_id, dict(row._mapping), forwarding)
                if jobs:
                    conn.execute(insert(FORWARDS), jobs)

    # -- reads ----------------------------------------------------------------------------

    def get_object(self, object_id: int) -> dict[str, object] | None:
        """Return one object row by id, or None."""
        with translate_errors("read an object"), transaction(self._engine, write=False) as conn:
            row = conn.execute(select(OBJECTS).where(OBJECTS.c.id == object_id)).first()
        return None if row is None else _row_dict(row._mapping)

    def get_association(self, assoc_id: str) -> dict[str, object] | None:
        """Return one association row by id, or None."""
        with (
            translate_errors("read an association"),
            transaction(self._engine, write=False) as conn,
        ):
            stmt = select(ASSOCIATIONS).where(ASSOCIATIONS.c.id == assoc_id)
            row = conn.execute(stmt).first()
        return None if row is None else _row_dict(row._mapping)

    def iter_objects(
        self,
        filters: Filters,
        limit: int | None = None,
        *,
        newest_first: bool = False,
        offset: int = 0,
    ) -> Iterator[dict[str, object]]:
        """Stream object rows matching the filters (close or exhaust it).

        In id order (the order they were recorded), or ``newest_first`` by receipt;
        ``offset`` rows are skipped first (pages of the web console).
        """
        _check_limit(limit)
        if offset < 0:
            raise AuditError(f"invalid offset {offset}: expected 0 or more")
        o = OBJECTS.c
        order = (o.received_at.desc(), o.id.desc()) if newest_first else (o.id,)
        stmt = select(OBJECTS).where(*object_conditions(filters)).order_by(*order)
        return self._stream(stmt.limit(limit).offset(offset or None), "read objects")

    def status_counts(self, since: datetime | None = None) -> dict[str, int]:
        """Objects received since a moment (all, without one), per status."""
        o = OBJECTS.c
        stmt = select(o.status, func.count()).group_by(o.status)
        if since is not None:
            stmt = stmt.where(o.received_at >= format_time(since))
        with translate_errors("count objects"), transaction(self._engine, write=False) as conn:
            found = {str(status): int(n) for status, n in conn.execute(stmt)}
        return {
            status.value: found.get(status.value, 0)
            for status in Status
            if status.value in STATUSES
        }

    def stored_studies(
        self, profile: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, object]]:
        """Studies with output, newest first: instances (each SOP once), first and last,
        and the nodes they came through (one study, whichever nodes received it)."""
        o = OBJECTS.c
        last = func.max(o.received_at)
        stmt = (
            select(
                o.pseudo_study_uid,
                func.max(o.pseudo_patient_id),
                o.profile,
                func.count(func.distinct(o.pseudo_sop_uid)),
                func.min(o.received_at),
                last,
                func.min(o.node),
                func.max(o.node),
                func.count(func.distinct(o.node)),
            )
            .where(*_with_output(), *([o.profile == profile] if profile else []))
            .group_by(o.pseudo_study_uid, o.profile)
            .order_by(last.desc(), o.pseudo_study_uid)
            .limit(limit)
            .offset(offset or None)
        )
        keys = ("pseudo_study_uid", "pseudo_patient_id", "profile", "instances", "first", "last")
        with translate_errors("list studies"), transaction(self._engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        return [
            {
                **{
                    k: _time_from_db(v) if k in ("first", "last") else v
                    for k, v in zip(keys, row[: len(keys)], strict=True)
                },
                "node": _nodes(row[-3], row[-2], int(row[-1])),
            }
            for row in rows
        ]

    def stored_instances(
        self, *, study: str | None = None, series: str | None = None, sop: str | None = None
    ) -> list[dict[str, object]]:
        """The latest output of each SOP instance of a study, a series or one instance:
        pseudo_series_uid, pseudo_sop_uid, output_path, profile, in receipt order."""
        o = OBJECTS.c
        where = _with_output()
        if study is not None:
            where.append(o.pseudo_study_uid == study)
        if series is not None:
            where.append(o.pseudo_series_uid == series)
        if sop is not None:
            where.append(o.pseudo_sop_uid == sop)
        latest = select(func.max(o.id)).where(*where).group_by(o.pseudo_sop_uid)
        stmt = (
            select(
                o.pseudo_study_uid, o.pseudo_series_uid, o.pseudo_sop_uid, o.output_path, o.profile
            )
            .where(o.id.in_(latest))
            .order_by(o.received_at, o.id)
        )
        keys = ("pseudo_study_uid", "pseudo_series_uid", "pseudo_sop_uid", "output_path", "profile")
        with translate_errors("list instances"), transaction(self._engine, write=False) as conn:
            return [dict(zip(keys, row, strict=True)) for row in conn.execute(stmt)]

    def open_associations(self) -> int:
        """Associations started and not yet ended."""
        stmt = (
            select(func.count()).select_from(ASSOCIATIONS).where(ASSOCIATIONS.c.ended_at.is_(None))
        )
        with translate_errors("count associations"), transaction(self._engine, write=False) as conn:
            return int(conn.scalar(stmt) or 0)

    def iter_associations(
        self, filters: AssociationFilters, limit: int | None = None, *, offset: int = 0
    ) -> Iterator[dict[str, object]]:
        """Stream association rows matching the filters, newest first (close or exhaust it)."""
        _check_limit(limit)
        if offset < 0:
            raise AuditError(f"invalid offset {offset}: expected 0 or more")
        a = ASSOCIATIONS.c
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
        if filters.node is not None:
            conditions.append(a.node == filters.node)
        stmt = (
            select(ASSOCIATIONS)
            .where(*conditions)
            .order_by(a.started_at.desc(), a.id.desc())
            .limit(limit)
            .offset(offset or None)
        )
        return self._stream(stmt, "read associations")

    def iter_linkage(
        self, filters: Filters, limit: int | None = None
    ) -> Iterator[dict[str, object]]:
        """Stream linkage rows (PHI) of objects matching the filters, as LINKAGE_COLUMNS."""
        _check_limit(limit)
        o, lk = OBJECTS.c, LINKAGE.c
        from_objects = {"received_at", "calling_ae", "pseudo_series_uid"}
        stmt = (
            select(*((o if name in from_objects else lk)[name] for name in LINKAGE_COLUMNS))
            .select_from(LINKAGE.join(OBJECTS, lk.object_id == o.id))
            .where(*object_conditions(filters))
            .order_by(lk.id)
        )
        return self._stream(stmt.limit(limit), "read linkage")

    def _stream(self, stmt: Executable, action: str) -> Iterator[dict[str, object]]:
        with translate_errors(action), transaction(self._engine, write=False) as conn:
            result = conn.execution_options(yield_per=STREAM_BATCH).execute(stmt)
            for row in result:
                yield _row_dict(row._mapping)

    def study_summaries(self, filters: Filters, limit: int | None = None) -> list[StudySummary]:
        """Summarise matching objects per pseudonymous study, profile and calling AE.

        Newest first (by the last object received). Objects without a study are
        summarised per association, so one sender's failures do not merge with another's.
        """
        _check_limit(limit)
        o = OBJECTS.c

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
                func.min(o.node),
                func.max(o.node),
                func.count(func.distinct(o.node)),
            )
            .where(*object_conditions(filters))
            .group_by(o.pseudo_study_uid, o.profile, o.calling_ae, association)
            .order_by(
                last.desc(), o.pseudo_study_uid.nulls_last(), o.profile, o.calling_ae, association
            )
            .limit(limit)
        )
        with translate_errors("summarise studies"), transaction(self._engine, write=False) as conn:
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
                node=_nodes(row[12], row[13], int(row[14])),
            )
            for row in rows
        ]

    def quarantined(self, limit: int | None = None) -> list[dict[str, object]]:
        """Return quarantined objects (id, received_at, calling_ae, profile, reason, path)."""
        _check_limit(limit)
        o = OBJECTS.c
        stmt = (
            select(o.id, o.received_at, o.calling_ae, o.profile, o.reason, o.quarantine_path)
            .where(o.status == Status.QUARANTINED.value)
            .order_by(o.id)
            .limit(limit)
        )
        with (
            translate_errors("read quarantined objects"),
            transaction(self._engine, write=False) as conn,
        ):
            return [_row_dict(row._mapping) for row in conn.execute(stmt)]


def open_audit(url: str, connections: int = DEFAULT_CONNECTIONS, wait: float = 0.0) -> AuditDB:
    """Open the audit database at an SQLAlchemy URL, creating or upgrading its schema;
    `connections`: the pool of a server database (the threads that use it at once).

    `wait`: for so many seconds, a database that cannot be reached yet (a server starting
    or restarting) is tried again rather than reported (a node's start).
    """
    engine = create_audit_engine(url, connections)
    deadline = time.monotonic() + wait
    pauses = itertools.chain((0.5, 1.0, 2.0), itertools.repeat(5.0))
    try:
        while True:
            try:
                migrate(engine)
                break
            except AuditUnavailable as exc:
                pause = min(next(pauses), deadline - time.monotonic())
                if pause <= 0:
                    raise
                log.warning("%s; trying again in %.1f s", exc, pause)
                time.sleep(pause)
    except BaseException:
        engine.dispose()
        raise
    return AuditDB(engine)
