"""Raw data element encoding (PS3.5 7.1, 7.5, A.4): the one place that reads element headers.

What a transfer syntax does to an element's bytes (implicit or explicit VR, byte order),
the VR codes and which of them have a 4-byte length, the item and delimiter tags, the
Part-10 file meta, and a bare data set's likely syntax. It knows no rules beyond what a
header needs to be read at all; the encoding check (encoding.py) applies those.

Headers are returned as plain tuples, not objects: the check reads every element of every
object received, and a tuple is what keeps it as fast as reading the header inline.
Errors name a tag and what is wrong, never a value.
"""

from __future__ import annotations

import mmap
import struct
from typing import TypeAlias

from pydicom.datadict import keyword_for_tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.errors import DeidError

Buffer: TypeAlias = bytes | bytearray | mmap.mmap
# (tag, VR or None, value length or UNDEFINED, value offset); the header length is
# value offset - position. VR None: implicit VR, or an item or delimiter (no VR in any syntax).
ElementHeader: TypeAlias = tuple[int, str | None, int, int]

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
_ITEM_GROUP = 0xFFFE

VRS = frozenset(  # PS3.5 Table 6.2-1
    {
        *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD"),
        *("OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI"),
        *("UL", "UN", "UR", "US", "UT", "UV"),
    }
)
# The VRs with two reserved bytes and a 4-byte length (PS3.5 Table 7.1-1)
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_SHORT_CODES = {vr.encode(): vr for vr in VRS - LONG_VRS}
_LONG_CODES = {vr.encode(): vr for vr in LONG_VRS}
VR_CODES = _SHORT_CODES | _LONG_CODES
_CUT_OFF = "truncated data set: an element header is cut off"


class EncodingError(DeidError):
    """The bytes of a data set do not have one unambiguous reading; the reason names no value."""


def tag_name(tag: int) -> str:
    """(gggg,eeee) and the keyword of a public tag, for error messages."""
    kw = keyword_for_tag(tag) if not (tag >> 16) & 1 else ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + kw if kw else ''}"


class Syntax:
    """How a transfer syntax encodes elements: implicit or explicit VR, little or big endian."""

    __slots__ = ("_head", "_item", "_u32", "implicit", "little")

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        endian = "<" if little else ">"
        self._head = struct.Struct(endian + ("HHL" if implicit else "HH2sH"))
        self._item = struct.Struct(endian + "HHL")
        self._u32 = struct.Struct(endian + "L")

    def __repr__(self) -> str:
        vr = "implicit" if self.implicit else "explicit"
        return f"Syntax({vr} VR {'little' if self.little else 'big'} endian)"

    def read_header(self, buf: Buffer, pos: int, end: int) -> ElementHeader:
        """The header of the element (or item, or delimiter) at pos; nothing read past end.

        EncodingError when the header is cut off by end or its explicit VR is not one.
        """
        if pos + 8 > end:
            raise EncodingError(_CUT_OFF)
        if self.implicit:
            group, elem, length = self._head.unpack_from(buf, pos)
            return group << 16 | elem, None, length, pos + 8
        group, elem, code, short = self._head.unpack_from(buf, pos)
        if group == _ITEM_GROUP:  # items and delimiters: tag and 4-byte length, no VR
            return group << 16 | elem, None, self._u32.unpack_from(buf, pos + 4)[0], pos + 8
        vr = _SHORT_CODES.get(code)
        if vr is not None:
            return group << 16 | elem, vr, short, pos + 8
        vr = _LONG_CODES.get(code)
        if vr is None:
            raise EncodingError(f"{tag_name(group << 16 | elem)}: invalid VR")
        if pos + 12 > end:
            raise EncodingError(_CUT_OFF)
        return group << 16 | elem, vr, self._u32.unpack_from(buf, pos + 8)[0], pos + 12

    def read_item(self, buf: Buffer, pos: int, end: int) -> tuple[int, int]:
        """(tag, length) of the item or delimiter header at pos, 8 bytes in every syntax."""
        if pos + 8 > end:
            raise EncodingError("truncated data set: an item header is cut off")
        group, elem, length = self._item.unpack_from(buf, pos)
        return group << 16 | elem, length


IMPLICIT_LE = Syntax(implicit=True, little=True)
EXPLICIT_LE = Syntax(implicit=False, little=True)
EXPLICIT_BE = Syntax(implicit=False, little=False)


def syntax_of(transfer_syntax: str) -> Syntax:
    """The element encoding of a transfer syntax (a deflated one: of its inflated body).

    A UID that is no transfer syntax reads as explicit VR little endian.
    """
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax or ts.is_deflated:
        return EXPLICIT_LE
    if ts.is_implicit_VR:
        return IMPLICIT_LE
    return EXPLICIT_LE if ts.is_little_endian else EXPLICIT_BE


def skip_fragments(buf: Buffer, pos: int, end: int, syntax: Syntax) -> int:
    """Skip the items of encapsulated pixel data from pos; return where its delimiter ends.

    Fragment values are never read, so the pages of a mapped file holding them stay unread.
    """
    while True:
        if pos + 8 > end:
            raise EncodingError("truncated pixel data: no sequence delimiter")
        tag, length = syntax.read_item(buf, pos, end)
        if tag == SEQ_DELIM:
            if length != 0:
                raise EncodingError("sequence delimiter with a non-zero length")
            return pos + 8
        if tag != ITEM or length == UNDEFINED:
            raise EncodingError("malformed encapsulated pixel data")
        pos += 8 + length
        if pos > end:
            raise EncodingError("truncated pixel data")


def element_end(buf: Buffer, pos: int, end: int, syntax: Syntax) -> int:
    """Where the element at pos ends, an undefined-length value walked to its delimiter.

    Only structure is checked (items, delimiters, lengths inside end), no rule; an
    undefined-length UN holds implicit VR little endian items (PS3.5 6.2.2).
    """
    tag, vr, length, vpos = syntax.read_header(buf, pos, end)
    if length != UNDEFINED:
        if vpos + length > end:
            raise EncodingError(f"truncated data set: {tag_name(tag)} ends past the data")
        return vpos + length
    # Iterative, so hostile nesting cannot exhaust the stack: (in a sequence?, syntax).
    open_values = [(True, IMPLICIT_LE if vr == "UN" else syntax)]
    pos = vpos
    while open_values:
        in_sequence, inner = open_values[-1]
        if in_sequence:
            tag, length = inner.read_item(buf, pos, end)
            pos += 8
            if tag == SEQ_DELIM:
                open_values.pop()
            elif tag != ITEM:
                raise EncodingError("a sequence holds something other than items")
            elif length == UNDEFINED:
                open_values.append((False, inner))
            else:
                pos += length
        else:
            tag, vr, length, vpos = inner.read_header(buf, pos, end)
            if tag == ITEM_DELIM:
                open_values.pop()
                pos = vpos
            elif tag >> 16 == _ITEM_GROUP:
                raise EncodingError("an item or delimiter tag stands where an element belongs")
            elif length == UNDEFINED:
                open_values.append((True, IMPLICIT_LE if vr == "UN" else inner))
                pos = vpos
            else:
                pos = vpos + length
        if pos > end:
            raise EncodingError("truncated data set: an item runs past its sequence")
    return pos


_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, length 4
_U32_LE = struct.Struct("<L")


def read_meta(buf: Buffer) -> tuple[int, str | None]:
    """(offset of the body, transfer syntax) of a Part-10 file; (0, None) without a header.

    The file meta is explicit VR little endian (PS3.10 7.1). EncodingError when it is cut
    off, holds an invalid VR or an undefined length, or lacks TransferSyntaxUID.
    """
    size = len(buf)
    if size < 132 or buf[128:132] != b"DICM":
        return 0, None
    pos, ts = 132, None
    meta_end = size
    if buf[132:140] == _GROUP_LENGTH and size >= 144:
        # The group length says where the meta ends: a group 0002 element after that is
        # in the body (where pydicom would still take it for meta) and is refused there.
        meta_end = 144 + _U32_LE.unpack_from(buf, 140)[0]
    while pos + 8 <= min(meta_end, size):
        if buf[pos : pos + 2] != b"\x02\x00":
            break  # the body begins, in a syntax of its own: read no VR here
        tag, _, length, vpos = EXPLICIT_LE.read_header(buf, pos, size)
        if length == UNDEFINED or vpos + length > size:
            raise EncodingError("truncated file meta information")
        if tag == 0x00020010:
            ts = bytes(buf[vpos : vpos + length]).rstrip(b"\0 ").decode("ascii", "replace")
        pos = vpos + length
    if not ts:
        raise EncodingError("file meta information lacks TransferSyntaxUID")
    return pos, ts


def guess_syntax(buf: Buffer) -> str:
    """The transfer syntax of a bare data set (no file meta), from its first element."""
    # Explicit if the first element has a valid VR; big endian if its group reads small
    # that way (groups start at 0x0008), as pydicom guesses too.
    explicit = bytes(buf[4:6]) in VR_CODES
    if explicit and buf[0] == 0 and buf[1] != 0:
        return str(ExplicitVRBigEndian)
    return str(ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian)


__all__ = [
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "ITEM",
    "ITEM_DELIM",
    "LONG_VRS",
    "PIXEL_DATA",
    "SEQ_DELIM",
    "UNDEFINED",
    "VRS",
    "VR_CODES",
    "Buffer",
    "ElementHeader",
    "EncodingError",
    "Syntax",
    "element_end",
    "guess_syntax",
    "read_meta",
    "skip_fragments",
    "syntax_of",
    "tag_name",
]
