"""The one clock: every timestamp the node records is UTC and timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(UTC)
