"""What became of an object and who recorded it: the words of the audit's status and
origin columns, shared by the pipeline, the audit and every operation.

On the ground floor, with no imports: worker processes and config loading read it
without SQLAlchemy or the audit package.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Origin", "Status"]


class Status(StrEnum):
    """What became of an object, as in the audit ``status`` column (all but SKIPPED)."""

    STORED = "stored"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"  # offline runs only: not a DICOM file; never audited


class Origin(StrEnum):
    """Who wrote an object row, as in the audit ``origin`` column."""

    NODE = "node"  # received over the network (or a quarantine retry of such an object)
    OFFLINE = "offline"  # `deid-node deidentify` under a profile with record_linkage
