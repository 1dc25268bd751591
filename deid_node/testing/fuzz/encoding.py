"""Raw data set encoding, little endian, explicit or implicit VR, with lengths that may lie."""

from __future__ import annotations

import struct
from typing import Final

from pydicom.datadict import tag_for_keyword

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

UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_DELIM: Final = 0xFFFEE00D
SEQ_DELIM: Final = 0xFFFEE0DD
LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
PIXEL_DATA: Final = 0x7FE00010
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


def _element_end(data: bytes, pos: int, explicit: bool) -> int:
    """Offset just past the element at `pos` of well-formed data (sequences skipped)."""
    tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from("<H", data, pos + 2)[
        0
    ]
    if explicit and tag not in (ITEM, ITEM_DELIM, SEQ_DELIM):
        vr = data[pos + 4 : pos + 6].decode("latin-1")
        if vr in LONG_VRS:
            length, start = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
    else:
        length, start = struct.unpack_from("<I", data, pos + 4)[0], pos + 8
    if length != UNDEFINED:
        return int(start + length)
    p = start  # undefined length: items up to the sequence delimiter
    while True:
        t = (struct.unpack_from("<H", data, p)[0] << 16) | struct.unpack_from("<H", data, p + 2)[0]
        if t == SEQ_DELIM:
            return p + 8
        if t != ITEM:
            raise ValueError(f"expected an item at {p}")
        ilen = struct.unpack_from("<I", data, p + 4)[0]
        if ilen != UNDEFINED:
            p += 8 + ilen
            continue
        p += 8
        while struct.unpack_from("<I", data, p)[0] != 0xE00DFFFE:  # item delimiter, LE
            p = _element_end(data, p, explicit)
        p += 8


def split_elements(data: bytes, explicit: bool) -> list[tuple[int, bytes]]:
    """Top-level (tag, encoded element) pairs of a well-formed dataset."""
    out, pos = [], 0
    while pos < len(data):
        end = _element_end(data, pos, explicit)
        tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from(
            "<H", data, pos + 2
        )[0]
        out.append((tag, data[pos:end]))
        pos = end
    return out
