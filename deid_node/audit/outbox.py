"""The forwarding outbox: jobs per object and destination, claimed, finished, retried.

Jobs are written with their object's row (:meth:`AuditDB.record_objects`); here the
forwarder claims them in batches, records what each attempt came to, and operators read,
retry and purge them. Every change is one short transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    func,
    or_,
    select,
    true,
    update,
)

from deid_node.audit.conditions import object_conditions
from deid_node.audit.records import Filters, format_time
from deid_node.audit.schema import FORWARDS, OBJECTS
from deid_node.audit.sql_engine import transaction, translate_errors

__all__ = [
    "FORWARD_COLUMNS",
    "DestinationCounts",
    "ForwardJob",
    "ForwardResult",
    "Outbox",
]

# What `audit --forwards` and `export-csv --forwards` show, one row per object and destination.
FORWARD_COLUMNS: Final = (
    "object_id",
    "received_at",
    "calling_ae",
    "profile",
    "destination",
    "state",
    "attempts",
    "last_error",
    "created_at",
    "next_attempt_at",
    "sent_at",
    "pseudo_study_uid",
    "pseudo_sop_uid",
    "node",  # added in schema version 9: the node that wrote the file
)
_FORWARD_TIMES: Final = frozenset({"received_at", "created_at", "next_attempt_at", "sent_at"})


@dataclass(frozen=True)
class ForwardJob:
    """A claimed job: what the sender needs to send one file to one destination."""

    id: int
    object_id: int
    destination: str
    attempts: int
    output_path: str
    sop_class_uid: str
    transfer_syntax_uid: str
    pseudo_study_uid: str


@dataclass(frozen=True)
class ForwardResult:
    """What one attempt came to: `sent`, `retry` (again at `next_attempt_at`), `failed`,
    or `release` (never attempted: back to the queue as it was)."""

    job_id: int
    state: str
    error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class DestinationCounts:
    """Jobs of one destination by state, and the oldest pending one."""

    destination: str
    pending: int = 0
    in_flight: int = 0
    sent: int = 0
    failed: int = 0
    oldest_pending: datetime | None = None


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class Outbox:
    """The outbox tables over an audit engine (see :meth:`AuditDB.outbox`)."""

    def __init__(self, engine: Engine, scope: ColumnElement[bool] | None = None) -> None:
        """Wrap the audit database's engine (already migrated); `scope` limits the jobs
        claimed and waited for (:meth:`for_node`)."""
        self._engine = engine
        self._scope = scope if scope is not None else true()

    def for_node(self, node: str, shared: bool) -> Outbox:
        """The outbox as node `node`'s forwarder sees it: the jobs whose file it wrote (and
        those of databases older than version 9, which name no node), and with `shared`
        (its own output is shared storage) every job whose file is on shared storage."""
        f = FORWARDS.c
        scope = or_(f.node == node, f.node.is_(None), *([f.shared == 1] if shared else []))
        return Outbox(self._engine, scope)

    def claim(self, destination: str, owner: str, now: datetime, limit: int) -> list[ForwardJob]:
        """Take up to `limit` due jobs of a destination, oldest first, for `owner`."""
        due = and_(_due(destination, now), self._scope)
        # A look without the write lock first: the audit writer needs that lock far more.
        with translate_errors("read forward jobs"), transaction(self._engine, write=False) as conn:
            if conn.execute(select(FORWARDS.c.id).where(due).limit(1)).first() is None:
                return []
        with translate_errors("claim forward jobs"), transaction(self._engine, write=True) as conn:
            return _claim(conn, due, destination, owner, now, limit)

    def finish(
        self,
        results: Sequence[ForwardResult],
        now: datetime,
        *,
        claim: tuple[str, str, int] | None = None,
    ) -> tuple[list[str], list[ForwardJob]]:
        """Record attempts; return the output files no longer needed (keep_output = false),
        and with `claim` = (destination, owner, limit) the next batch, in one transaction.

        A file is no longer needed once every destination of its object has it.
        """
        with (
            translate_errors("record forward attempts"),
            transaction(self._engine, write=True) as conn,
        ):
            spent = _record(conn, results, now)
            jobs = []
            if claim is not None:
                due = and_(_due(claim[0], now), self._scope)
                jobs = _claim(conn, due, claim[0], claim[1], now, claim[2])
        return spent, jobs

    def release(self, owner: str, older_than: datetime) -> int:
        """Put back what `owner` claimed and never finished (it died), and any claim made
        before `older_than` (a node that died elsewhere); return the count."""
        f = FORWARDS.c
        abandoned = or_(f.claimed_by == owner, f.claimed_at < format_time(older_than))
        with (
            translate_errors("release forward jobs"),
            transaction(self._engine, write=True) as conn,
        ):
            result = conn.execute(
                update(FORWARDS)
                .where(f.state == "in_flight", abandoned)
                .values(state="pending", claimed_by=None, claimed_at=None)
            )
            return int(result.rowcount)

    def release_expired(self, older_than: datetime) -> int:
        """Put back claims made before `older_than`, by any node (one that died keeps its
        claims for ever otherwise); return the count."""
        f = FORWARDS.c
        with (
            translate_errors("release forward jobs"),
            transaction(self._engine, write=True) as conn,
        ):
            result = conn.execute(
                update(FORWARDS)
                .where(f.state == "in_flight", f.claimed_at < format_time(older_than))
                .values(state="pending", claimed_by=None, claimed_at=None)
            )
            return int(result.rowcount)

    def next_due(self, destination: str) -> datetime | None:
        """When the earliest pending job of a destination is due, or None."""
        f = FORWARDS.c
        stmt = select(func.min(f.next_attempt_at)).where(
            f.destination == destination, f.state == "pending", self._scope
        )
        with translate_errors("read forward jobs"), transaction(self._engine, write=False) as conn:
            return _time(conn.scalar(stmt))

    def counts(self) -> list[DestinationCounts]:
        """Jobs per destination and state, with each destination's oldest pending job."""
        f = FORWARDS.c
        stmt = (
            select(f.destination, f.state, func.count(), func.min(f.created_at))
            .group_by(f.destination, f.state)
            .order_by(f.destination)
        )
        with translate_errors("count forward jobs"), transaction(self._engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        found: dict[str, dict[str, object]] = {}
        for destination, state, count, oldest in rows:
            entry = found.setdefault(destination, {"destination": destination})
            entry[state] = int(count)
            if state == "pending":
                entry["oldest_pending"] = _time(oldest)
        return [DestinationCounts(**entry) for entry in found.values()]  # type: ignore[arg-type]

    def retry(self, now: datetime, destination: str | None = None, *, failed: bool = False) -> int:
        """Make jobs due now: pending ones, or with `failed` the failed ones (attempts reset)."""
        f = FORWARDS.c
        where = [f.state == ("failed" if failed else "pending")]
        if destination is not None:
            where.append(f.destination == destination)
        values: dict[str, object] = {"next_attempt_at": format_time(now), "state": "pending"}
        if failed:
            values["attempts"] = 0
        with translate_errors("retry forward jobs"), transaction(self._engine, write=True) as conn:
            return int(conn.execute(update(FORWARDS).where(*where).values(values)).rowcount)

    def purge(self, destination: str | None = None) -> int:
        """Delete failed jobs (their objects stay); return the count."""
        f = FORWARDS.c
        where = [f.state == "failed"]
        if destination is not None:
            where.append(f.destination == destination)
        with translate_errors("purge forward jobs"), transaction(self._engine, write=True) as conn:
            return int(conn.execute(delete(FORWARDS).where(*where)).rowcount)

    def iter_jobs(
        self,
        filters: Filters,
        *,
        destination: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, object]]:
        """Stream jobs with their object's receipt, as FORWARD_COLUMNS, in job order."""
        f, o = FORWARDS.c, OBJECTS.c
        where = object_conditions(filters)
        if destination is not None:
            where.append(f.destination == destination)
        if state is not None:
            where.append(f.state == state)
        from_objects = {"received_at", "calling_ae", "profile"}
        stmt = (
            select(*((o if n in from_objects else f)[n] for n in FORWARD_COLUMNS))
            .select_from(FORWARDS.join(OBJECTS, f.object_id == o.id))
            .where(*where)
            .order_by(f.id)
            .limit(limit)
        )
        with translate_errors("read forward jobs"), transaction(self._engine, write=False) as conn:
            for row in conn.execution_options(yield_per=1000).execute(stmt):
                yield {
                    k: _time(v) if k in _FORWARD_TIMES and isinstance(v, str) else v
                    for k, v in row._mapping.items()
                }


def _due(destination: str, now: datetime) -> ColumnElement[bool]:
    f = FORWARDS.c
    return and_(
        f.destination == destination, f.state == "pending", f.next_attempt_at <= format_time(now)
    )


def _claim(
    conn: Connection,
    due: ColumnElement[bool],
    destination: str,
    owner: str,
    now: datetime,
    limit: int,
) -> list[ForwardJob]:
    f = FORWARDS.c
    # PostgreSQL: rows another node's claim holds are skipped, not waited for, so two
    # forwarders never take the same job; SQLite has one writer at a time (BEGIN
    # IMMEDIATE) and renders no FOR UPDATE.
    rows = conn.execute(
        select(
            f.id,
            f.object_id,
            f.attempts,
            f.output_path,
            f.sop_class_uid,
            f.transfer_syntax_uid,
            f.pseudo_study_uid,
        )
        .where(due)
        .order_by(f.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    taken = set(
        conn.scalars(
            update(FORWARDS)
            .where(f.id.in_([row[0] for row in rows]), f.state == "pending")
            .values(state="in_flight", claimed_by=owner, claimed_at=format_time(now))
            .returning(f.id)
        )
    )
    rows = [row for row in rows if row[0] in taken]  # only what this claim changed
    return [
        ForwardJob(
            id=row[0],
            object_id=row[1],
            destination=destination,
            attempts=row[2],
            output_path=row[3],
            sop_class_uid=row[4] or "",
            transfer_syntax_uid=row[5] or "",
            pseudo_study_uid=row[6] or "",
        )
        for row in rows
    ]


def _record(conn: Connection, results: Sequence[ForwardResult], now: datetime) -> list[str]:
    f = FORWARDS.c
    stamp = format_time(now)
    unclaimed = {"claimed_by": None, "claimed_at": None}
    sent = [r.job_id for r in results if r.state == "sent" and r.error is None]
    if sent:  # the common case, one statement for the batch
        conn.execute(
            update(FORWARDS)
            .where(f.id.in_(sent))
            .values(
                state="sent", sent_at=stamp, attempts=f.attempts + 1, last_error=None, **unclaimed
            )
        )
    for r in results:
        if r.state == "sent" and r.error is None:
            continue
        # An int, not a bool: PostgreSQL has no integer + boolean.
        tried = int(r.state != "release")
        values: dict[str, object] = {"attempts": f.attempts + tried, **unclaimed}
        if r.state == "release":
            values.update(state="pending", next_attempt_at=stamp)
        elif r.state == "sent":
            values.update(state="sent", sent_at=stamp, last_error=r.error)
        elif r.state == "failed":
            values.update(state="failed", last_error=r.error)
        else:
            at = r.next_attempt_at or now
            values.update(state="pending", last_error=r.error, next_attempt_at=format_time(at))
        conn.execute(update(FORWARDS).where(f.id == r.job_id).values(values))
    return _spent_files(conn, [r.job_id for r in results if r.state == "sent"])


def _spent_files(conn: Connection, sent_ids: Iterable[int]) -> list[str]:
    """Files of objects (keep_output = 0) among these sent jobs whose every job is sent."""
    ids = list(sent_ids)
    if not ids:
        return []
    f = FORWARDS.c
    objects = select(f.object_id).where(f.id.in_(ids), f.keep_output == 0)
    unsent = select(f.object_id).where(f.object_id.in_(objects), f.state != "sent")
    stmt = (
        select(f.output_path).where(f.object_id.in_(objects), f.object_id.not_in(unsent)).distinct()
    )
    return [str(path) for path in conn.scalars(stmt)]
