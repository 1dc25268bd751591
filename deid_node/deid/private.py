"""Kept private values: a safe-listed element keeps its value only when it has the kind
the list gives it.

A private element is safe by its creator and element number, not by what a sender put in
it: a scanner description may hold a technologist's name, a number field a name typed
into it. So the listed VR (data/safe_private.csv, else the VR the element arrived with)
decides what the value must look like: numbers stay numbers, codes stay codes, UIDs and
dates keep their shape, free text is cleaned like any kept free text. A value of another
kind, of an unknown kind (UN with no listed VR), or a person name is removed.
"""

from __future__ import annotations

import re
from enum import Enum

from pydicom.charset import decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from deid_node.deid.profiles import TEXT_VRS
from deid_node.deid.values import values_of
from deid_node.dicom.pydicom_compat import character_set


class Kind(Enum):
    """What a kept private value may be."""

    TEXT = "text"  # cleaned like kept free text
    SHAPED = "shaped"  # strings of a fixed shape: checked, kept as sent
    BINARY = "binary"  # numbers and bytes: kept as sent
    NONE = "none"  # removed


_BINARY = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
_BINARY |= {"OB", "OW", "OF", "OD", "OL", "OV"}
_UNIT = {"US": 2, "SS": 2, "OW": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "OF": 4, "OL": 4}
_UNIT |= {"FD": 8, "SV": 8, "UV": 8, "OD": 8, "OV": 8}
# One value of each shaped VR, stripped of its padding.
_SHAPES: dict[str, re.Pattern[str]] = {
    "DS": re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"),
    "IS": re.compile(r"[+-]?\d{1,12}"),
    "CS": re.compile(r"[A-Z0-9_ ]{0,16}"),
    "UI": re.compile(r"[0-9.]{0,64}"),
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2,6}(?:\.\d{1,6})?"),
    "DT": re.compile(r"\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?"),
    "AS": re.compile(r"\d{3}[DWMY]"),
}


def listed_kinds(listed: str) -> frozenset[str]:
    """The VRs of a safe-list row's `vr` cell ("" or UN: none known)."""
    return frozenset(v.strip() for v in listed.split(" or ") if v.strip() not in ("", "UN"))


def kind_for(sent_vr: str, listed: frozenset[str]) -> tuple[Kind, str]:
    """The kind a kept value must have, and the VR it is read as.

    `sent_vr` is the VR the element arrived with ("UN" for implicit or unknown), `listed`
    the VRs the safe list gives it. A sent VR the list does not give is trusted only among
    text VRs (an SH sent as LO); otherwise the value is of no known kind.
    """
    vrs = listed or (frozenset({sent_vr}) if sent_vr != "UN" else frozenset())
    if sent_vr != "UN" and sent_vr not in vrs:
        shaped = vrs & _SHAPES.keys()
        if sent_vr in TEXT_VRS and vrs & TEXT_VRS:
            vrs = frozenset({sent_vr})
        elif sent_vr in TEXT_VRS and len(shaped) == 1:
            return Kind.SHAPED, next(iter(shaped))  # "2.5" sent as LO where DS is listed
        else:
            return Kind.NONE, sent_vr
    if len(vrs) != 1:
        # Several listed kinds and nothing to choose by (UN): only all-binary is safe.
        if sent_vr == "UN" and vrs and vrs <= _BINARY:
            return Kind.BINARY, "UN"
        shaped = vrs & _SHAPES.keys()
        if sent_vr == "UN" and len(shaped) == 1:
            return Kind.SHAPED, next(iter(shaped))  # "DS or OB": kept if it reads as DS
        if sent_vr in vrs:
            vrs = frozenset({sent_vr})
        else:
            return Kind.NONE, sent_vr
    (vr,) = vrs
    if vr in TEXT_VRS:
        return Kind.TEXT, vr
    if vr in _SHAPES:
        return Kind.SHAPED, vr
    if vr in _BINARY:
        return Kind.BINARY, vr
    return Kind.NONE, vr  # PN, AE, UR, SQ sent as UN, unknown: nothing to check it by


def has_shape(vr: str, values: list[str]) -> bool:
    """Whether every value (padding stripped) has the shape of a shaped VR."""
    shape = _SHAPES[vr]
    return all(shape.fullmatch(v.strip(" \0")) or not v.strip(" \0") for v in values)


def whole_units(vr: str, length: int) -> bool:
    """Whether a binary value of this length is a whole number of the VR's units."""
    return length % _UNIT.get(vr, 1) == 0


def sent_vr(ds: Dataset, t: int) -> str:
    """The VR an element arrived with: "UN" if implicit or unknown."""
    elem = ds.get_item(t)
    vr = elem.VR if isinstance(elem, RawDataElement | DataElement) else None
    return str(vr) if vr and " or " not in vr else "UN"


def strings_of(ds: Dataset, t: int) -> list[str] | None:
    """The values of a text element as sent, decoded in the object's character set; None
    if the bytes are no text there."""
    raw = ds.get_item(t).value
    if raw is None:
        return []
    if not isinstance(raw, bytes):
        return values_of(str(raw) if isinstance(raw, PersonName) else raw)
    charset = character_set(ds)
    try:
        text = decode_bytes(raw, [charset] if isinstance(charset, str) else list(charset), set())
    except Exception:  # bytes the character set cannot read: no text to trust
        return None
    if any(c < " " and c not in "\t\n\r\f" for c in text.rstrip("\0 ")):
        return None  # binary, not text
    return text.rstrip("\0 ").split("\\")
