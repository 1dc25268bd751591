"""Linkage rows (PHI) of stored objects, for profiles with record_linkage.

One :func:`linkage_for` for the node, quarantine retry and offline runs; offline runs
also write the object rows the linkage rows refer to, in batches (:class:`OfflineLinkage`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

from deid_node.audit.db import AuditDB
from deid_node.audit.records import LinkageRecord, ObjectRecord
from deid_node.clock import now
from deid_node.deid.pipeline import Outcome
from deid_node.object_status import Origin

OFFLINE: Final = "(offline)"  # calling AE, called AE and peer of offline objects
OFFLINE_BATCH: Final = 500  # objects per transaction


def linkage_for(name: str, record_linkage: bool, outcome: Outcome) -> LinkageRecord | None:
    """The linkage row of a stored outcome, for profiles with record_linkage (PHI)."""
    originals = outcome.originals
    if not record_linkage or originals is None:
        return None
    return LinkageRecord(
        profile=name,
        original_patient_id=originals.patient_id,
        original_patient_name=originals.patient_name,
        original_accession_number=originals.accession_number,
        original_study_uid=originals.study_uid,
        original_series_uid=originals.series_uid,
        original_sop_uid=originals.sop_uid,
        pseudo_patient_id=outcome.pseudo_patient_id,
        pseudo_study_uid=outcome.pseudo_study_uid,
        pseudo_sop_uid=outcome.pseudo_sop_uid,
        date_shift_days=originals.date_shift_days,
    )


class OfflineLinkage:
    """Object and linkage rows of an offline run's stored objects, a batch per transaction.

    Rows are marked offline (origin ``offline``; calling AE, called AE and peer
    ``(offline)``) and name their output by its absolute path, whatever the working folder
    was; what is still pending is written when the block ends, however it ends, then the
    database is closed.
    """

    def __init__(self, db: AuditDB, profile: str, batch: int = OFFLINE_BATCH) -> None:
        """Record into `db` for objects de-identified with `profile`."""
        self._db = db
        self._profile = profile
        self._batch = batch
        self._pending: list[tuple[ObjectRecord, LinkageRecord | None]] = []

    def __enter__(self) -> OfflineLinkage:
        """Return self."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write what is pending (its output files exist), then close the database."""
        try:
            self.flush()
        finally:
            self._db.close()

    def add(self, outcome: Outcome) -> None:
        """Queue the rows of a stored or duplicate outcome; others have no linkage."""
        linkage = linkage_for(self._profile, True, outcome)
        if linkage is None:
            return
        at = now()
        record = ObjectRecord(
            received_at=at,
            processed_at=at,
            association_id=None,
            calling_ae=OFFLINE,
            called_ae=OFFLINE,
            peer_address=OFFLINE,
            profile=self._profile,
            sop_class_uid=outcome.sop_class_uid,
            transfer_syntax_uid=outcome.transfer_syntax_uid,
            size_bytes=outcome.size_bytes,
            status=outcome.status,
            reason=None,
            pseudo_patient_id=outcome.pseudo_patient_id,
            pseudo_study_uid=outcome.pseudo_study_uid,
            pseudo_series_uid=outcome.pseudo_series_uid,
            pseudo_sop_uid=outcome.pseudo_sop_uid,
            output_path=str(outcome.output_path.absolute()) if outcome.output_path else None,
            pixels=outcome.pixels,
            origin=Origin.OFFLINE,
        )
        self._pending.append((record, linkage))
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows in one transaction."""
        if self._pending:
            self._db.record_objects(self._pending)
            self._pending = []


__all__ = ["OFFLINE", "OfflineLinkage", "linkage_for"]
