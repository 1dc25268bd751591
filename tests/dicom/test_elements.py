"""The raw element parser: headers in every syntax, fragments, element ends, the file meta."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from deid_node.dicom.elements import (
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    LONG_VRS,
    SEQ_DELIM,
    UNDEFINED,
    VRS,
    EncodingError,
    Syntax,
    element_end,
    guess_syntax,
    read_meta,
    skip_fragments,
    syntax_of,
)
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, phi_everywhere

SYNTAXES = {"implicit LE": IMPLICIT_LE, "explicit LE": EXPLICIT_LE, "explicit BE": EXPLICIT_BE}
SECRET = b"Doe^Jane"  # a stand-in for a value no message may quote


def encode(elem: DataElement, syntax: Syntax) -> bytes:
    """One element as pydicom writes it in syntax."""
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.little
    fp.is_implicit_VR = syntax.implicit
    write_data_element(fp, elem)
    return fp.getvalue()


def item_header(tag: int, length: int, little: bool = True) -> bytes:
    return struct.pack("<HHL" if little else ">HHL", tag >> 16, tag & 0xFFFF, length)


def test_vr_tables_match_ps3_5_as_pydicom_has_them() -> None:
    assert {str(v) for v in STANDARD_VR} == VRS
    assert {str(v) for v in EXPLICIT_VR_LENGTH_32} == LONG_VRS
    assert {"SV", "UV", "OV"} <= LONG_VRS


@pytest.mark.parametrize("name", SYNTAXES)
@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("PatientName", "PN", "Doe^Jane"),
        ("Rows", "US", 512),
        ("SelectorSVValue", "SV", [-(2**40), 7]),
        ("FileOffsetInContainer", "UV", 2**63),
        (
            "RedPaletteColorLookupTableData",
            "OW",
            b"\x01\x02" * 40000,
        ),  # > 0xFFFF: only a 4-byte length holds it
        ("RetrieveURL", "UR", "https://example.org/a"),
    ],
)
def test_header_of_what_pydicom_writes(name: str, keyword: str, vr: str, value: object) -> None:
    syntax = SYNTAXES[name]
    ds = Dataset()
    setattr(ds, keyword, value)
    elem = ds[keyword]
    raw = b"\0" * 6 + encode(elem, syntax)  # not at offset 0: positions are absolute
    tag, got_vr, length, vpos = syntax.read_header(raw, 6, len(raw))
    assert tag == int(elem.tag)
    assert got_vr == (None if syntax.implicit else vr)
    long_header = not syntax.implicit and vr in LONG_VRS
    assert vpos - 6 == (12 if long_header else 8)
    assert vpos + length == len(raw)


@pytest.mark.parametrize("vr", ["SV", "UV"])
def test_sv_and_uv_take_a_four_byte_length_after_two_reserved_bytes(vr: str) -> None:
    value = b"\x11" * 8 * 9000  # 72000 bytes: needs the 4-byte length
    for syntax, fmt in ((EXPLICIT_LE, "<HH2sHL"), (EXPLICIT_BE, ">HH2sHL")):
        raw = struct.pack(fmt, 0x0072, 0x0082, vr.encode(), 0x4242, len(value)) + value
        assert syntax.read_header(raw, 0, len(raw)) == (0x00720082, vr, len(value), 12)


def test_items_and_delimiters_have_no_vr_in_any_syntax() -> None:
    for syntax in SYNTAXES.values():
        for tag in (ITEM, ITEM_DELIM, SEQ_DELIM):
            raw = item_header(tag, 0x00001234, syntax.little) + b"\0" * 4
            assert syntax.read_header(raw, 0, len(raw)) == (tag, None, 0x1234, 8)
            assert syntax.read_item(raw, 0, len(raw)) == (tag, 0x1234)


@pytest.mark.parametrize("name", SYNTAXES)
def test_a_header_cut_off_by_end_is_refused_though_the_buffer_goes_on(name: str) -> None:
    syntax = SYNTAXES[name]
    raw = encode(DataElement(0x7FE00010, "OB", b"\0" * 16), syntax)
    with pytest.raises(EncodingError, match="element header is cut off"):
        syntax.read_header(raw, 0, 7)
    with pytest.raises(EncodingError, match="item header is cut off"):
        syntax.read_item(raw, 0, 7)
    if not syntax.implicit:  # the 4-byte length of a long VR lies past end
        with pytest.raises(EncodingError, match="element header is cut off"):
            syntax.read_header(raw, 0, 10)
    assert syntax.read_header(raw, 0, 12)[2] == 16


def test_an_invalid_vr_names_the_tag_and_no_value() -> None:
    raw = struct.pack("<HH2sH", 0x0010, 0x0010, b"ZZ", len(SECRET)) + SECRET
    with pytest.raises(EncodingError) as info:
        EXPLICIT_LE.read_header(raw, 0, len(raw))
    assert str(info.value) == "(0010,0010) PatientName: invalid VR"
    # implicit VR reads no VR at all, so the same bytes are just a length
    assert IMPLICIT_LE.read_header(raw, 0, len(raw))[1] is None


def fragments(little: bool, *values: bytes) -> bytes:
    body = b"".join(item_header(ITEM, len(v), little) + v for v in values)
    return body + item_header(SEQ_DELIM, 0, little)


@pytest.mark.parametrize("name", SYNTAXES)
def test_fragments_are_skipped_to_the_sequence_delimiter(name: str) -> None:
    syntax = SYNTAXES[name]
    data = fragments(syntax.little, b"", b"\xff\xd8" * 8, b"\xff\xd9")
    assert skip_fragments(data + b"trailing", 0, len(data) + 8, syntax) == len(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (fragments(True, b"ab")[:-8], "no sequence delimiter"),
        (fragments(True, b"ab")[:-4], "no sequence delimiter"),
        (fragments(True, b"ab")[:-4] + b"\x02\0\0\0", "non-zero length"),
        (item_header(ITEM, UNDEFINED) + fragments(True), "malformed"),
        (item_header(0x00100010, 2) + b"ab" + fragments(True), "malformed"),
        (item_header(ITEM, 64) + b"ab", "truncated pixel data"),
    ],
)
def test_broken_fragments_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(EncodingError, match=reason):
        skip_fragments(data, 0, len(data), EXPLICIT_LE)


def test_element_ends_split_real_data_sets_in_every_syntax() -> None:
    tokens = PhiTokens()
    ct = ct_series(1, patient=SyntheticPatient.make(tokens), rows=8, cols=8)[0]
    for ds in (ct, phi_everywhere(tokens)):
        for syntax in SYNTAXES.values():
            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = syntax.little, syntax.implicit
            write_dataset(fp, ds)
            data = fp.getvalue()
            tags, pos = [], 0
            while pos < len(data):
                tags.append(syntax.read_header(data, pos, len(data))[0])
                pos = element_end(data, pos, len(data), syntax)
            assert pos == len(data)
            assert tags == sorted(int(t) for t in ds.keys())  # noqa: SIM118 - keys, not values


def undefined_sequence(syntax: Syntax) -> bytes:
    """An SQ of undefined length: one undefined-length item nesting another such SQ."""
    little = syntax.little
    inner_sq = DataElement(0x00081115, "SQ", [])
    name = encode(DataElement(0x00100010, "PN", "A^B"), syntax)
    inner = encode(inner_sq, syntax)[: 8 if syntax.implicit else 12]  # header only
    inner = inner[:-4] + struct.pack("<L" if little else ">L", UNDEFINED)
    inner += item_header(ITEM, len(name), little) + name + item_header(SEQ_DELIM, 0, little)
    outer = encode(DataElement(0x00081110, "SQ", []), syntax)
    outer = outer[:-4] + struct.pack("<L" if little else ">L", UNDEFINED)
    body = item_header(ITEM, UNDEFINED, little) + name + inner + item_header(ITEM_DELIM, 0, little)
    return outer + body + item_header(SEQ_DELIM, 0, little)


@pytest.mark.parametrize("name", SYNTAXES)
def test_element_end_walks_undefined_lengths_to_their_delimiter(name: str) -> None:
    syntax = SYNTAXES[name]
    seq = undefined_sequence(syntax)
    data = seq + encode(DataElement(0x00200010, "SH", "1"), syntax)
    assert element_end(data, 0, len(data), syntax) == len(seq)
    pixels = encode(DataElement(0x7FE00010, "OB", b""), syntax)[:-4] + b"\xff" * 4
    pixels += fragments(syntax.little, b"", b"\xff\xd8")
    assert element_end(pixels, 0, len(pixels), syntax) == len(pixels)
    with pytest.raises(EncodingError, match="cut off"):
        element_end(seq[:-4], 0, len(seq) - 4, syntax)


def test_undefined_length_un_holds_implicit_items() -> None:
    name = encode(DataElement(0x00100010, "PN", "A^B"), IMPLICIT_LE)
    body = item_header(ITEM, UNDEFINED) + name + item_header(ITEM_DELIM, 0)
    data = struct.pack("<HH2sHL", 0x0009, 0x1010, b"UN", 0, UNDEFINED) + body
    data += item_header(SEQ_DELIM, 0)
    assert element_end(data, 0, len(data), EXPLICIT_LE) == len(data)


def test_element_end_refuses_values_past_the_end_and_non_items() -> None:
    raw = encode(DataElement(0x00100010, "PN", "Doe^Jane"), EXPLICIT_LE)
    with pytest.raises(EncodingError, match=r"\(0010,0010\) PatientName ends past the data"):
        element_end(raw, 0, len(raw) - 2, EXPLICIT_LE)
    stray = struct.pack("<HH2sHL", 0x0008, 0x1110, b"SQ", 0, UNDEFINED) + raw
    with pytest.raises(EncodingError, match="other than items"):
        element_end(stray, 0, len(stray), EXPLICIT_LE)
    in_item = stray[:12] + item_header(ITEM, UNDEFINED) + item_header(SEQ_DELIM, 0) * 2
    with pytest.raises(EncodingError, match="stands where an element belongs"):
        element_end(in_item, 0, len(in_item), EXPLICIT_LE)


def part10(ts: UID, *extra_meta: DataElement) -> tuple[bytes, int]:
    """A small Part-10 file in ts and where its body begins."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.PatientName = "Doe^Jane"
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for elem in extra_meta:
        ds.file_meta.add(elem)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    raw = out.getvalue()
    return raw, 144 + struct.unpack_from("<L", raw, 140)[0]


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit]
)
def test_file_meta_gives_the_body_offset_and_transfer_syntax(ts: UID) -> None:
    raw, body = part10(ts)
    assert read_meta(raw) == (body, str(ts))
    assert read_meta(raw[:body] + b"\x10\x00\x10\x00") == (body, str(ts))


@pytest.mark.parametrize(
    ("vr", "value"), [("SV", [7, -8]), ("UV", [7, 8]), ("OV", b"\x07" * 16), ("OD", b"\0" * 16)]
)
def test_long_vr_meta_element_ends_where_pydicom_reads_it(vr: str, value: object) -> None:
    raw, body = part10(ExplicitVRLittleEndian, DataElement(0x00020200, vr, value))
    assert read_meta(raw) == (body, str(ExplicitVRLittleEndian))


def test_file_meta_without_preamble_is_no_meta() -> None:
    raw, body = part10(ExplicitVRLittleEndian)
    assert read_meta(raw[body:]) == (0, None)
    assert read_meta(b"") == (0, None)


def test_broken_file_meta_is_refused() -> None:
    raw, _ = part10(ExplicitVRLittleEndian)
    with pytest.raises(EncodingError, match="truncated file meta"):
        read_meta(raw[:170])  # inside MediaStorageSOPClassUID
    ts_at = raw.index(b"\x02\x00\x10\x00UI")
    no_ts = raw[:ts_at] + b"\x02\x00\x11\x00" + raw[ts_at + 4 :]
    with pytest.raises(EncodingError, match="lacks TransferSyntaxUID"):
        read_meta(no_ts)
    bad_vr = raw[: ts_at + 4] + b"ZZ" + raw[ts_at + 6 :]
    with pytest.raises(EncodingError, match=r"^\(0002,0010\) TransferSyntaxUID: invalid VR$"):
        read_meta(bad_vr)


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_a_bare_data_set_syntax_is_guessed_from_its_first_element(ts: UID) -> None:
    raw, body = part10(ts)
    assert guess_syntax(raw[body:]) == str(ts)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (ImplicitVRLittleEndian, IMPLICIT_LE),
        (ExplicitVRLittleEndian, EXPLICIT_LE),
        (ExplicitVRBigEndian, EXPLICIT_BE),
        (DeflatedExplicitVRLittleEndian, EXPLICIT_LE),  # the inflated body
        (JPEGBaseline8Bit, EXPLICIT_LE),
        ("1.2.840.10008.5.1.4.1.1.7", EXPLICIT_LE),  # no transfer syntax at all
    ],
)
def test_syntax_of_a_transfer_syntax(ts: str, expected: Syntax) -> None:
    assert syntax_of(ts) is expected
