"""Writing simple elements as pydicom's writer does, without its per-element machinery.

For what the stream engine writes most: the file meta that new_meta makes and plain ASCII
text. Each function returns None or False for anything else, which then goes to pydicom's
writer; tests/deid/test_stream_equivalence.py holds the bytes equal to pydicom's.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.multival import MultiValue

from deid_node.dicom.elements import Syntax

# What new_meta writes, as pydicom's writer pads it (PS3.5 6.2: UI with NUL, SH with space).
_META_VRS = {0x00020001: "OB", 0x00020002: "UI", 0x00020003: "UI", 0x00020010: "UI"}
_META_VRS |= {0x00020012: "UI", 0x00020013: "SH"}
_META_REQUIRED = frozenset(_META_VRS) - {0x00020013}


def encode_meta(meta: Dataset) -> bytes | None:
    """The file meta group, group length first; None if it is not the one new_meta makes."""
    # A group length is written anew (pydicom's writer adds one to the dataset it writes).
    tags = sorted(int(t) for t in meta.keys() if t != 0x00020000)  # noqa: SIM118
    if not set(tags) >= _META_REQUIRED or not set(tags) <= set(_META_VRS):
        return None
    body = bytearray()
    for tag in tags:
        elem = meta[tag]
        vr, value = _META_VRS[tag], elem.value
        if vr != elem.VR:
            return None
        if vr == "OB":
            if not isinstance(value, bytes) or not value:
                return None
            data = value + b"\0" * (len(value) & 1)
            body += struct.pack("<HH2s2xL", 2, tag & 0xFFFF, b"OB", len(data)) + data
            continue
        if not isinstance(value, str) or not value or not value.isascii():
            return None
        data = value.encode() + (b"\0" if vr == "UI" else b" ") * (len(value) & 1)
        body += struct.pack("<HH2sH", 2, tag & 0xFFFF, vr.encode(), len(data)) + data
    return struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + bytes(body)


# Text VRs whose ASCII values pydicom writes as the bytes of the text, joined with
# backslashes and padded to even length (UI with NUL); long VRs have a 4-byte length.
# Not PN (a decoded name writes its original bytes), DS and IS (numbers keep theirs).
_TEXT_PADDING = {vr: b" " for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "LO", "SH")}
_TEXT_PADDING |= {vr: b" " for vr in ("LT", "ST", "UC", "UT")} | {"UI": b"\0"}
_LONG_TEXT = frozenset({"UC", "UT"})
# Character sets in which ASCII text is its own encoding (absent: the default repertoire).
_ASCII_CHARSETS = frozenset({"iso8859", "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})


def write_text(
    out: DicomBytesIO, elem: DataElement | RawDataElement, charset: object, syntax: Syntax
) -> bool:
    """Write a plain ASCII text element as pydicom would; False to leave it to pydicom."""
    padding = _TEXT_PADDING.get(elem.VR or "")
    if (
        padding is None
        or not isinstance(elem, DataElement)
        or elem.is_undefined_length
        or not isinstance(charset, str)
        or charset not in _ASCII_CHARSETS
    ):
        return False
    value = elem.value
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, MultiValue | list) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return False
    if not text.isascii():
        return False
    data = text.encode() + padding * (len(text) & 1)
    if not syntax.implicit and elem.VR not in _LONG_TEXT and len(data) > 0xFFFF:
        return False  # pydicom writes it as UN
    endian = "<" if syntax.little else ">"
    tag = elem.tag
    if syntax.implicit:
        head = struct.pack(endian + "HHL", tag >> 16, tag & 0xFFFF, len(data))
    elif elem.VR in _LONG_TEXT:
        head = struct.pack(endian + "HH2s2xL", tag >> 16, tag & 0xFFFF, elem.VR.encode(), len(data))
    else:
        head = struct.pack(endian + "HH2sH", tag >> 16, tag & 0xFFFF, elem.VR.encode(), len(data))
    out.write(head + data)
    return True


__all__ = ["encode_meta", "write_text"]
