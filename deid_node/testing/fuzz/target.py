"""The node under test: where it listens, and where to read what it did."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deid_node.testing.node_audit import NodeAudit

__all__ = ["Target"]


@dataclass
class Target:
    """Where the node listens, and what we can read of it afterwards."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    data_dir: Path | None = None
    output_dir: Path | None = None
    db_url: str | None = None  # its audit database, read through deid_node.audit
    db_path: Path | None = None  # the file of an SQLite db_url, scanned for planted values
    log_path: Path | None = None
    key: bytes | None = None
    scope: str | None = None
    record_linkage: bool = False
    proc: subprocess.Popen[bytes] | None = None
    _audit: NodeAudit | None = field(default=None, init=False, repr=False)

    @property
    def audit(self) -> NodeAudit:
        """Its audit database, opened at the first read (and again after close_audit)."""
        if self._audit is None:
            self._audit = NodeAudit(self.db_url, self.db_path)
        return self._audit

    def close_audit(self) -> None:
        """Close the audit database, if a read opened it."""
        if self._audit is not None:
            self._audit.close()
            self._audit = None
