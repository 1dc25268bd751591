"""Raw data set encoding, little endian, explicit or implicit VR, with lengths that may lie.

Writing only: reading an element goes through the node's own parser (dicom/elements.py).
"""

from __future__ import annotations

import struct
from typing import Final

from pydicom.datadict import tag_for_keyword

from deid_node.dicom.elements import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    LONG_VRS,
    PIXEL_DATA,
    SEQ_DELIM,
    UNDEFINED,
    element_end,
)

__all__ = [
    "ITEM",
    "ITEM_DELIM",
    "LONG_VRS",
    "PIXEL_DATA",
    "REQUIRED_UIDS",
    "SEQ_DELIM",
    "SOP_CLASS_UID",
    "SOP_INSTANCE_UID",
    "SPECIFIC_CHARSET",
    "UNDEFINED",
    "delimiter",
    "element",
    "item",
    "kw",
    "sequence",
    "split_elements",
    "tag_bytes",
    "text",
    "uid_value",
]

SPECIFIC_CHARSET: Final = 0x00080005
SOP_CLASS_UID: Final = 0x00080016
SOP_INSTANCE_UID: Final = 0x00080018
REQUIRED_UIDS: Final = (SOP_CLASS_UID, SOP_INSTANCE_UID, 0x0020000D, 0x0020000E)


def kw(keyword: str) -> int:
    """The tag of a DICOM keyword (fails loudly on a typo)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


def tag_bytes(tag: int) -> bytes:
    """A tag as its four bytes: group, then element."""
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def element(tag: int, vr: str, value: bytes, *, explicit: bool, length: int | None = None) -> bytes:
    """One encoded element; `length` overrides the declared length (the point of fuzzing)."""
    declared = len(value) if length is None else length
    if not explicit:
        return tag_bytes(tag) + struct.pack("<I", declared) + value
    if vr in LONG_VRS:
        return tag_bytes(tag) + vr.encode() + b"\0\0" + struct.pack("<I", declared) + value
    if declared > 0xFFFF:
        raise ValueError(f"{vr} cannot declare {declared} bytes in explicit VR")
    return tag_bytes(tag) + vr.encode() + struct.pack("<H", declared) + value


def item(content: bytes, *, defined: bool = True, length: int | None = None) -> bytes:
    """A sequence item, defined length or closed by an item delimiter."""
    if defined:
        declared = len(content) if length is None else length
        return tag_bytes(ITEM) + struct.pack("<I", declared) + content
    return tag_bytes(ITEM) + struct.pack("<I", UNDEFINED) + content + delimiter(ITEM_DELIM)


def delimiter(tag: int) -> bytes:
    """An item or sequence delimitation item (zero length)."""
    return tag_bytes(tag) + b"\0\0\0\0"


def sequence(tag: int, items: list[bytes], *, explicit: bool, defined: bool) -> bytes:
    """An SQ element holding already-encoded items."""
    body = b"".join(items)
    if defined:
        return element(tag, "SQ", body, explicit=explicit)
    return element(tag, "SQ", body, explicit=explicit, length=UNDEFINED) + delimiter(SEQ_DELIM)


def text(value: str | bytes, pad: bytes = b" ") -> bytes:
    """A text value padded to even length (Latin-1 for str)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return raw + pad if len(raw) % 2 else raw


def uid_value(value: str) -> bytes:
    """A UI value, NUL-padded to even length."""
    return text(value, b"\0")


def split_elements(data: bytes, explicit: bool) -> list[tuple[int, bytes]]:
    """Top-level (tag, encoded element) pairs of a well-formed dataset (the node's parser)."""
    syntax = EXPLICIT_LE if explicit else IMPLICIT_LE
    out, pos = [], 0
    while pos < len(data):
        end = element_end(data, pos, len(data), syntax)
        out.append((syntax.read_header(data, pos, len(data))[0], data[pos:end]))
        pos = end
    return out
