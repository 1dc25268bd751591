"""What the node audits: the receiving processes' reports and the workers' outcomes,
turned into audit writes (rows built by :mod:`deid_node.ops.records`) for the writer thread.

An object's spool file is removed (or moved to quarantine/) only once its row is
committed; the scheduler then stops counting it as pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from deid_node.audit.db import AuditDB
from deid_node.audit.writer import AuditWriter
from deid_node.clock import now
from deid_node.config import Config
from deid_node.deid.pipeline import Outcome
from deid_node.durable import write_atomic
from deid_node.errors import AuditError, StorageError, describe_error
from deid_node.intake.receiver import AssociationInfo, RefusedObject
from deid_node.intake.spool import Spool, SpoolItem
from deid_node.object_status import Status
from deid_node.ops.records import (
    forwarding_for,
    linkage_for,
    object_record,
    quarantined,
    refused_record,
)
from deid_node.runtime.metrics import NodeMetrics

log = logging.getLogger(__name__)

NODE_ID_FILE: Final = "node.id"  # in data_dir: the name it last ran as


class Recorder:
    """The node's :class:`~deid_node.intake.receiver.ReceiverEvents` and outcome sink.

    `received` schedules an acknowledged object, `released` tells the scheduler an object
    is recorded, `forwarded` wakes the forwarding process, `changed` wakes waiters.
    """

    def __init__(
        self,
        cfg: Config,
        writer: AuditWriter,
        spool: Spool,
        node_id: str,
        *,
        received: Callable[[SpoolItem], None],
        released: Callable[[str], None],
        forwarded: Callable[[], None],
        changed: Callable[[], None],
        metrics: NodeMetrics | None = None,
    ) -> None:
        """Record through `writer`, as node `node_id` ([node] name); count in `metrics`."""
        self._profiles = cfg.profiles
        self._shared = cfg.node.output_shared
        self._writer = writer
        self._spool = spool
        self._node_id = node_id
        self._received = received
        self._released = released
        self._forwarded = forwarded
        self._changed = changed
        self._metrics = metrics

    # -- outcomes -------------------------------------------------------------------------

    def record_outcome(self, item: SpoolItem, outcome: Outcome, *, redo: bool) -> None:
        """Queue the rows of `item`'s outcome; once committed, its spool file goes.

        `redo`: it may have been processed before a crash (the audit records it once).
        """
        receipt = item.receipt
        profile = self._profiles.get(receipt.profile)
        quarantine = self._spool.quarantine_path(item) if quarantined(outcome) else None
        record = object_record(
            outcome,
            profile=receipt.profile,
            processed_at=now(),
            received=receipt,
            receipt_id=item.stem,
            quarantine_path=quarantine,
            node=self._node_id,
        )
        linkage = linkage_for(
            receipt.profile, profile is not None and profile.record_linkage, outcome
        )
        forwarding = forwarding_for(profile, outcome, shared=self._shared)
        status, reason = record.status, record.reason
        if status is Status.QUARANTINED:
            log.warning("spool object %s quarantined: %s", item.stem, reason)
        queued = time.monotonic()
        metrics = self._metrics

        def finish() -> None:
            if metrics is not None:
                metrics.object_recorded(
                    receipt.profile, receipt.calling_ae, status.value, queued, outcome.pixels
                )
            try:
                if status is Status.QUARANTINED:
                    self._spool.move_to_quarantine(item, reason or "")
                else:
                    self._spool.remove(item)
            finally:
                if forwarding is not None:
                    self._forwarded()  # its jobs are committed: send them now
                self._released(item.stem)

        self._writer.put_object(record, linkage, finish, forwarding, redo=redo)

    def close_cut(self, ids: frozenset[str]) -> None:
        """Close associations a dead receiving process cut (their objects are recorded)."""
        node = self._node_id

        def close(db: AuditDB) -> None:
            closed = db.close_interrupted(node, ids)
            log.warning("%d association(s) a receiving process cut closed as interrupted", closed)

        self._writer.put_call("close interrupted associations", close)

    # -- ReceiverEvents -------------------------------------------------------------------

    def association_accepted(self, info: AssociationInfo) -> None:
        """Audit the start of an accepted association."""
        if self._metrics is not None:
            self._metrics.association_accepted(info.calling_ae)
        self._writer.put_call(
            "record an association",
            lambda db: db.record_association_start(
                info.id,
                info.started_at,
                info.peer_address,
                info.calling_ae,
                info.called_ae,
                self._node_id,
            ),
        )

    def association_rejected(self, info: AssociationInfo, reason: str) -> None:
        """Audit a rejected association."""
        if self._metrics is not None:
            self._metrics.association_rejected(reason)
        self._writer.put_call(
            "record a rejected association",
            lambda db: db.record_rejected_association(
                info.id,
                info.started_at,
                info.peer_address,
                info.calling_ae,
                info.called_ae,
                reason,
                self._node_id,
            ),
        )

    def association_ended(self, info: AssociationInfo) -> None:
        """Audit the end of an association."""
        ended = now()
        if self._metrics is not None:
            self._metrics.association_ended(info.started_at)
        self._writer.put_call(
            "record an association end",
            lambda db: db.record_association_end(
                info.id, ended, info.objects, info.outcome or "closed", info.note
            ),
        )
        self._changed()

    def object_refused(self, refused: RefusedObject) -> None:
        """Audit a C-STORE answered with a failure status."""
        metrics = self._metrics
        assoc = refused.association

        def counted() -> None:
            if metrics is not None:
                metrics.object_refused(assoc.profile, assoc.calling_ae, refused.status)

        self._writer.put_object(refused_record(refused, self._node_id), after_commit=counted)

    def object_received(self, item: SpoolItem) -> None:
        """Schedule an acknowledged object for de-identification."""
        if self._metrics is not None:
            receipt = item.receipt
            self._metrics.object_received(receipt.profile, receipt.calling_ae, receipt.size_bytes)
        self._received(item)

    def associations_changed(self, active: int) -> None:
        """Nothing to do: the node reads the count from the receiving processes."""


def close_interrupted(db: AuditDB, names: tuple[str, ...]) -> None:
    """At start: close the associations a crash of this node (under any of its `names`)
    left open; their objects are recorded by then (recovery), so their counts are right."""
    try:
        closed = sum(db.close_interrupted(name) for name in names)
    except AuditError as exc:  # bookkeeping: the node serves on, the next start retries
        log.error("cannot close interrupted associations: %s", exc)
        return
    if closed:
        log.warning("%d association(s) cut by a crash closed as interrupted", closed)


def node_identity(data_dir: Path, name: str) -> tuple[str, ...]:
    """The names this data_dir's associations may carry: `name` ([node] name), and the one
    it last ran as (data_dir/node.id, a random one before version 9) if that differs.

    A crash's open associations are closed by the data_dir whose spool held their objects,
    also after the node was renamed; node.id then takes the new name.
    """
    path = data_dir / NODE_ID_FILE
    try:
        found = path.read_text(encoding="ascii").strip()[:64]
    except FileNotFoundError:
        found = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {describe_error(exc)}") from None
    if found != name:
        data = name.encode("utf-8") + b"\n"
        write_atomic(path, [data], fsync=True)  # StorageError if not
    return (name, found) if found and found != name else (name,)


__all__ = ["NODE_ID_FILE", "Recorder", "close_interrupted", "node_identity"]
