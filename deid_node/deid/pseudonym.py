"""Keyed, deterministic pseudonyms: pure functions of (key, scope, original).

The same key, scope and original give the same pseudonym in every object, process,
restart and node sharing the key; another scope gives unlinkable ones.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta

# Dates are shifted back by 1 to 10 years, so they never land in the future.
_MIN_SHIFT_DAYS = 365
_SHIFT_SPAN_DAYS = 3288


def _digest(key: bytes, scope: str, kind: str, value: str) -> bytes:
    # Length-prefixed fields so no (scope, kind, value) triple can collide with another.
    msg = b"".join(
        len(part).to_bytes(4, "big") + part
        for part in (scope.encode(), kind.encode(), value.encode("utf-8", "surrogateescape"))
    )
    return hmac.new(key, msg, hashlib.sha256).digest()


def pseudo_uid(key: bytes, scope: str, uid: str) -> str:
    """`2.25.` + the first 128 bits of HMAC-SHA256(key, scope, uid) as a decimal integer."""
    return "2.25." + str(int.from_bytes(_digest(key, scope, "uid", uid.strip("\0 "))[:16], "big"))


def pseudo_patient_id(key: bytes, scope: str, identity: str, prefix: str = "") -> str:
    """Prefix + 16 upper-case hex digits keyed on the patient's identity."""
    return prefix + _digest(key, scope, "patient", identity)[:8].hex().upper()


def date_offset_days(key: bytes, scope: str, identity: str) -> int:
    """The per-patient date shift in days (negative: 1 to 10 years back)."""
    n = int.from_bytes(_digest(key, scope, "date", identity)[:4], "big")
    return -(_MIN_SHIFT_DAYS + n % _SHIFT_SPAN_DAYS)


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value (YYYYMMDD, or YYYY / YYYYMM precision); None if not a date."""
    text = value.strip()
    if not text.isdigit() or len(text) not in (4, 6, 8):
        return None
    try:
        year = int(text[0:4])
        month = int(text[4:6]) if len(text) >= 6 else 1
        day = int(text[6:8]) if len(text) == 8 else 1
        shifted = date(year, month, day) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted.strftime("%Y%m%d").rjust(8, "0")[: len(text)]


def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping time, fraction and UTC offset."""
    text = value.strip()
    digits = 0
    while digits < len(text) and digits < 8 and text[digits].isdigit():
        digits += 1
    if digits not in (4, 6, 8):
        return None
    head = shift_date(text[:digits], days)
    if head is None:
        return None
    return head + text[digits:]
