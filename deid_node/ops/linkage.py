"""An offline run's audit rows, for profiles with record_linkage: the object rows and the
linkage rows (PHI) that refer to them, in batches (:class:`OfflineLinkage`).

The rows are built by :mod:`deid_node.ops.records`, as the node's and a retry's are.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

from deid_node.audit.db import AuditDB
from deid_node.audit.records import LinkageRecord, ObjectRecord
from deid_node.clock import now
from deid_node.deid.pipeline import Outcome
from deid_node.ops.records import linkage_for, object_record

OFFLINE_BATCH: Final = 500  # objects per transaction


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
        record = object_record(outcome, profile=self._profile, processed_at=now())
        self._pending.append((record, linkage))
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows in one transaction."""
        if self._pending:
            self._db.record_objects(self._pending)
            self._pending = []


__all__ = ["OFFLINE_BATCH", "OfflineLinkage"]
