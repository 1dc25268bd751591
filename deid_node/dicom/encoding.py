"""Strict PS3.5 encoding check of a data set's bytes, before anything trusts them.

pydicom reads leniently, and what it reads is what the engine de-identifies: of two
elements with one tag it keeps the last, it stops a data set at a stray item delimiter,
it guesses implicit VR where a VR is not valid, it takes 8-bit bytes in any character
set. An identifier the engine never sees is one it never removes. So every object is
walked here element by element, on the raw bytes (pixel data is skipped, never read),
and refused unless its encoding has exactly one reading:

- element headers complete; every length inside its enclosing item or sequence;
- tags strictly ascending in every data set; no file meta or command group in the body;
  items and delimiters only where PS3.5 7.5 allows them;
- explicit VRs valid and agreeing with the dictionary (or UN; plain text VRs may stand
  for one another, PN, dates, times and UIDs may not); binary values a whole
  number of units; no more values than the dictionary's VM allows (binary, UID and the
  other ASCII VRs; free text often carries a stray backslash, which hides nothing);
- undefined lengths only on sequences and encapsulated pixel data;
- text: no NUL inside a UID or a code, nor in text in a two-byte encoding (UTF-16), no
  control characters
  but TAB, LF, FF and CR (PS3.5 6.1.3), bytes valid in the declared Specific Character
  Set, ISO 2022 escape sequences only for the declared terms and back to the initial set
  at the end of each value. 8-bit bytes with no character set declared are read as Latin-1, as
  pydicom and most toolkits read them (common in the field, and the engine and the
  output check see the same characters);
- sequences nested at most MAX_SEQUENCE_DEPTH deep; the four UIDs the layout needs
  present at the top level.

Three faults real archives hold have one sure reading, so they pass with a note in
`EncodingInfo.repairs` and are repaired before any engine reads the object (repair.py):
a NUL inside a text value or a name (read as a space: the whole value is text), a value or
an item of odd length (padded), an element present twice (the same bytes; or two texts,
kept as one element with both values, so each gets the attribute's action). Two different
copies of anything else (UIDs, numbers, codes, the patient ID, the character set) are
refused.

Error messages name a tag and a rule, never a value.
"""

from __future__ import annotations

import mmap
import re
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.uid import UID, ExplicitVRLittleEndian

from deid_node.dicom.elements import (
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    PIXEL_DATA,
    SEQ_DELIM,
    UNDEFINED,
    EncodingError,
    Syntax,
    guess_syntax,
    read_meta,
    skip_fragments,
    syntax_of,
    tag_name,
)

SPECIFIC_CHARSET = 0x00080005
_REQUIRED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
MAX_INFLATED_BYTES = 128 * 1024 * 1024  # a deflated body is checked in memory
MAX_SEQUENCE_DEPTH = 64  # deeper nesting is refused, here and by the engine


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UNIT = {"US": 2, "SS": 2, "OW": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "OF": 4, "OL": 4}
_UNIT |= {"FD": 8, "SV": 8, "UV": 8, "OD": 8, "OV": 8}
_COUNTED_BINARY = _words("US SS UL SL FL FD AT SV UV")  # VM = length / unit
_ASCII_VRS = _words("AE AS CS DA DS DT IS TM UI UR")
_CHARSET_VRS = _words("SH LO PN UC ST LT UT")
# Text VRs that writers mix up (an SH sent as LO) with no effect on what the engine does;
# PN, dates, times and UIDs are handled by their VR, so for them the VR must match.
_PLAIN_TEXT = _words("AE AS CS DS IS LO LT SH ST UC UR UT")
_SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})  # a backslash is just a character
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
# PS3.5 6.1.3 allows TAB, LF, FF and CR only in LT, ST and UT; writers put them in short
# strings too, and they hide nothing, so they are tolerated there. Other C0 controls are
# refused, and ESC unless the character set uses ISO 2022 code extensions.
_BAD_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_C1 = re.compile("[\x80-\x9f]")


@dataclass(frozen=True)
class EncodingInfo:
    """What the check learnt: the object's identity and transfer syntax (all UIDs, no PHI)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    # Faults with one sure reading, to be repaired before anything reads the object
    # (dicom/repair.py): one note each, naming a tag and the fault, never a value.
    repairs: tuple[str, ...] = ()


@lru_cache(maxsize=8192)
def _dictionary(tag: int) -> tuple[frozenset[str], int | None]:
    """The VRs the public dictionary allows for tag, and its largest VM (None: unbounded)."""
    if (tag >> 16) & 1:
        return frozenset(), None
    try:
        vrs = frozenset(v.strip() for v in dictionary_VR(tag).split(" or "))
        vm = dictionary_VM(tag)
    except KeyError:
        return frozenset(), None
    if not vm or "n" in vm:
        return vrs, None
    try:
        return vrs, int(vm.split("-")[-1])
    except ValueError:
        return vrs, None


# --------------------------------------------------------------------------------------------
# Character sets


# ISO 2022 escape sequences (PS3.3 C.12-3, C.12-4): bytes -> (G0 or G1, bytes per character,
# the Python codec that checks single-byte G1 characters).
_ESCAPES: dict[bytes, tuple[int, int, str]] = {
    b"\x1b(B": (0, 1, "ascii"),
    b"\x1b(J": (0, 1, "ascii"),  # JIS X 0201 Romaji: ASCII but for two glyphs
    b"\x1b$B": (0, 2, ""),
    b"\x1b$(D": (0, 2, ""),
    b"\x1b)I": (1, 1, "shift_jis"),
    b"\x1b$)C": (1, 2, ""),
    b"\x1b$)A": (1, 2, ""),
    b"\x1b-A": (1, 1, "latin_1"),
    b"\x1b-B": (1, 1, "iso8859_2"),
    b"\x1b-C": (1, 1, "iso8859_3"),
    b"\x1b-D": (1, 1, "iso8859_4"),
    b"\x1b-F": (1, 1, "iso8859_7"),
    b"\x1b-G": (1, 1, "iso8859_6"),
    b"\x1b-H": (1, 1, "iso8859_8"),
    b"\x1b-L": (1, 1, "iso8859_5"),
    b"\x1b-M": (1, 1, "iso8859_9"),
    b"\x1b-T": (1, 1, "iso8859_11"),
}
_ISO2022_TERMS: dict[str, tuple[bytes, ...]] = {
    "ISO 2022 IR 6": (b"\x1b(B",),
    "ISO 2022 IR 100": (b"\x1b-A",),
    "ISO 2022 IR 101": (b"\x1b-B",),
    "ISO 2022 IR 109": (b"\x1b-C",),
    "ISO 2022 IR 110": (b"\x1b-D",),
    "ISO 2022 IR 126": (b"\x1b-F",),
    "ISO 2022 IR 127": (b"\x1b-G",),
    "ISO 2022 IR 138": (b"\x1b-H",),
    "ISO 2022 IR 144": (b"\x1b-L",),
    "ISO 2022 IR 148": (b"\x1b-M",),
    "ISO 2022 IR 166": (b"\x1b-T",),
    "ISO 2022 IR 13": (b"\x1b)I", b"\x1b(J"),
    "ISO 2022 IR 87": (b"\x1b$B",),
    "ISO 2022 IR 159": (b"\x1b$(D",),
    "ISO 2022 IR 149": (b"\x1b$)C",),
    "ISO 2022 IR 58": (b"\x1b$)A",),
}


@lru_cache(maxsize=64)
def _g1_bytes(codec: str) -> frozenset[int]:
    """The 8-bit bytes that are characters of a single-byte G1 set."""
    ok = set()
    for b in range(0xA0, 0x100):
        try:
            if codec == "shift_jis":
                if 0xA1 <= b <= 0xDF:
                    ok.add(b)
            else:
                bytes([b]).decode(codec)
                ok.add(b)
        except UnicodeDecodeError:
            pass
    return frozenset(ok)


@dataclass(frozen=True)
class Charset:
    """A parsed Specific Character Set: a stand-alone codec or ISO 2022 code extensions."""

    codec: str | None  # stand-alone: the Python codec; None for the default repertoire
    escapes: frozenset[bytes] = frozenset()  # ISO 2022: the escape sequences allowed
    initial: tuple[int, int, str] | None = None  # ISO 2022: G1 designated at the start

    @property
    def extended(self) -> bool:
        """True when ISO 2022 code extensions (escape sequences) are in use."""
        return bool(self.escapes)

    def check(self, tag: int, data: bytes) -> None:
        """Raise EncodingError unless data is valid text in this character set."""
        if self.extended:
            self._iso2022(tag, data)
            return
        if self.codec is None or data.isascii():
            return  # the default repertoire: 8-bit bytes are read as Latin-1 (module doc)
        try:
            text = data.decode(self.codec)
        except (UnicodeDecodeError, LookupError):
            raise EncodingError(
                f"{tag_name(tag)}: bytes that are not valid in the declared character set"
            ) from None
        if _C1.search(text):
            raise EncodingError(f"{tag_name(tag)}: C1 control character in a text value")

    def _iso2022(self, tag: int, data: bytes) -> None:
        g0_width = 1
        g1 = self.initial
        i, n = 0, len(data)
        while i < n:
            b = data[i]
            if b == 0x1B:
                seq = data[i : i + 4] if data[i : i + 4] in self.escapes else data[i : i + 3]
                if seq not in self.escapes:
                    raise EncodingError(
                        f"{tag_name(tag)}: escape sequence "
                        "the declared character set does not allow"
                    )
                slot, width, codec = _ESCAPES[seq]
                if slot == 0:
                    g0_width = width
                else:
                    g1 = (slot, width, codec)
                i += len(seq)
            elif b < 0x80:
                if g0_width == 2:
                    if i + 1 >= n or not (0x21 <= b <= 0x7E and 0x21 <= data[i + 1] <= 0x7E):
                        raise EncodingError(f"{tag_name(tag)}: broken two-byte character")
                    i += 2
                else:
                    i += 1
            else:
                if g1 is None:
                    raise EncodingError(f"{tag_name(tag)}: 8-bit byte with no G1 character set")
                if g1[1] == 2:
                    if i + 1 >= n or not (0xA1 <= b <= 0xFE and 0xA1 <= data[i + 1] <= 0xFE):
                        raise EncodingError(f"{tag_name(tag)}: broken two-byte character")
                    i += 2
                else:
                    if b not in _g1_bytes(g1[2]):
                        raise EncodingError(
                            f"{tag_name(tag)}: bytes that are not valid "
                            "in the declared character set"
                        )
                    i += 1
        if g0_width != 1:
            raise EncodingError(
                f"{tag_name(tag)}: value ends without returning to the initial character set"
            )


DEFAULT_CHARSET = Charset(None)


@lru_cache(maxsize=256)
def parse_charset(raw: bytes) -> Charset:
    """Parse a Specific Character Set value; EncodingError for unknown or illegal terms."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise EncodingError("(0008,0005) SpecificCharacterSet: not ASCII") from None
    terms = [t.strip(" \0") for t in text.split("\\")]
    if len(terms) == 1:
        term = terms[0]
        if term in ("", "ISO_IR 6"):
            return DEFAULT_CHARSET
        if term in _ISO2022_TERMS:
            terms = ["", term] if term != "ISO 2022 IR 6" else [term]
        elif term.startswith("ISO 2022") or term not in python_encoding:
            raise EncodingError("(0008,0005) SpecificCharacterSet: unknown term")
        else:
            return Charset(python_encoding[term])
    escapes = set(_ISO2022_TERMS["ISO 2022 IR 6"])
    for i, term in enumerate(terms):
        if i == 0 and term == "":
            continue
        if term not in _ISO2022_TERMS:
            raise EncodingError(
                "(0008,0005) SpecificCharacterSet: only ISO 2022 terms can be combined"
            )
        escapes.update(_ISO2022_TERMS[term])
    initial = None
    first = _ISO2022_TERMS.get(terms[0], ())
    for seq in first:
        if _ESCAPES[seq][0] == 1:
            initial = _ESCAPES[seq]
    return Charset(None, frozenset(escapes), initial)


# --------------------------------------------------------------------------------------------
# The walk


class _EncodingChecker:
    def __init__(self, buf: bytes | mmap.mmap, encapsulated: bool) -> None:
        self.buf = buf
        self.encapsulated = encapsulated
        self.top: dict[int, str] = {}
        self.repairs: dict[str, None] = {}  # ordered, each note once

    def dataset(
        self,
        pos: int,
        end: int,
        depth: int,
        charset: Charset,
        syntax: Syntax,
        undefined: bool,
    ) -> int:
        """Walk one data set from pos; return where it ends (after its item delimiter)."""
        buf = self.buf
        read_header = syntax.read_header
        prev = prev_start = prev_end = -1
        prev_vr: str | None = None
        while pos < end:
            start = pos
            tag, vr, length, vpos = read_header(buf, pos, end)
            group = tag >> 16
            if group == 0xFFFE:
                if tag == ITEM_DELIM and undefined:
                    if length != 0:
                        raise EncodingError("item delimiter with a non-zero length")
                    return vpos
                raise EncodingError("an item or delimiter tag stands where an element belongs")
            twice = tag == prev
            if tag < prev or (twice and prev_end < 0):
                raise EncodingError(f"{tag_name(tag)} is repeated or out of ascending order")
            first = (prev_start, prev_end)
            prev, prev_end = tag, -1
            if group == 0x0002 or group == 0x0000:
                raise EncodingError(f"{tag_name(tag)}: a file meta or command element in the body")
            allowed, max_vm = _dictionary(tag)
            if (
                vr is not None
                and allowed
                and vr not in allowed
                and vr != "UN"
                and not (vr in _PLAIN_TEXT and allowed <= _PLAIN_TEXT)
            ):
                raise EncodingError(f"{tag_name(tag)}: VR {vr} where the dictionary has another")
            if length == UNDEFINED:
                pos = self._undefined(tag, vr, allowed, vpos, end, depth, charset, syntax)
                if twice:
                    self._twice(tag, first, (start, pos), None, None)
                prev_start, prev_end, prev_vr = start, pos, None
                continue
            if length & 1:
                self.repair(f"{tag_name(tag)}: odd value length, padded")
            vend = vpos + length
            if vend > end:
                raise EncodingError(f"truncated data set: {tag_name(tag)} ends past the data")
            if vr == "UN" and allowed:
                # UN is read by the dictionary VR, from implicit little endian bytes.
                eff = next(iter(allowed)) if len(allowed) == 1 else "UN"
                if eff == "SQ":
                    self.sequence(vpos, vend, True, depth + 1, charset, IMPLICIT_LE)
                    pos = vend
                    continue
            elif vr is None:
                eff = next(iter(allowed)) if len(allowed) == 1 else "UN"
            else:
                eff = vr
            if eff == "SQ":
                self.sequence(vpos, vend, True, depth + 1, charset, syntax)
            elif length:
                unit = min((_UNIT.get(v, 1) for v in allowed), default=1) if eff == "UN" else 0
                unit = unit or _UNIT.get(eff, 1)
                if length % unit:
                    raise EncodingError(f"{tag_name(tag)}: length not a whole number of values")
                count = 0
                if eff in _COUNTED_BINARY:
                    count = length // unit
                elif eff in _ASCII_VRS or eff in _CHARSET_VRS:
                    data = bytes(buf[vpos:vend])
                    count = self.text(tag, eff, data, charset)
                    if tag == SPECIFIC_CHARSET:
                        charset = parse_charset(data)
                    if depth == 0 and tag in _REQUIRED:
                        self.top[tag] = data.rstrip(b"\0 ").decode("ascii")
                if max_vm is not None and count > max_vm:
                    raise EncodingError(f"{tag_name(tag)}: more values than the dictionary allows")
            pos = vend
            if twice:
                self._twice(tag, first, (start, pos), prev_vr, eff)
            prev_start, prev_end, prev_vr = start, pos, eff
        if undefined:
            raise EncodingError("truncated data set: an item has no item delimiter")
        return pos

    def repair(self, note: str) -> None:
        """Record a fault with one sure reading (the object is repaired, not refused)."""
        self.repairs[note] = None

    def _twice(
        self,
        tag: int,
        first: tuple[int, int],
        second: tuple[int, int],
        first_vr: str | None,
        second_vr: str | None,
    ) -> None:
        """An element present twice: the same bytes, or two texts both can be read as
        (merged, so every value gets the element's action); anything else is refused."""
        buf = self.buf
        if buf[first[0] : first[1]] == buf[second[0] : second[1]]:
            self.repair(f"{tag_name(tag)}: present twice, the copies equal; one written")
        elif first_vr == second_vr and first_vr in MERGEABLE_VRS and tag not in _UNMERGED:
            self.repair(f"{tag_name(tag)}: present twice; both values kept in one element")
        else:
            raise EncodingError(f"{tag_name(tag)} is repeated with another value")

    def _undefined(
        self,
        tag: int,
        vr: str | None,
        allowed: frozenset[str],
        vpos: int,
        end: int,
        depth: int,
        charset: Charset,
        syntax: Syntax,
    ) -> int:
        if tag == PIXEL_DATA and (vr in (None, "OB", "OW")):
            if not self.encapsulated:
                raise EncodingError("undefined-length pixel data in a native transfer syntax")
            return skip_fragments(self.buf, vpos, end, syntax)
        if vr == "SQ" or (vr is None and "SQ" in allowed):
            return self.sequence(vpos, end, False, depth + 1, charset, syntax)
        if vr == "UN" or (vr is None and not allowed):
            # PS3.5 6.2.2: UN of undefined length is a sequence in implicit little endian.
            # pydicom reads an unknown implicit element so only when an item follows.
            if vr is None and (vpos + 8 > end or syntax.read_item(self.buf, vpos, end)[0] != ITEM):
                raise EncodingError(f"{tag_name(tag)}: undefined length on a non-sequence")
            inner = IMPLICIT_LE if vr == "UN" else syntax
            return self.sequence(vpos, end, False, depth + 1, charset, inner)
        raise EncodingError(f"{tag_name(tag)}: undefined length on a non-sequence")

    def sequence(
        self,
        pos: int,
        end: int,
        defined: bool,
        depth: int,
        charset: Charset,
        syntax: Syntax,
    ) -> int:
        """Walk the items of a sequence (its value starts at pos); return where it ends."""
        if depth > MAX_SEQUENCE_DEPTH:
            raise EncodingError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
        while True:
            if defined and pos == end:
                return pos
            if pos + 8 > end:
                raise EncodingError("truncated data set: a sequence ends inside an item header")
            tag, length = syntax.read_item(self.buf, pos, end)
            if tag == SEQ_DELIM and not defined:
                if length != 0:
                    raise EncodingError("sequence delimiter with a non-zero length")
                return pos + 8
            if tag != ITEM:
                raise EncodingError("a sequence holds something other than items")
            if length == UNDEFINED:
                pos = self.dataset(pos + 8, end, depth, charset, syntax, True)
                continue
            if length & 1:  # holds an odd-length value: repaired with it
                self.repair("an item of odd length, its length recomputed")
            item_end = pos + 8 + length
            if item_end > end:
                raise EncodingError("truncated data set: an item runs past its sequence")
            self.dataset(pos + 8, item_end, depth, charset, syntax, False)
            pos = item_end

    def text(self, tag: int, vr: str, data: bytes, charset: Charset) -> int:
        """Check one text value; return the number of values the VM rule counts."""
        if data[-1:] == b"\0":
            data = data[:-1]  # one NUL of padding (UI's own; some writers use it elsewhere)
        if b"\0" in data:
            if vr not in NUL_REPAIRED_VRS or _WIDE_TEXT.search(data):
                # A UID or a code with a NUL, or text in a two-byte encoding (UTF-16:
                # every other byte NUL, "N A M E" once the NULs are spaces): no sure reading.
                raise EncodingError(f"{tag_name(tag)}: NUL byte inside a text value")
            # A reader that stops at the NUL would hide the rest: the whole value is text.
            self.repair(f"{tag_name(tag)}: NUL inside a text value, read as a space")
            data = data.replace(b"\0", b" ")
        if vr in _ASCII_VRS:
            if not _PRINTABLE.fullmatch(data):
                raise EncodingError(f"{tag_name(tag)}: character outside the {vr} repertoire")
            return 1 if vr in _SINGLE_VALUED_TEXT else data.count(b"\\") + 1
        if _BAD_CONTROL.search(data) or (b"\x1b" in data and not charset.extended):
            raise EncodingError(f"{tag_name(tag)}: control character in a text value")
        charset.check(tag, data)
        # Free text (descriptions, names) often holds a backslash where VM 1 allows none:
        # pydicom reads a list, the engine handles lists, nothing hides. Not counted.
        return 1


_WIDE_TEXT = re.compile(rb"\x00[^\x00]\x00")
# Text VRs whose inner NULs become spaces (a UID or a code with a NUL has no sure reading).
NUL_REPAIRED_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
# Text VRs whose two differing copies are kept as one element with both values.
MERGEABLE_VRS = NUL_REPAIRED_VRS
# Elements whose value decides identity or decoding: two different copies are refused.
_UNMERGED = frozenset({0x00100020, SPECIFIC_CHARSET})


def _info(walker: _EncodingChecker, ts: str) -> EncodingInfo:
    for tag, keyword in _REQUIRED.items():
        if not walker.top.get(tag):
            raise EncodingError(f"data set lacks {keyword}")
    return EncodingInfo(
        sop_class_uid=walker.top[0x00080016],
        sop_instance_uid=walker.top[0x00080018],
        study_instance_uid=walker.top[0x0020000D],
        series_instance_uid=walker.top[0x0020000E],
        transfer_syntax_uid=ts,
        repairs=tuple(walker.repairs),
    )


def check_body(buf: bytes | mmap.mmap, start: int, transfer_syntax: str) -> EncodingInfo:
    """Check the data set encoded in buf[start:] in the given transfer syntax."""
    ts = UID(transfer_syntax)
    if ts.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(bytes(buf[start:]), MAX_INFLATED_BYTES)
        except zlib.error:
            raise EncodingError("deflated data set does not inflate") from None
        if inflater.unconsumed_tail:
            raise EncodingError(
                f"deflated data set inflates beyond {MAX_INFLATED_BYTES >> 20} MiB"
            ) from None
        inner = check_body(body, 0, str(ExplicitVRLittleEndian))
        return replace(inner, transfer_syntax_uid=str(ts))
    encapsulated = ts.is_transfer_syntax and ts.is_compressed
    if len(buf) <= start:
        raise EncodingError("empty data set")
    walker = _EncodingChecker(buf, encapsulated)
    walker.dataset(start, len(buf), 0, DEFAULT_CHARSET, syntax_of(ts), False)
    return _info(walker, str(ts))


def check_file(path: Path) -> EncodingInfo:
    """Check a Part-10 file (or a bare data set) without reading its pixel data."""
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise EncodingError("empty data set") from None
        with buf:
            start, ts = read_meta(buf)
            return check_body(buf, start, ts or guess_syntax(buf))


__all__ = ["Charset", "EncodingError", "EncodingInfo", "check_body", "check_file", "parse_charset"]
