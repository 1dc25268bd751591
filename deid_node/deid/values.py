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


# Scripts written without spaces (ideographs, Hangul, kana): one character can be a
# whole family name (王, 홍, 洪).
EAST_ASIAN = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]"
)


def name_parts(value: object) -> list[str]:
    """The words of every component group of a PN value (alphabetic, ideographic,
    phonetic); one-character parts only in scripts where they are whole names."""
    parts: list[str] = []
    for v in values_of(value):
        for whole in re.split(r"[\^=\s,.]+", v):
            # A double name (Jens-Peter) is scrubbed whole and by its halves.
            for piece in {whole, *whole.split("-")} if "-" in whole else (whole,):
                if len(piece) >= MIN_SCRUB_LEN or (piece and EAST_ASIAN.match(piece)):
                    parts.append(piece)
    return parts


# What people and machines put between names they run together (or nothing).
JOINER = r"[ ._,^-]?"


def joined_names(value: object) -> list[tuple[str, str]]:
    """A person's names as pairs a text may hold run together, for `JOINER` between them:
    given and family either way round, initial and family either way round, each group
    (HAZELCOOK, COOK_HAZEL, H.COOK, 王小东). A family name with spaces also without them."""
    out: set[tuple[str, str]] = set()
    for v in values_of(value):
        for group in v.split("="):
            comps = [re.sub(r"[\s.,]+", " ", c).strip() for c in group.split("^")]
            family, given = (comps + ["", ""])[:2]
            if not family or not given:
                continue
            for fam in {family, family.replace(" ", "")}:
                for giv in {given, given.replace(" ", ""), given[0]}:
                    out.update({(giv, fam), (fam, giv)})
    return sorted(p for p in out if len(p[0]) + len(p[1]) >= 3)


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
