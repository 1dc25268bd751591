"""De-identify on the element stream: untouched elements are copied as bytes.

The top level of the body is read with the one raw parser (dicom/elements). Each element
is sorted by the profile's decision for its tag (decisions.py) before anything is decoded:

- dropped: the profile removes it whatever its value (and group lengths, stray meta);
- copied: the operation leaves every value unchanged (binary, numbers, class UIDs, codes);
- cleanable: kept free text, changed only if the scrubber matches it. Once the identifying
  values are known these are copied too unless their bytes may match;
- everything else (identifiers, names, dates, instance UIDs, sequences, private blocks
  under safe-private, what identity and burned-in checks read) is decoded with pydicom
  and goes through the dataset engine unchanged in behaviour, then is encoded with
  pydicom's element writer in the object's own transfer syntax.

The outputs merge in tag order. Pixel data stays on disk and is copied in-kernel, between
the header and the re-encoded elements that follow it. Whatever this module does not
handle raises `StreamUnsupported`, and the caller uses the dataset engine for the whole
object: deflated bodies, bare data sets, a second pixel element, a changed character set.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID

from deid_node.deid.burned_in import looks_at_pixels
from deid_node.deid.dataset import DeidResult, deidentify_dataset
from deid_node.deid.decisions import (
    COLLECTED_VRS,
    ID_TAGS,
    dictionary_vr,
    is_cleanable,
    leaves_unchanged,
    op_table,
)
from deid_node.deid.profiles import CompiledProfile, Op
from deid_node.dicom.element_writer import encode_meta, write_text
from deid_node.dicom.elements import UNDEFINED, Syntax, element_end, read_meta, syntax_of
from deid_node.dicom.part10 import check_pixel_length
from deid_node.dicom.pydicom_compat import character_set, element_dict, read_file_meta
from deid_node.durable import FileRange
from deid_node.errors import DeidError

_TAIL_START = 0x7FE00008  # float/double pixel data, pixel data and what follows them
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
# Read by the identity, UID, burned-in and pixel-length checks, and the character set
# every text value is decoded in: always decoded, whatever the profile does to them.
_DECODED = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080008,  # ImageType: whether the pixels are looked at (burned_in.py)
        0x00080016,  # SOPClassUID
        0x00080018,  # SOPInstanceUID
        0x00080060,  # Modality
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100030,  # PatientBirthDate
        0x0020000D,  # StudyInstanceUID
        0x0020000E,  # SeriesInstanceUID
        0x00280002,  # SamplesPerPixel
        0x00280004,  # PhotometricInterpretation
        0x00280008,  # NumberOfFrames
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
        0x00280101,  # BitsStored: bits outside it are cleared (dicom/pixel_bits.py)
        0x00280102,  # HighBit
        0x00280103,  # PixelRepresentation: context for ambiguous VRs
        0x00280301,  # BurnedInAnnotation
    }
)
_PREAMBLE = b"\x00" * 128 + b"DICM"


class StreamUnsupported(Exception):  # a signal to fall back, not an error
    """This object needs the dataset engine; nothing has been written."""


class StreamRefused(DeidError):
    """The dataset engine refused the object; with what the outcome may say of it."""

    def __init__(self, reason: str, sop_class_uid: str | None, transfer_syntax_uid: str) -> None:
        super().__init__(reason)
        self.sop_class_uid = sop_class_uid
        self.transfer_syntax_uid = transfer_syntax_uid


@dataclass(frozen=True)
class StreamOutput:
    """The de-identified header (file meta and body before the pixel data) and the pixels."""

    result: DeidResult
    header: bytes
    pixels: FileRange | None
    trailer: bytes  # elements after the pixel data
    syntax: Syntax
    copied: list[tuple[int, int, int]]  # (tag, start, end) in header of elements copied
    cleaned: frozenset[int]  # copied text the dataset engine would have decoded
    copied_after: list[tuple[int, int, int]]  # (tag, start, end) in trailer, copied

    def written_dataset(self) -> Dataset:
        """The encoded elements as the dataset engine holds them, for `locate_survivor`.

        The engine's own elements, and the copied ones undecoded (as that engine leaves
        the elements it does not touch) except the text it would have decoded to clean.
        """
        data = b"".join(self.header[s:e] for _, s, e in self.copied)
        data += b"".join(self.trailer[s:e] for _, s, e in self.copied_after)
        copied = read_dataset(BytesIO(data), self.syntax.implicit, self.syntax.little)
        ds = Dataset()
        ds.file_meta = self.result.dataset.file_meta
        ds.set_original_encoding(self.syntax.implicit, self.syntax.little)
        element_dict(ds).update(element_dict(copied))
        element_dict(ds).update(element_dict(self.result.dataset))
        for tag in self.cleaned:
            if tag not in element_dict(self.result.dataset):
                ds[tag]  # decoded, as cleaning it did
        return ds


@dataclass
class _Sorted:
    """The body's top-level elements by what the profile does to them: (tag, start, end)."""

    copied: list[tuple[int, int, int]]
    cleanable: list[tuple[int, int, int, int]]  # with the value offset
    decoded: list[tuple[int, int, int]]
    pixels: tuple[int, int, int, int] | None = None  # tag, start, end, value length
    overlays: bool = False  # a 60xx overlay group is present (burned_in.py may look)


def _sort(buf: mmap.mmap, pos: int, syntax: Syntax, profile: CompiledProfile) -> _Sorted:
    """Sort the top-level elements before the pixel data by the profile's decisions."""
    table = op_table(profile)
    out = _Sorted([], [], [])
    privates: list[tuple[int, int, int]] = []
    end = len(buf)
    while pos < end:
        tag, vr, length, vpos = syntax.read_header(buf, pos, end)
        stop = element_end(buf, pos, end, syntax)
        if tag >= _TAIL_START and out.pixels is None:
            # The pixel data stays on disk: only if nothing can change it, and only one.
            op = table.op(tag, False)
            if tag not in _PIXEL_TAGS or not leaves_unchanged(op, dictionary_vr(tag)):
                raise StreamUnsupported
            out.pixels, pos = (tag, pos, stop, length), stop
            continue
        if tag in _PIXEL_TAGS:
            raise StreamUnsupported  # a second pixel data element
        # pydicom gives an explicit UN its dictionary VR (even unread, when empty), and
        # writes it so: only the dataset engine knows which, so it gets them all.
        as_un = vr == "UN"
        if not vr or as_un:  # implicit VR or unknown: what the dataset engine reads
            vr = dictionary_vr(tag) or vr or "UN"
        group, start, pos = tag >> 16, pos, stop
        out.overlays |= 0x6000 <= group <= 0x601E
        if group & 1:
            privates.append((tag, start, stop))
        elif (tag & 0xFFFF) == 0 or group == 0x0002:
            continue  # group lengths go stale; file meta never belongs in a body
        elif as_un or tag in _DECODED or tag in ID_TAGS or vr in COLLECTED_VRS:
            out.decoded.append((tag, start, stop))
        else:
            op = table.op(tag, False)
            if leaves_unchanged(op, vr):
                out.copied.append((tag, start, stop))
            elif is_cleanable(op, vr):
                out.cleanable.append((tag, start, vpos, stop))
            elif op is not Op.REMOVE:
                out.decoded.append((tag, start, stop))
    # A private element survives only by being safe or kept verbatim, which needs its
    # creator's value: all of them go to the dataset engine, or none can survive.
    verbatim = profile.verbatim
    if privates and (profile.keep_safe_private or any(t in verbatim for t, _, _ in privates)):
        out.decoded = sorted(out.decoded + privates)
    return out


def _may_match(scrub: re.Pattern[str] | None, raw: bytes) -> bool:
    """Whether the scrubber may change a text value with these bytes."""
    if scrub is None:
        return False
    if not raw.isascii() or b"\x1b" in raw:
        return True  # decoding depends on the character set: let pydicom do it
    # Values split at backslashes keep their boundaries in the joined text (a backslash
    # is no word character), so no match here means no match in any value.
    return scrub.search(raw.decode("ascii")) is not None


def deidentify_file(path: Path, profile: CompiledProfile, key: bytes) -> StreamOutput:
    """De-identify a Part-10 file that passed the encoding check (not yet verified).

    StreamRefused where the dataset engine refuses the object; StreamUnsupported if the
    object needs the dataset engine (which then reads it again from the start).
    """
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _deidentify(buf, path, profile, key)


class _Prepared:
    """What was read of one object before the dataset engine runs."""

    def __init__(self, buf: mmap.mmap, path: Path, profile: CompiledProfile) -> None:
        body, ts_text = read_meta(buf)
        if ts_text is None:
            raise StreamUnsupported  # a bare data set
        self.ts = ts = UID(ts_text)
        if ts.is_deflated or not ts.is_transfer_syntax:
            raise StreamUnsupported  # one zlib stream: no element to copy
        self.syntax = syntax_of(ts)
        self.parts = _sort(buf, body, self.syntax, profile)
        self.pixels: FileRange | None = None
        self.pixel_tag = 0xFFFFFFFF  # elements above it are written after the pixel data
        length = UNDEFINED
        if self.parts.pixels is not None:
            self.pixel_tag, start, stop, length = self.parts.pixels
            self.pixels = FileRange(path, start, stop - start)
        self.ds = _decode(buf, self.parts, self.syntax, body)
        if self.pixels is not None and length != UNDEFINED:
            try:
                check_pixel_length(self.ds, length, ts)
            except DeidError:
                raise StreamUnsupported from None  # the dataset engine says why


def _deidentify(buf: mmap.mmap, path: Path, profile: CompiledProfile, key: bytes) -> StreamOutput:
    try:
        prep = _Prepared(buf, path, profile)
    except StreamUnsupported:
        raise
    except Exception:  # the checked encoding has a reading pydicom must make: let it
        raise StreamUnsupported from None
    ds, taken = prep.ds, []
    if looks_at_pixels(profile.config, ds, prep.pixels is not None):
        raise StreamUnsupported  # pixel cleaning matches rules on the whole header
    if prep.parts.overlays and prep.ts.is_compressed:
        raise StreamUnsupported  # an overlay may be kept in the compressed words

    def take_back(scrub: re.Pattern[str] | None) -> None:
        for tag, start, vpos, stop in prep.parts.cleanable:
            if not _may_match(scrub, bytes(buf[vpos:stop])):
                del ds[tag]
                taken.append((tag, start, stop))

    try:
        result = deidentify_dataset(
            ds, profile, key, has_pixels=True if prep.pixels else None, after_collect=take_back
        )
    except DeidError as exc:
        sop_class = str(ds.get("SOPClassUID", "") or "") or None
        raise StreamRefused(str(exc), sop_class, str(prep.ts)) from None
    if ds.original_character_set != character_set(ds):
        raise StreamUnsupported  # pydicom would re-encode every element: so would we
    try:
        copied = sorted(prep.parts.copied + taken)
        header, trailer, spans, after = _encode(
            buf, result.dataset, copied, prep.syntax, prep.pixel_tag
        )
    except Exception:
        raise StreamUnsupported from None  # the dataset engine says why
    cleaned = frozenset(t for t, _, _ in taken)
    return StreamOutput(result, header, prep.pixels, trailer, prep.syntax, spans, cleaned, after)


def _decode(buf: mmap.mmap, parts: _Sorted, syntax: Syntax, body: int) -> Dataset:
    """The elements the dataset engine must see, as a pydicom Dataset with the file meta."""
    spans = sorted([*parts.decoded, *((t, s, e) for t, s, _, e in parts.cleanable)])
    data = b"".join(buf[s:e] for _, s, e in spans)
    ds = read_dataset(BytesIO(data), syntax.implicit, syntax.little)
    meta = BytesIO(buf[132:body])
    ds.file_meta = read_file_meta(meta)
    return ds


def _encode(
    buf: mmap.mmap,
    ds: Dataset,
    copied: list[tuple[int, int, int]],
    syntax: Syntax,
    pixel_tag: int,
) -> tuple[bytes, bytes, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(header, trailer, where each copied element went in the header, and in the trailer).

    The header is the file meta and the body up to the pixel data, the trailer what
    follows the pixel data: the dataset engine's elements merged with copied bytes.
    """
    out = DicomBytesIO()
    out.write(_PREAMBLE)
    meta = ds.file_meta
    raw_meta = encode_meta(meta)
    if raw_meta is not None:
        out.write(raw_meta)
    else:
        validate_file_meta(meta, enforce_standard=True)
        write_file_meta_info(out, meta, enforce_standard=True)
    out.is_implicit_VR, out.is_little_endian = syntax.implicit, syntax.little
    # keys(), not the dataset: iterating a Dataset decodes every element
    written = sorted(int(t) for t in ds.keys() if not (t.element == 0 and t.group > 6))  # noqa: SIM118
    spans: list[tuple[int, int, int]] = []
    ahead = [t for t in written if t < pixel_tag]
    _merge(out, buf, ds, ahead, [c for c in copied if c[0] < pixel_tag], syntax, spans)
    trailer = DicomBytesIO()
    trailer.is_implicit_VR, trailer.is_little_endian = syntax.implicit, syntax.little
    after = [t for t in written if t > pixel_tag]
    spans_after: list[tuple[int, int, int]] = []
    _merge(trailer, buf, ds, after, [c for c in copied if c[0] > pixel_tag], syntax, spans_after)
    return out.getvalue(), trailer.getvalue(), spans, spans_after


def _merge(
    out: DicomBytesIO,
    buf: mmap.mmap,
    ds: Dataset,
    written: list[int],
    copied: list[tuple[int, int, int]],
    syntax: Syntax,
    spans: list[tuple[int, int, int]],
) -> None:
    """Write ds's elements `written` and the copied ones in tag order; ds's win a tie."""
    charset = ds.get("SpecificCharacterSet", "iso8859")

    def copy(tag: int, start: int, stop: int) -> None:
        at = out.tell()
        out.write(buf[start:stop])
        spans.append((tag, at, at + stop - start))

    i = 0
    for tag in written:
        while i < len(copied) and copied[i][0] < tag:
            copy(*copied[i])
            i += 1
        if i < len(copied) and copied[i][0] == tag:
            i += 1  # the engine wrote it anew (a marker): its version wins
        _write_element(out, ds.get_item(tag), charset, syntax)
    for element in copied[i:]:
        copy(*element)


# The method's codes, the same in every object of a profile: encoded once. Only these:
# a cache of other sequences would keep values of earlier objects in memory.
_CACHED_SEQUENCES = frozenset({0x00120064})  # DeidentificationMethodCodeSequence
_ENCODED: dict[tuple[object, ...], bytes] = {}
_MAX_ENCODED = 64


def _write_element(
    out: DicomBytesIO, elem: DataElement | RawDataElement, charset: object, syntax: Syntax
) -> None:
    """pydicom's element writer; plain text written directly, the method's codes once."""
    if write_text(out, elem, charset, syntax):
        return
    key = _sequence_key(elem, charset, syntax) if elem.tag in _CACHED_SEQUENCES else None
    if key is None:
        write_data_element(out, elem, charset)  # type: ignore[arg-type]
        return
    data = _ENCODED.get(key)
    if data is None:
        piece = DicomBytesIO()
        piece.is_implicit_VR, piece.is_little_endian = syntax.implicit, syntax.little
        write_data_element(piece, elem, charset)  # type: ignore[arg-type]
        data = piece.getvalue()
        if len(_ENCODED) >= _MAX_ENCODED:
            _ENCODED.clear()
        _ENCODED[key] = data
    out.write(data)


def _sequence_key(
    elem: DataElement | RawDataElement, charset: object, syntax: Syntax
) -> tuple[object, ...] | None:
    """What a sequence's encoding depends on, if its items hold only plain text values."""
    if not isinstance(elem, DataElement) or not isinstance(elem.value, list):
        return None
    items: list[tuple[object, ...]] = []
    for item in elem.value:
        if not isinstance(item, Dataset) or len(item) > 8:
            return None
        fields: list[object] = [item.is_undefined_length_sequence_item]
        for tag in item.keys():  # noqa: SIM118 - keys: nothing decoded
            inner = item.get_item(tag)
            if not isinstance(inner, DataElement) or type(inner.value) is not str:
                return None
            fields.append((int(tag), inner.VR, inner.value))
        items.append(tuple(fields))
    charset_key = tuple(charset) if isinstance(charset, list) else charset
    return (
        elem.tag,
        elem.VR,
        elem.is_undefined_length,
        syntax.implicit,
        syntax.little,
        str(charset_key),
        tuple(items),
    )
