"""Keyed pseudonyms: deterministic, scoped, valid DICOM values."""

from __future__ import annotations

import re

import pytest

from deid_node.deid.pseudonym import (
    date_offset_days,
    pseudo_patient_id,
    pseudo_uid,
    shift_date,
    shift_datetime,
)

KEY = b"\x01" * 32
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_uid_is_valid_deterministic_and_keyed() -> None:
    uid = pseudo_uid(KEY, "s", "1.2.3.4")
    assert UID_RE.match(uid) and len(uid) <= 64
    assert int(uid[5:]) < 2**128
    assert uid == pseudo_uid(KEY, "s", "1.2.3.4")
    assert uid != pseudo_uid(KEY, "other", "1.2.3.4")
    assert uid != pseudo_uid(b"\x02" * 32, "s", "1.2.3.4")
    assert uid == pseudo_uid(KEY, "s", "1.2.3.4\0")  # UI padding is not part of the UID


def test_fields_cannot_collide_across_scope_and_value() -> None:
    assert pseudo_uid(KEY, "ab", "c") != pseudo_uid(KEY, "a", "bc")


def test_patient_id_has_prefix_and_fits_lo() -> None:
    pid = pseudo_patient_id(KEY, "s", "id:12345", "RES")
    assert re.fullmatch(r"RES[0-9A-F]{16}", pid)
    assert pid != pseudo_patient_id(KEY, "s", "id:12346", "RES")


def test_date_offset_is_per_patient_and_in_the_past() -> None:
    offsets = {date_offset_days(KEY, "s", f"id:{i}") for i in range(200)}
    assert all(-3653 <= d <= -365 for d in offsets)
    assert len(offsets) > 150  # patients get different offsets
    assert date_offset_days(KEY, "s", "id:1") == date_offset_days(KEY, "s", "id:1")


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20210304", -1, "20210303"),
        ("20210301", -1, "20210228"),
        ("202103", -31, "202101"),  # month precision stays month precision
        ("2021", -366, "2020"),
        ("2021-03-04", -1, None),  # not a DA
        ("20211340", -1, None),  # not a calendar date
        ("", -1, None),
    ],
)
def test_shift_date(value: str, days: int, expected: str | None) -> None:
    assert shift_date(value, days) == expected


def test_shift_datetime_keeps_time_and_offset() -> None:
    assert shift_datetime("20210304101112.123456+0100", -2) == "20210302101112.123456+0100"
    assert shift_datetime("2021", -366) == "2020"
    assert shift_datetime("garbage", -1) is None
