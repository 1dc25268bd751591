"""The strict encoding check: what real encoders write passes, every ambiguity is refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from deid_node.dicom.encoding import (
    MAX_SEQUENCE_DEPTH,
    EncodingError,
    check_body,
    check_file,
    parse_charset,
)
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    phi_everywhere,
    rt_structure_set,
    sr_document,
    write_files,
)

EXPLICIT = str(ExplicitVRLittleEndian)
IMPLICIT = str(ImplicitVRLittleEndian)
LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def el(
    tag: int, vr: str, value: bytes, *, implicit: bool = False, length: int | None = None
) -> bytes:
    """One little-endian element, padded to even length; `length` overrides the declared one."""
    if len(value) % 2 and length is None:
        value += b"\0" if vr in ("UI", "OB", "") else b" "
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", n) + value
    if vr in LONG:
        return head + vr.encode() + b"\0\0" + struct.pack("<L", n) + value
    return head + vr.encode() + struct.pack("<H", n) + value


def item(content: bytes, *, defined: bool = True) -> bytes:
    if defined:
        return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(content)) + content
    return b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + content + b"\xfe\xff\x0d\xe0\0\0\0\0"


SEQ_END = b"\xfe\xff\xdd\xe0\0\0\0\0"
UIDS = {
    0x00080016: b"1.2.840.10008.5.1.4.1.1.7\0",
    0x00080018: b"1.2.3.4.5.6.7.8\0",
    0x0020000D: b"1.2.3.4.5.6.7.9\0",
    0x0020000E: b"1.2.3.4.5.6.7.10",
}


def body(*extra: tuple[int, bytes], implicit: bool = False) -> bytes:
    """A minimal data set: the four UIDs plus `extra` (tag, encoded element), sorted."""
    elems = {t: el(t, "UI", v, implicit=implicit) for t, v in UIDS.items()}
    elems.update(dict(extra))
    return b"".join(elems[t] for t in sorted(elems))


def refused(data: bytes, ts: str = EXPLICIT) -> str:
    with pytest.raises(EncodingError) as info:
        check_body(data, 0, ts)
    return str(info.value)


def test_minimal_body_passes_and_reports_its_uids() -> None:
    info = check_body(body(), 0, EXPLICIT)
    assert info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7"
    assert info.sop_instance_uid == "1.2.3.4.5.6.7.8"
    assert info.series_instance_uid == "1.2.3.4.5.6.7.10"
    assert check_body(body(implicit=True), 0, IMPLICIT).study_instance_uid == "1.2.3.4.5.6.7.9"


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_synthetic_objects_in_every_native_syntax_pass(tmp_path: Path, ts: str) -> None:
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens)
    ct = ct_series(2, patient=patient)
    objects = [*ct, phi_everywhere(tokens), rt_structure_set(ct, tokens=tokens)]
    objects.append(sr_document(patient))
    for ds in objects:
        ds.file_meta.TransferSyntaxUID = ts
    for path in write_files(objects, tmp_path):
        assert check_file(path).transfer_syntax_uid == ts, path.name


def test_deflated_and_encapsulated_files_pass(tmp_path: Path) -> None:
    jpeg = Path(str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))
    assert check_file(jpeg).transfer_syntax_uid == JPEGBaseline8Bit
    deflated = Path(str(get_testdata_file("image_dfl.dcm")))
    assert check_file(deflated).transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = raw.compress(body()) + raw.flush()
    assert check_body(data, 0, str(DeflatedExplicitVRLittleEndian)).sop_instance_uid
    assert "inflate" in refused(b"\x00garbage", str(DeflatedExplicitVRLittleEndian))


def test_every_character_set_sample_passes() -> None:
    checked = 0
    for name in get_charset_files("chr*.dcm"):
        if "SQEncoding" in name:
            continue  # samples without SOP UIDs
        check_file(Path(name))
        checked += 1
    assert checked >= 14


PN = 0x00100010


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([(0x00300000, el(0x00100010, "PN", b"LATE^NAME"))], "out of ascending"),
        ([(0x00100010, el(0x00100010, "XX", b"NAME"))], "invalid VR"),
        ([(0x00100010, el(0x00100010, "US", b"\x01\x00"))], "dictionary has another"),
        ([(0x00100010, el(0x00100010, "LO", b"NAME^A"))], "dictionary has another"),  # PN
        ([(0x00080020, el(0x00080020, "LO", b"20200101"))], "dictionary has another"),  # DA
        ([(0x00280010, el(0x00280010, "US", b"\x01\x00\x02\x00"))], "more values than"),
        ([(0x00100040, el(0x00100040, "CS", b"M\\F\\"))], "more values than"),
        ([(0x00189345, el(0x00189345, "FD", b"\x01" * 6))], "whole number of values"),
        ([(0x00081030, el(0x00081030, "LO", b"CT\x07AB"))], "control character"),
        ([(0x00081030, el(0x00081030, "LO", b"CT\x1b$BAB"))], "control character"),
        ([(0x00200010, el(0x00200010, "SH", b"AB\x0bC"))], "control character"),
        ([(0x00080060, el(0x00080060, "CS", b"\xe9T"))], "outside the CS repertoire"),
        ([(0x00020010, el(0x00020010, "UI", b"1.2\0"))], "file meta or command"),
        ([(0x0040A160, el(0x0040A160, "UT", b"ABCD", length=UNDEFINED) + SEQ_END)], "undefined"),
        ([(0x00081030, el(0x00081030, "LO", b"ABCD", length=400))], "ends past the data"),
        ([(0x7FE00010, el(0x7FE00010, "OW", b"\0\0", length=UNDEFINED) + SEQ_END)], "native"),
        ([(0x00080005, el(0x00080005, "CS", b"ISO_IR 999"))], "unknown term"),
        ([(0x00080005, el(0x00080005, "CS", b"ISO_IR 192\\ISO 2022 IR 87 "))], "combined"),
    ],
)
def test_ambiguous_encodings_are_refused_by_rule(
    extra: list[tuple[int, bytes]], match: str
) -> None:
    message = refused(body(*extra))
    assert match in message
    assert "NAME" not in message and "JOHN" not in message  # rules and tags, never values


def test_a_repeated_tag_with_another_value_is_refused() -> None:
    # pydicom keeps the last of two: the engine would never see the first UID.
    uid = el(0x00080018, "UI", b"1.2.3.4.5.6.7.99")
    data = body()
    at = data.index(el(0x00080018, "UI", UIDS[0x00080018]))
    assert "(0008,0018) SOPInstanceUID is repeated" in refused(data[:at] + uid + data[at:])


@pytest.mark.parametrize(
    ("extra", "note"),
    [
        ([(PN, el(PN, "PN", b"ODD", length=3))], "(0010,0010) PatientName: odd value length"),
        ([(0x00081030, el(0x00081030, "LO", b"CT\0JOHN "))], "NUL inside a text value"),
        ([(0x00081030, el(0x00081030, "LO", b"\0" * 4))], "NUL inside a text value"),
    ],
)
def test_faults_with_one_reading_pass_with_a_repair_note(
    extra: list[tuple[int, bytes]], note: str
) -> None:
    (repair,) = check_body(body(*extra), 0, EXPLICIT).repairs
    assert note in repair and "JOHN" not in repair  # tags and faults, never values


def test_a_repeated_tag_passes_with_a_repair_note() -> None:
    # Both copies are read and de-identified (dicom/repair.py), one is written.
    name = el(PN, "PN", b"REAL^NAME ")
    data = body((PN, name))
    at = data.index(name)
    assert check_body(data[:at] + name + data[at:], 0, EXPLICIT).repairs == (
        "(0010,0010) PatientName: present twice, the copies equal; one written",
    )


def test_structure_of_sequences_and_items() -> None:
    sq = 0x00081140  # ReferencedImageSequence
    inner = el(0x00081150, "UI", b"1.2.3.4\0")
    good = [
        el(sq, "SQ", item(inner)),
        el(sq, "SQ", item(inner, defined=False) + SEQ_END, length=UNDEFINED),
        el(sq, "SQ", b""),
        el(sq, "UN", item(el(0x00081150, "", b"1.2.3.4\0", implicit=True))),
    ]
    for elem in good:
        check_body(body((sq, elem)), 0, EXPLICIT)
    bad = {
        "no item delimiter": el(sq, "SQ", b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + SEQ_END),
        "no sequence delimiter": el(sq, "SQ", item(inner), length=UNDEFINED),
        "item runs past": el(sq, "SQ", item(inner)[:-4] + b"", length=len(item(inner)) - 4),
        "something other": el(sq, "SQ", inner),
        "stray item": item(inner),
    }
    for what, elem in bad.items():
        tag = sq if what != "stray item" else 0x00081141
        message = refused(body((tag, elem)))
        assert message, what


def test_stray_item_delimiter_at_top_level_is_refused() -> None:
    # pydicom stops reading the data set there: whatever follows would go unchecked.
    data = body() + b"\xfe\xff\x0d\xe0\0\0\0\0" + el(0xFFFCFFFC, "OB", b"PATIENT ")
    assert "item or delimiter" in refused(data)


def test_nesting_limit() -> None:
    sq = 0x00081140
    content = el(0x00081150, "UI", b"1.2.3.4\0")
    for _ in range(MAX_SEQUENCE_DEPTH):
        content = el(sq, "SQ", item(content))
    check_body(body((sq, content)), 0, EXPLICIT)
    deeper = el(sq, "SQ", item(content))
    assert "nested deeper" in refused(body((sq, deeper)))


def test_missing_or_empty_uids_are_refused() -> None:
    data = b"".join(el(t, "UI", v) for t, v in sorted(UIDS.items()) if t != 0x00080018)
    assert refused(data) == "data set lacks SOPInstanceUID"
    blank = body((0x00080018, el(0x00080018, "UI", b"\0\0")))
    assert "NUL byte" in refused(blank)
    spaces = body((0x00080018, el(0x00080018, "UI", b"    ")))
    assert refused(spaces) == "data set lacks SOPInstanceUID"


def test_text_padding_and_latin1_without_a_character_set_are_tolerated() -> None:
    data = body(
        (0x00081030, el(0x00081030, "LO", b"CT HEAD\0")),  # one NUL of padding
        (PN, el(PN, "PN", b"M\xfcller^Hans ")),  # no charset: read as Latin-1
        (0x00204000, el(0x00204000, "LT", b"line one\r\nline\ttwo ")),
        (0x00081090, el(0x00081090, "LO", b"CT\tMODEL\r\n")),  # not allowed, but harmless
        (0x0008103E, el(0x0008103E, "LO", b"HEAD\\NECK")),  # VM 1, a stray backslash
        (0x00081010, el(0x00081010, "LO", b"STATION NINE")),  # SH sent as LO
    )
    check_body(data, 0, EXPLICIT)


def test_declared_character_sets_are_enforced() -> None:
    utf8 = (0x00080005, el(0x00080005, "CS", b"ISO_IR 192"))
    check_body(body(utf8, (PN, el(PN, "PN", "Müller^Zoë".encode()))), 0, EXPLICIT)
    assert "not valid in the declared" in refused(body(utf8, (PN, el(PN, "PN", b"M\xc3(^A "))))
    jis = (0x00080005, el(0x00080005, "CS", b"\\ISO 2022 IR 87 "))
    name = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    check_body(body(jis, (PN, el(PN, "PN", name + b" "))), 0, EXPLICIT)
    unreturned = b"Yamada^Tarou=\x1b$B;3ED"
    assert "without returning" in refused(body(jis, (PN, el(PN, "PN", unreturned))))
    broken = b"Yamada=\x1b$B;\x1b(B"
    assert "broken two-byte" in refused(body(jis, (PN, el(PN, "PN", broken + b" "))))
    latin = (0x00080005, el(0x00080005, "CS", b"ISO_IR 100"))
    escaped = b"AB\x1b$B;3\x1b(B"
    assert "control character" in refused(body(latin, (PN, el(PN, "PN", escaped + b" "))))
    undeclared = b"AB\x1b$)C\xb1\xe8\x1b(B "
    assert "does not allow" in refused(body(jis, (PN, el(PN, "PN", undeclared))))


def test_parse_charset() -> None:
    assert not parse_charset(b"").extended
    assert parse_charset(b"ISO_IR 100").codec == "latin_1"
    assert parse_charset(b"\\ISO 2022 IR 149").extended
    with pytest.raises(EncodingError):
        parse_charset(b"\xff")


def test_files_without_meta_and_group_0002_smuggled_after_the_meta(tmp_path: Path) -> None:
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(body())
    assert check_file(bare).transfer_syntax_uid == EXPLICIT
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(EncodingError, match="empty"):
        check_file(empty)
    # A real Part-10 file whose body starts with a second TransferSyntaxUID.
    src = Path(str(get_testdata_file("CT_small.dcm")))
    ds = dcmread(src)
    good = tmp_path / "good.dcm"
    ds.save_as(good, enforce_file_format=True)
    raw = good.read_bytes()
    meta_end = 144 + struct.unpack_from("<L", raw, 140)[0]
    smuggled = tmp_path / "smuggled.dcm"
    smuggled.write_bytes(
        raw[:meta_end] + el(0x00020010, "UI", str(ImplicitVRLittleEndian).encode()) + raw[meta_end:]
    )
    check_file(good)
    with pytest.raises(EncodingError, match="file meta"):
        check_file(smuggled)


@pytest.mark.parametrize(("vr", "value"), [("SV", [7, -8]), ("UV", [7, 8]), ("OD", b"\0" * 16)])
def test_file_meta_elements_with_4_byte_lengths_are_read_as_pydicom_reads_them(
    tmp_path: Path, vr: str, value: object
) -> None:
    # The meta used to be read with a VR table of its own that lacked SV, UV, OD, OF,
    # OL and OV: the body was taken to start inside such an element and refused.
    ds = ct_series(1, patient=SyntheticPatient.make(PhiTokens()), rows=8, cols=8)[0]
    ds.file_meta.add(DataElement(0x00020200, vr, value))
    (path,) = write_files([ds], tmp_path)
    assert check_file(path).sop_instance_uid == ds.SOPInstanceUID == dcmread(path).SOPInstanceUID


def test_an_invalid_vr_in_the_file_meta_is_refused(tmp_path: Path) -> None:
    # pydicom reads an element whose VR is not two letters as implicit VR (a 4-byte
    # length), and the data set it then finds is not the one a 2-byte length gives.
    ds = ct_series(1, patient=SyntheticPatient.make(PhiTokens()), rows=8, cols=8)[0]
    (path,) = write_files([ds], tmp_path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\x02\x00\x13\x00SH")  # ImplementationVersionName
    raw[at + 4 : at + 6] = b"\0\0"
    path.write_bytes(raw)
    with pytest.raises(EncodingError) as info:
        check_file(path)
    assert str(info.value) == "(0002,0013) ImplementationVersionName: invalid VR"
