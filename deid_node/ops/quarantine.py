"""Quarantined objects: list them, retry them through their profile, purge them.

Quarantine files hold PHI; every retry and purge is recorded on the object's audit row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from deid_node.audit.db import AuditDB
from deid_node.clock import now
from deid_node.config import Config, Durability
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.errors import DeidNodeError
from deid_node.intake.spool import set_quarantine_reason
from deid_node.object_status import Status
from deid_node.ops.records import forwarding_for, linkage_for, object_record, outcome_columns


class QuarantineError(DeidNodeError):
    """A quarantine entry is unknown or cannot be acted on."""


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined object still on disk."""

    id: int
    received_at: datetime
    calling_ae: str
    profile: str
    reason: str
    path: Path


def list_quarantine(db: AuditDB) -> list[QuarantineEntry]:
    """Quarantined objects whose file is still held, oldest first."""
    entries = []
    for row in db.quarantined():
        path = row.get("quarantine_path")
        if not path:
            continue  # purged: the row stays as history
        received = row["received_at"]
        entries.append(
            QuarantineEntry(
                id=int(str(row["id"])),
                received_at=received if isinstance(received, datetime) else now(),
                calling_ae=str(row.get("calling_ae") or ""),
                profile=str(row.get("profile") or ""),
                reason=str(row.get("reason") or ""),
                path=Path(str(path)),
            )
        )
    return entries


def _select(db: AuditDB, ids: Iterable[int] | None) -> list[QuarantineEntry]:
    held = {e.id: e for e in list_quarantine(db)}
    if ids is None:
        return list(held.values())
    chosen = []
    for object_id in ids:
        if object_id not in held:
            raise QuarantineError(
                f"no quarantined object with id {object_id} (see: deid-node quarantine list)"
            )
        chosen.append(held[object_id])
    return chosen


def _remove(path: Path) -> None:
    for p in (path, path.with_suffix(".json")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def retry(
    cfg: Config, db: AuditDB, key: bytes, ids: Iterable[int] | None = None
) -> list[tuple[QuarantineEntry, Outcome]]:
    """Run quarantined objects through their profile again (e.g. after a profile fix)."""
    results = []
    fsync = cfg.node.durability is Durability.FSYNC
    for entry in _select(db, ids):
        if entry.profile not in cfg.profiles:
            raise QuarantineError(
                f"object {entry.id} was received for profile '{entry.profile}', "
                "which is no longer configured"
            )
        if not entry.path.exists():
            raise QuarantineError(f"object {entry.id}: its quarantine file is missing")
        profile = compile_profile(cfg.profiles[entry.profile])
        outcome = process_file(
            entry.path,
            profile,
            key,
            cfg.node.output,
            fsync=fsync,
        )
        moment = now()
        if outcome.status in (Status.STORED, Status.DUPLICATE):
            config = profile.config
            record = object_record(outcome, profile=entry.profile, processed_at=moment)
            note = f"retried from quarantine ({entry.reason})"[:500]
            changes = outcome_columns(record) | {"reason": note, "quarantine_path": None}
            db.update_object(
                entry.id,
                linkage=linkage_for(entry.profile, config.record_linkage, outcome),
                forwarding=forwarding_for(config, outcome, shared=cfg.node.output_shared),
                processed_at=moment,
                **changes,
            )
            _remove(entry.path)
        else:
            reason = outcome.reason or entry.reason
            db.update_object(entry.id, reason=reason, processed_at=moment)
            set_quarantine_reason(entry.path, reason, fsync=fsync)
        results.append((entry, outcome))
    return results


def purge(
    db: AuditDB, ids: Iterable[int] | None = None, *, older_than_days: float | None = None
) -> list[QuarantineEntry]:
    """Delete quarantined files (by id, or all older than N days); the audit rows stay."""
    if ids is None and older_than_days is None:
        raise QuarantineError("say which objects to purge: IDs, or --older-than DAYS")
    entries = _select(db, ids)
    if older_than_days is not None:
        cutoff = now() - timedelta(days=older_than_days)
        entries = [e for e in entries if e.received_at < cutoff]
    for entry in entries:
        _remove(entry.path)
        db.update_object(
            entry.id,
            reason=f"purged from quarantine ({entry.reason})"[:500],
            quarantine_path=None,
            processed_at=now(),
        )
    return entries
