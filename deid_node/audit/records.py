"""What goes into the audit and what selects from it: records, filters, times.

No SQLAlchemy here: the web console's routes and the CLI read filters and times from it
without opening a database. The statuses themselves are in :mod:`deid_node.object_status`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from deid_node.errors import AuditError
from deid_node.object_status import Origin, Status

__all__ = [
    "ASSOCIATION_OUTCOMES",
    "STATUSES",
    "STUDY_COLUMNS",
    "AssociationFilters",
    "Filters",
    "Forwarding",
    "LinkageRecord",
    "ObjectRecord",
    "StudySummary",
    "check_status",
    "format_time",
    "parse_association_filters",
    "parse_filters",
    "parse_time",
]

_TIME_HINT: Final = "expected ISO 8601 such as 2026-11-22 or 2026-11-22T05:00:00Z"


# What the status column may hold: a node quarantines what turns out not to be DICOM.
STATUSES: Final[tuple[str, ...]] = tuple(s.value for s in Status if s is not Status.SKIPPED)
# How an association ended, as in the associations.outcome column; "interrupted": the node
# or its receiving process died during it (closed afterwards); "open": no outcome yet.
ASSOCIATION_OUTCOMES: Final = ("released", "aborted", "closed", "rejected", "interrupted", "open")


def check_status(value: str, what: str) -> str:
    """Return `value` as stored in the status column; AuditError naming `what` if invalid."""
    if value not in STATUSES:
        shown = str(value)  # a Status member's repr would name the enum
        raise AuditError(f"invalid {what} {shown!r}: expected one of {', '.join(STATUSES)}")
    return str(Status(value).value)


@dataclass(frozen=True)
class ObjectRecord:
    """What the pipeline reports for one received object (every objects column but id)."""

    received_at: datetime
    processed_at: datetime | None
    association_id: str | None
    calling_ae: str
    called_ae: str
    peer_address: str
    profile: str
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    size_bytes: int
    status: Status
    reason: str | None
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None
    pseudo_series_uid: str | None
    pseudo_sop_uid: str | None
    output_path: str | None
    quarantine_path: str | None = None
    pixels: str | None = None  # what was done to burned-in text, counts only
    receipt_id: str | None = None  # the spool entry (stem) a node row records
    origin: Origin = Origin.NODE
    node: str | None = None  # the node ([node] name) that received and wrote it


@dataclass(frozen=True)
class LinkageRecord:
    """Original and pseudonymous identifiers of one object, for profiles with record_linkage.

    ``date_shift_days`` is the offset added to every date (retain-longitudinal-modified-dates),
    None when dates were not shifted: with it, a shifted date maps back to the original.
    """

    profile: str
    original_patient_id: str | None
    original_patient_name: str | None
    original_accession_number: str | None
    original_study_uid: str | None
    original_series_uid: str | None
    original_sop_uid: str | None
    pseudo_patient_id: str | None
    pseudo_study_uid: str | None
    pseudo_sop_uid: str | None
    date_shift_days: int | None


@dataclass(frozen=True)
class Forwarding:
    """Where a stored object goes: its profile's destinations and keep_output, and whether
    any node's forwarder may send it."""

    destinations: tuple[str, ...]
    keep_output: bool = True
    shared: bool = False  # the file is on output every node reads ([node] output_shared)


@dataclass(frozen=True)
class Filters:
    """Which objects a query selects; ``since`` is inclusive, ``until`` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    calling_ae: str | None = None
    profile: str | None = None
    status: str | None = None
    study: str | None = None
    node: str | None = None

    def __post_init__(self) -> None:
        _check_range(self.since, self.until)
        if self.status is not None:
            check_status(self.status, "status filter")


@dataclass(frozen=True)
class AssociationFilters:
    """Which associations a query selects, by start time (``until`` exclusive)."""

    since: datetime | None = None
    until: datetime | None = None
    calling_ae: str | None = None
    outcome: str | None = None
    node: str | None = None

    def __post_init__(self) -> None:
        _check_range(self.since, self.until)
        if self.outcome is not None and self.outcome not in ASSOCIATION_OUTCOMES:
            raise AuditError(
                f"invalid outcome filter {self.outcome!r}: expected one of "
                f"{', '.join(ASSOCIATION_OUTCOMES)}"
            )


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise AuditError(
                f"filter '{name}' is a naive datetime: give a timezone-aware one "
                "(parse_time() returns UTC)"
            )
    if since is not None and until is not None and since >= until:
        raise AuditError(
            f"invalid time range: since {format_time(since)} is not before "
            f"until {format_time(until)}; until is exclusive"
        )


@dataclass(frozen=True)
class StudySummary:
    """Counts for one pseudonymous study of one profile and calling AE.

    Objects without a study (quarantined or rejected before de-identification) are
    summarised per association instead: ``association_id`` says which.
    """

    pseudo_study_uid: str | None
    pseudo_patient_id: str | None
    calling_ae: str
    profile: str
    first_received_at: datetime
    last_received_at: datetime
    objects: int
    stored: int
    quarantined: int
    duplicate: int
    rejected: int
    association_id: str | None = None
    node: str = ""  # the node it came through; several: "gw-1,gw-2" (sorted)


STUDY_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(StudySummary))


def format_time(value: datetime) -> str:
    """Return an aware datetime as fixed-width UTC ISO 8601 with microseconds and ``Z``."""
    if value.utcoffset() is None:
        raise AuditError("naive datetime given: audit times must be timezone-aware (UTC)")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time (naive means UTC) into an aware UTC datetime."""
    stripped = text.strip()
    try:
        if not stripped:
            raise ValueError(text)
        value = datetime.fromisoformat(stripped)
    except ValueError:
        raise AuditError(f"invalid time {text!r}: {_TIME_HINT}") from None
    if value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_filters(
    since: str | None = None,
    until: str | None = None,
    calling_ae: str | None = None,
    profile: str | None = None,
    status: str | None = None,
    study: str | None = None,
    node: str | None = None,
) -> Filters:
    """Object filters from the text a command line or a query string gives (empty = none)."""
    return Filters(
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        calling_ae=calling_ae or None,
        profile=profile or None,
        status=status.strip().lower() if status else None,
        study=study or None,
        node=node or None,
    )


def parse_association_filters(
    since: str | None = None,
    until: str | None = None,
    calling_ae: str | None = None,
    outcome: str | None = None,
    node: str | None = None,
) -> AssociationFilters:
    """Association filters from text, as :func:`parse_filters`."""
    return AssociationFilters(
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        calling_ae=calling_ae or None,
        outcome=outcome.strip().lower() if outcome else None,
        node=node or None,
    )
