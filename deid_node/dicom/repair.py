"""Repair what the encoding check found has one sure reading, before anything reads it.

Real archives hold objects with a NUL inside a text value, a value of odd length, or an
element written twice. Refusing them withholds clean data; reading them as pydicom does
(the last copy wins, a NUL may end the text for another reader) could hide an identifier.
So the check (encoding.py) lets exactly these through with a note, and this module writes
the object again so that every reader sees one thing:

- a NUL inside a text value becomes a space: the whole value is text, and is cleaned
  (`text_tags`: the engine cleans these attributes as free text even where it keeps text);
- an odd-length value is padded (a space for text, NUL for UIDs and binary values);
- an element present twice is written once: one copy if the two are equal, else one
  element holding the values of both (texts only), so each value gets the action of the
  attribute.

Lengths of sequences and items that hold a repaired element are recomputed; everything
else (pixel data above all) is copied as it was. The result is checked again and must pass
without a note, or the object is refused.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID, ExplicitVRLittleEndian

from deid_node.dicom.elements import (
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    LONG_VRS,
    PIXEL_DATA,
    SEQ_DELIM,
    UNDEFINED,
    Buffer,
    EncodingError,
    Syntax,
    guess_syntax,
    read_meta,
    skip_fragments,
    syntax_of,
)
from deid_node.dicom.encoding import MERGEABLE_VRS, NUL_REPAIRED_VRS, check_body

_MULTI_VALUED = frozenset({"SH", "LO", "UC", "PN"})  # a backslash separates values
_TEXT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UR"}) | NUL_REPAIRED_VRS


@dataclass(frozen=True)
class Repaired:
    """A repaired Part-10 file in memory, what was done, and the attributes to clean."""

    data: bytes
    notes: tuple[str, ...]
    text_tags: frozenset[int]  # tags that held a NUL inside a text value, at any depth


def repair_file(path: Path, notes: tuple[str, ...]) -> Repaired:
    """The file at path rewritten without the faults the check noted (`notes`).

    EncodingError if the result does not pass the check cleanly.
    """
    data = path.read_bytes()
    start, ts_text = read_meta(data)
    ts = ts_text or guess_syntax(data)
    deflated = UID(ts).is_deflated
    body = zlib.decompress(data[start:], -zlib.MAX_WBITS) if deflated else data[start:]
    writer = _Rewriter(body, UID(ts).is_transfer_syntax and UID(ts).is_compressed)
    fixed, _ = writer.dataset(0, len(body), syntax_of(ts), undefined=False)
    # The check reads the repaired body as the engines will: it must pass with no note.
    left = check_body(fixed, 0, str(ExplicitVRLittleEndian) if deflated else ts).repairs
    if left:
        raise EncodingError(f"repair left a fault: {left[0]}")
    if deflated:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        fixed = packer.compress(fixed) + packer.flush()
    return Repaired(bytes(data[:start]) + fixed, notes, frozenset(writer.text_tags))


def _vr_of(tag: int, vr: str | None) -> str:
    if vr and vr != "UN":
        return vr
    try:
        found = dictionary_VR(tag).split(" or ")
    except KeyError:
        return vr or "UN"
    return found[0] if len(found) == 1 else (vr or "UN")


def _header(tag: int, vr: str | None, length: int, syntax: Syntax) -> bytes:
    end = "<" if syntax.little else ">"
    if syntax.implicit or vr is None:
        return struct.pack(end + "HHL", tag >> 16, tag & 0xFFFF, length)
    if vr in LONG_VRS:
        return struct.pack(end + "HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), length)
    return struct.pack(end + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


class _Rewriter:
    def __init__(self, buf: Buffer, encapsulated: bool) -> None:
        self.buf = buf
        self.encapsulated = encapsulated
        self.text_tags: set[int] = set()

    def dataset(self, pos: int, end: int, syntax: Syntax, *, undefined: bool) -> tuple[bytes, int]:
        """(the data set from pos rewritten, where it ended: after its item delimiter)."""
        buf = self.buf
        out = bytearray()
        last: tuple[int, str, bytes, int] | None = None  # tag, VR, value, offset in out
        while pos < end:
            tag, vr, length, vpos = syntax.read_header(buf, pos, end)
            if tag == ITEM_DELIM and undefined:
                out += buf[pos:vpos]
                return bytes(out), vpos
            eff = _vr_of(tag, vr)
            if length == UNDEFINED:
                if tag == PIXEL_DATA and self.encapsulated and vr in (None, "OB", "OW"):
                    stop = skip_fragments(buf, vpos, end, syntax)
                    element, value = bytes(buf[pos:stop]), b""
                else:
                    inner = IMPLICIT_LE if vr == "UN" else syntax
                    items, stop = self.sequence(vpos, end, inner, defined=False)
                    element, value = bytes(buf[pos:vpos]) + items, b""
                pos = stop
            else:
                stop = vpos + length
                if eff == "SQ" or (vr == "UN" and _vr_of(tag, None) == "SQ"):
                    inner = IMPLICIT_LE if vr == "UN" else syntax
                    value, _ = self.sequence(vpos, stop, inner, defined=True)
                else:
                    value = self.value(tag, eff, bytes(buf[vpos:stop]))
                element = _header(tag, vr, len(value), syntax) + value
                pos = stop
            if last is not None and last[0] == tag:
                if bytes(out[last[3] :]) == element:
                    continue  # the same element twice: written once
                value = _merged(eff, last[2], value)
                element = _header(tag, vr, len(value), syntax) + value
                del out[last[3] :]
            last = (tag, eff, value, len(out))
            out += element
        if undefined:
            raise EncodingError("truncated data set: an item has no item delimiter")
        return bytes(out), pos

    def sequence(self, pos: int, end: int, syntax: Syntax, *, defined: bool) -> tuple[bytes, int]:
        """(the items from pos rewritten, with their delimiters; where the value ended)."""
        out = bytearray()
        while True:
            if defined and pos == end:
                return bytes(out), pos
            tag, length = syntax.read_item(self.buf, pos, end)
            if tag == SEQ_DELIM and not defined:
                out += self.buf[pos : pos + 8]
                return bytes(out), pos + 8
            if tag != ITEM:
                raise EncodingError("a sequence holds something other than items")
            if length == UNDEFINED:
                content, pos = self.dataset(pos + 8, end, syntax, undefined=True)
                out += _item_header(UNDEFINED, syntax) + content  # its delimiter included
            else:
                content, _ = self.dataset(pos + 8, pos + 8 + length, syntax, undefined=False)
                out += _item_header(len(content), syntax) + content
                pos += 8 + length

    def value(self, tag: int, vr: str, value: bytes) -> bytes:
        """One value with an inner NUL made a space and an odd length padded."""
        if vr in NUL_REPAIRED_VRS:
            core = value[:-1] if value.endswith(b"\0") else value  # one NUL of padding
            if b"\0" in core:
                value = core.replace(b"\0", b" ")
                self.text_tags.add(tag)
        if len(value) & 1:
            value += b" " if vr in _TEXT else b"\0"
        return value


def _item_header(length: int, syntax: Syntax) -> bytes:
    return struct.pack(("<" if syntax.little else ">") + "HHL", 0xFFFE, 0xE000, length)


def _merged(vr: str, first: bytes, second: bytes) -> bytes:
    """Two differing values of one text element as one (the check allowed only these)."""
    if vr not in MERGEABLE_VRS:
        raise EncodingError("an element present twice cannot be merged")
    joiner = b"\\" if vr in _MULTI_VALUED else b"\r\n"
    value = first.rstrip(b" \0") + joiner + second.rstrip(b" \0")
    return value + b" " if len(value) & 1 else value
