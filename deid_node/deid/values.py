"""Values the engine writes and reads: dummies per VR, value text, name parts, date spellings."""

from __future__ import annotations

import re

from pydicom.multival import MultiValue

MIN_SCRUB_LEN = 2  # shorter name parts are not scrubbed from kept text
DUMMY_TEXT = "ANONYMIZED"
DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000.000000",
    "TM": "000000.00",
    "DS": "0",
    "IS": "0",
    "PN": DUMMY_TEXT,
    "UR": "",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "UN": b"",
}
STRING_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC")
EMPTY: dict[str, object] = {vr: "" for vr in (*STRING_VRS, "UI", "UR", "UT")}
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}


def text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def values_of(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def name_parts(value: object) -> list[str]:
    parts: list[str] = []
    for v in values_of(value):
        for piece in re.split(r"[\^=\s,.]+", v):
            if len(piece) >= MIN_SCRUB_LEN:
                parts.append(piece)
    return parts


MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def date_forms(value: str) -> list[str]:
    """A DA value (first) and the spellings a person types it in: 2021-03-04, 04/03/2021,
    3/4/2021, 4 March 2021, March 4, 2021, 04-Mar-2021 (case is ignored by the scrub)."""
    v = value.strip()
    if len(v) != 8 or not v.isdigit() or not 1 <= int(v[4:6]) <= 12:
        return []
    y, m, d = v[:4], v[4:6], v[6:]
    mi, di = str(int(m)), str(int(d))
    month = MONTHS[int(m) - 1]
    forms = [v, *(f"{y}{s}{m}{s}{d}" for s in "-/."), *(f"{d}{s}{m}{s}{y}" for s in "/.-")]
    forms += [f"{m}/{d}/{y}", f"{mi}/{di}/{y}", f"{di}/{mi}/{y}", f"{di}.{mi}.{y}"]
    for name in dict.fromkeys((month, month[:3])):
        forms += [f"{di} {name} {y}", f"{d} {name} {y}", f"{name} {di}, {y}", f"{name} {di} {y}"]
        forms += [f"{d}-{name}-{y}", f"{di}-{name}-{y}"]
    return list(dict.fromkeys(forms))
