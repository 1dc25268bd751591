"""A running node's audit database, read through deid_node.audit while the node writes it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import TracebackType

from deid_node.audit.db import AuditDB, open_audit
from deid_node.audit.records import Filters
from deid_node.errors import AuditError
from deid_node.object_status import Status

__all__ = ["NodeAudit"]


class NodeAudit:
    """Reads the audit database of a node someone else is writing to, and never fails.

    The database may not exist yet, or be locked by the node's writer beyond the busy
    timeout: a read then answers "nothing yet" (an empty result) and the next read tries
    again. An SQLite file is opened only once it exists, since opening would create it.
    """

    def __init__(self, url: str | None, sqlite_file: Path | None = None) -> None:
        """Watch the database at an SQLAlchemy URL (None: none we can read).

        ``sqlite_file`` is the file an SQLite URL names: it is opened only once that exists.
        """
        self.url = url
        self._file = sqlite_file
        self._db: AuditDB | None = None

    def __enter__(self) -> NodeAudit:
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

    @property
    def available(self) -> bool:
        """Whether there is a database to read (for SQLite: whether its file exists)."""
        return self.url is not None and (self._file is None or self._file.exists())

    def _open(self) -> AuditDB | None:
        if self._db is None and self.url is not None and self.available:
            try:
                self._db = open_audit(self.url)
            except AuditError:  # locked while the node migrates, or not reachable yet
                return None
        return self._db

    def objects(self, filters: Filters) -> list[dict[str, object]] | None:
        """Object rows matching the filters, in the order recorded; None: no database."""
        if not self.available:
            return None
        db = self._open()
        if db is None:
            return []
        try:
            return list(db.iter_objects(filters))
        except AuditError:
            return []

    def status_counts(self, filters: Filters) -> Counter[str] | None:
        """How many matching objects have each status; None: no database."""
        if not self.available:
            return None
        db = self._open()
        counts: Counter[str] = Counter()
        if db is None:
            return counts
        try:
            # Counted by the database (per study), not row by row: cheap enough to poll.
            summaries = db.study_summaries(filters)
        except AuditError:
            return counts
        for s in summaries:
            counts[Status.STORED.value] += s.stored
            counts[Status.DUPLICATE.value] += s.duplicate
            counts[Status.QUARANTINED.value] += s.quarantined
            counts[Status.REJECTED.value] += s.rejected
        return +counts

    def close(self) -> None:
        """Close the database (a later read opens it again)."""
        if self._db is not None:
            self._db.close()
            self._db = None
