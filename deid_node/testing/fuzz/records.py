"""What the node left behind: audit rows (read through deid_node.audit), files, its log."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from deid_node.audit.records import Filters
from deid_node.testing.fuzz.target import Target

__all__ = [
    "ACCEPTED_ROW",
    "audit_rows",
    "count_files",
    "exception_summary",
    "wait_for_drain",
]

# Statuses of an object the node acknowledged (rejected ones were refused with a status).
ACCEPTED_ROW: Final = ("stored", "duplicate", "quarantined")


def audit_rows(target: Target, since: datetime) -> list[dict[str, object]] | None:
    """Object rows of our sender received since ``since``; None if there is no database.

    An empty list also when the database cannot be read right now (locked, not created yet).
    """
    return target.audit.objects(Filters(since=since, calling_ae=target.calling_ae))


def count_files(folder: Path | None) -> int:
    """Regular files under a folder, recursively (0 if it does not exist)."""
    if folder is None or not folder.exists():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file())


def wait_for_drain(
    target: Target, accepted: int, since: datetime, limit: float, stall: float = 90.0
) -> float:
    """Wait until every accepted object has an audit row and the spool is empty.

    Gives up early when the node is dead or nothing moved for `stall` seconds.
    """
    t0 = time.monotonic()
    spool = target.data_dir / "spool" if target.data_dir else None
    last, moved = (-1, -1), time.monotonic()
    filters = Filters(since=since, calling_ae=target.calling_ae)
    while time.monotonic() < limit:
        counts = target.audit.status_counts(filters)
        if counts is None:
            break
        done = sum(counts[status] for status in ACCEPTED_ROW)
        left = count_files(spool)
        if done >= accepted and left == 0:
            break
        if (done, left) != last:
            last, moved = (done, left), time.monotonic()
        elif time.monotonic() - moved > stall:
            break
        if target.proc is not None and target.proc.poll() is not None:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def exception_summary(log: Path | None) -> dict[str, Any]:
    """Tracebacks in the node's log and the exception type that ended each."""
    if log is None or not log.exists():
        return {"log": None, "tracebacks": 0, "types": {}}
    lines = log.read_text(errors="replace").splitlines()
    types: Counter[str] = Counter()
    count = 0
    end_re = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\w*)(?::|$)")
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            count += 1
            for later in lines[i + 1 : i + 400]:
                m = end_re.match(later)
                if m:
                    types[m.group(1)] += 1
                    break
    return {"log": str(log), "tracebacks": count, "types": dict(types)}
