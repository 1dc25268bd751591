"""Audit rows as CSV: UTC ISO 8601 times, empty for NULL, streamed."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TextIO

from deid_node.audit.records import format_time

__all__ = ["csv_values", "write_csv"]


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def csv_values(row: Mapping[str, object], columns: Sequence[str]) -> list[str]:
    """One row's cells as the CSV export writes them."""
    return [_csv_value(row.get(column)) for column in columns]


def write_csv(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    out: TextIO,
    *,
    line_end: str = "\r\n",
) -> int:
    """Write rows as CSV with a header (open ``out`` with newline=''); return the count.

    RFC 4180 ends lines with CRLF (what spreadsheets expect); ``line_end="\\n"`` suits Unix
    tools. Line breaks inside a quoted value are kept as they are either way.
    """
    writer = csv.writer(out, lineterminator=line_end)
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow(csv_values(row, columns))
        count += 1
    return count
