"""Audit records from outcomes: the one mapping of what the pipeline reports to object,
linkage and forwarding records, for the node, offline runs, quarantine retries and jobs.

Imports no SQLAlchemy: offline runs without linkage open no database.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from deid_node.audit.records import Forwarding, LinkageRecord, ObjectRecord
from deid_node.config import ProfileConfig
from deid_node.deid.pipeline import Outcome
from deid_node.object_status import Origin, Status

if TYPE_CHECKING:  # types only: quarantine retries and offline runs import no pynetdicom
    from deid_node.intake.receiver import RefusedObject
    from deid_node.intake.spool import Receipt

__all__ = [
    "OFFLINE",
    "OUTCOME_COLUMNS",
    "PSEUDONYM_COLUMNS",
    "forwarding_for",
    "linkage_for",
    "manifest_row",
    "object_record",
    "outcome_columns",
    "quarantined",
    "refused_record",
]

OFFLINE: Final = "(offline)"  # calling AE, called AE and peer of offline objects
PSEUDONYM_COLUMNS: Final = (
    "pseudo_patient_id",
    "pseudo_study_uid",
    "pseudo_series_uid",
    "pseudo_sop_uid",
)
# The object columns an outcome decides (the rest say where and when it came from).
OUTCOME_COLUMNS: Final = (
    "status",
    "reason",
    "sop_class_uid",
    "transfer_syntax_uid",
    *PSEUDONYM_COLUMNS,
    "output_path",
    "pixels",
)


def quarantined(outcome: Outcome) -> bool:
    """Whether the audit records `outcome` as quarantined (not DICOM after all is too)."""
    return outcome.status is Status.QUARANTINED or outcome.status is Status.SKIPPED


def object_record(
    outcome: Outcome,
    *,
    profile: str,
    processed_at: datetime,
    received: Receipt | None = None,
    receipt_id: str | None = None,
    quarantine_path: Path | None = None,
    node: str | None = None,
) -> ObjectRecord:
    """The objects row of `outcome`: received by the node (`received`, its spool receipt,
    and `receipt_id`, the spool stem), else written by an offline run (origin ``offline``,
    no association, the output named by its absolute path)."""
    status, reason = outcome.status, outcome.reason
    if status is Status.SKIPPED:  # not DICOM after all: the header check let it through
        status, reason = Status.QUARANTINED, reason or "not a DICOM data set"
    path, r = outcome.output_path, received
    return ObjectRecord(
        received_at=r.received_at if r else processed_at,
        processed_at=processed_at,
        association_id=r.association_id if r else None,
        calling_ae=r.calling_ae if r else OFFLINE,
        called_ae=r.called_ae if r else OFFLINE,
        peer_address=r.peer_address if r else OFFLINE,
        profile=profile,
        sop_class_uid=outcome.sop_class_uid or (r.sop_class_uid if r else None),
        transfer_syntax_uid=outcome.transfer_syntax_uid or (r.transfer_syntax_uid if r else None),
        size_bytes=r.size_bytes if r else outcome.size_bytes,
        status=status,
        reason=reason,
        pseudo_patient_id=outcome.pseudo_patient_id,
        pseudo_study_uid=outcome.pseudo_study_uid,
        pseudo_series_uid=outcome.pseudo_series_uid,
        pseudo_sop_uid=outcome.pseudo_sop_uid,
        output_path=None if path is None else str(path if r else path.absolute()),
        quarantine_path=None if quarantine_path is None else str(quarantine_path),
        pixels=outcome.pixels,
        receipt_id=receipt_id,
        origin=Origin.NODE if r else Origin.OFFLINE,
        node=node,
    )


def outcome_columns(record: ObjectRecord) -> dict[str, object]:
    """The columns of `record` its outcome decided, to update an existing row with."""
    return {name: getattr(record, name) for name in OUTCOME_COLUMNS}


def refused_record(refused: RefusedObject, node: str | None = None) -> ObjectRecord:
    """The objects row of a C-STORE answered with a failure status (nothing was kept), by
    `node`."""
    info = refused.association
    return ObjectRecord(
        received_at=refused.received_at,
        processed_at=refused.received_at,
        association_id=info.id,
        calling_ae=info.calling_ae,
        called_ae=info.called_ae,
        peer_address=info.peer_address,
        profile=info.profile or "",
        sop_class_uid=refused.sop_class_uid,
        transfer_syntax_uid=refused.transfer_syntax_uid,
        size_bytes=refused.size_bytes,
        status=Status.REJECTED,
        reason=f"refused with 0x{refused.status:04X}: {refused.reason}",
        pseudo_patient_id=None,
        pseudo_study_uid=None,
        pseudo_series_uid=None,
        pseudo_sop_uid=None,
        output_path=None,
        node=node,
    )


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


def forwarding_for(
    profile: ProfileConfig | None, outcome: Outcome, *, shared: bool = False
) -> Forwarding | None:
    """Where a written outcome goes: its profile's destinations, if it forwards; `shared`:
    its output is on storage every node reads ([node] output_shared)."""
    if profile is None or not profile.forward_to or outcome.output_path is None:
        return None
    return Forwarding(profile.forward_to, profile.keep_output, shared)


def manifest_row(outcome: Outcome, output_root: Path) -> dict[str, str]:
    """A job's manifest line: the file (relative to the job's output) and the outcome."""
    path = outcome.output_path
    return {
        "file": "" if path is None else str(path.relative_to(output_root)),
        "status": outcome.status.value,
        "reason": outcome.reason or "",
        **{name: getattr(outcome, name) or "" for name in PSEUDONYM_COLUMNS},
    }
