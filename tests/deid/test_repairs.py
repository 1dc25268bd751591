"""Faults real archives hold, repaired instead of withheld (issue 22): a NUL inside a text
value, an odd-length value, an element present twice; at the top level and inside
sequence items, in explicit and implicit VR, through every shipped profile, both engines
giving the same bytes. What has no sure reading is still refused."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.config import Config
from deid_node.deid.pipeline import REPAIRED, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.dicom.elements import element_end, read_meta, syntax_of
from deid_node.dicom.encoding import EncodingError, check_body, check_file
from deid_node.object_status import Status
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import named_text_object
from tests.support.dcmtk import STORESCU, run_dcmtk
from tests.support.leaks import name_leaks
from tests.support.node import IDLE, ONE_SOURCE, audit_objects, node_table
from tests.support.profiles import both_engines, shipped_profiles
from tests.support.scu import NODE_AE

KEY = b"\x5a" * 32
PROFILES = sorted(shipped_profiles().items())
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
FAMILY, GIVEN = "Kowalczyk", "Zbigniew"
LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _el(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One little-endian element as given: no padding (odd lengths are the point)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in LONG:
        return head + vr.encode() + b"\0\0" + struct.pack("<L", len(value)) + value
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def _item(content: bytes) -> bytes:
    return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(content)) + content


def _base(tmp: Path, ts: str) -> tuple[bytes, bool]:
    ds, _ = named_text_object("2.25.777001", FAMILY, GIVEN, charset="ISO_IR 100")
    ds.file_meta.TransferSyntaxUID = ts
    path = tmp / "base.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes(), ts == ImplicitVRLittleEndian


def _splice(data: bytes, elements: list[tuple[int, bytes]]) -> bytes:
    """data with top-level elements replaced or added (tag, raw bytes; a tag twice: both)."""
    start, ts = read_meta(data)
    syntax = syntax_of(ts or ExplicitVRLittleEndian)
    spans, pos = {}, start
    while pos < len(data):
        tag = syntax.read_header(data, pos, len(data))[0]
        stop = element_end(data, pos, len(data), syntax)
        spans[tag] = data[pos:stop]
        pos = stop
    new: dict[int, list[bytes]] = {t: [raw] for t, raw in spans.items()}
    replaced: set[int] = set()
    for tag, raw in elements:
        if tag not in replaced:
            new[tag], replaced = [], replaced | {tag}
        new[tag].append(raw)
    return data[:start] + b"".join(b"".join(new[t]) for t in sorted(new))


def _faults(implicit: bool) -> dict[str, list[tuple[int, bytes]]]:
    """Each repairable fault, top level and nested, as elements to splice in."""
    name = f"{FAMILY}^{GIVEN}".encode()
    nested_text = _el(0x0040A160, "UT", b"HEAD\0" + f"{GIVEN} {FAMILY}".encode() + b" ", implicit)
    nested_odd = _el(0x00081155, "UI", b"1.2.3", implicit)
    nested_twice = _el(0x00081150, "UI", b"1.2.840.10008.5.1.4.1.1.2\0", implicit)
    return {
        "nul-top": [
            (0x00181210, _el(0x00181210, "SH", b"B30f\0Nowakowski", implicit)),
            (0x00204000, _el(0x00204000, "LT", b"HEAD\0" + name.replace(b"^", b" "), implicit)),
        ],
        "nul-nested": [
            (0x0040A730, _el(0x0040A730, "SQ", _item(nested_text), implicit)),
        ],
        "odd-top": [
            (0x00081030, _el(0x00081030, "LO", b"CT HEAD", implicit)),
            (0x00200011, _el(0x00200011, "IS", b"7", implicit)),
        ],
        "odd-nested": [
            (0x00081140, _el(0x00081140, "SQ", _item(nested_twice + nested_odd), implicit)),
        ],
        "twice-equal": [
            (0x0008103E, _el(0x0008103E, "LO", b"chest contrast", implicit)),
            (0x0008103E, _el(0x0008103E, "LO", b"chest contrast", implicit)),
        ],
        "twice-names": [  # the patient's real name first, a decoy second (pydicom's pick)
            (0x00100010, _el(0x00100010, "PN", name, implicit)),
            (0x00100010, _el(0x00100010, "PN", b"DOE^JOHN", implicit)),
            (0x00181210, _el(0x00181210, "SH", f"{FAMILY.upper()} ".encode(), implicit)),
        ],
        "twice-nested": [
            (0x00081140, _el(0x00081140, "SQ", _item(nested_twice + nested_twice), implicit)),
        ],
    }


@pytest.mark.parametrize("ts", SYNTAXES, ids=["explicit", "implicit"])
@pytest.mark.parametrize("fault", list(_faults(False)), ids=str)
def test_repairable_faults_are_repaired_cleaned_and_audited(
    fault: str, ts: str, tmp_path: Path
) -> None:
    base, implicit = _base(tmp_path, ts)
    src = tmp_path / "faulty.dcm"
    src.write_bytes(_splice(base, _faults(implicit)[fault]))
    notes = check_file(src).repairs  # accepted (acknowledged), with what to repair
    assert notes and all("Kowalczyk" not in n and "HEAD" not in n for n in notes)
    _, planted = named_text_object("2.25.777001", FAMILY, GIVEN)
    for name, config in PROFILES:
        outcome = both_engines(src, compile_profile(config), KEY, tmp_path / name)
        assert outcome.status is Status.STORED, (name, outcome.reason)
        assert outcome.reason == f"{REPAIRED}: {'; '.join(notes)}"  # the audit row's reason
        assert outcome.output_path is not None
        written = outcome.output_path.read_bytes()
        assert check_file(outcome.output_path).repairs == ()
        out = dcmread(outcome.output_path)
        assert name_leaks(out, planted) == [], name
        assert b"Nowakowski" not in written and b"KOWALCZYK" not in written.upper()


def test_a_nul_makes_a_kept_value_free_text(tmp_path: Path) -> None:
    base, implicit = _base(tmp_path, ExplicitVRLittleEndian)
    src = tmp_path / "faulty.dcm"
    src.write_bytes(_splice(base, _faults(implicit)["nul-top"]))
    outcome = process_file(src, compile_profile(shipped_profiles()["basic"]), KEY, tmp_path)
    assert outcome.output_path is not None
    kernel = dcmread(outcome.output_path).ConvolutionKernel
    assert kernel == "B30f [removed]"  # a kernel name kept; what the NUL hid, cleaned


@pytest.mark.parametrize(
    ("what", "elements", "rule"),
    [
        (
            "UIDs twice, different",
            [
                (0x00080018, _el(0x00080018, "UI", b"1.2.3.4\0", False)),
                (0x00080018, _el(0x00080018, "UI", b"1.2.3.5\0", False)),
            ],
            "repeated with another value",
        ),
        (
            "PatientID twice, different",
            [
                (0x00100020, _el(0x00100020, "LO", b"ID0001", False)),
                (0x00100020, _el(0x00100020, "LO", b"ID0002", False)),
            ],
            "repeated with another value",
        ),
        ("NUL inside a UID", [(0x00080018, _el(0x00080018, "UI", b"1.2\0.3\0", False))], "NUL"),
        (
            "text in UTF-16",  # NULs as spaces would spell the name out: K o w a l c z y k
            [(0x00204000, _el(0x00204000, "LT", FAMILY.encode("utf-16-le"), False))],
            "NUL",
        ),
    ],
)
def test_what_has_no_sure_reading_is_still_refused(
    what: str, elements: list[tuple[int, bytes]], rule: str, tmp_path: Path
) -> None:
    base, _ = _base(tmp_path, ExplicitVRLittleEndian)
    data = _splice(base, elements)
    start, _ = read_meta(data)
    with pytest.raises(EncodingError, match=rule):
        check_body(data, start, ExplicitVRLittleEndian)
    src = tmp_path / "faulty.dcm"
    src.write_bytes(data)
    outcome = process_file(src, compile_profile(shipped_profiles()["basic"]), KEY, tmp_path)
    assert outcome.status is Status.QUARANTINED, what


@pytest.mark.dcmtk
def test_a_repaired_object_sent_by_dcmtk_is_stored_and_its_audit_row_says_so(
    dcmtk: None,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    host, port = node.address
    base, implicit = _base(tmp_path, ExplicitVRLittleEndian)
    src = tmp_path / "faulty.dcm"
    src.write_bytes(_splice(base, _faults(implicit)["nul-top"]))
    sent = run_dcmtk(STORESCU, "-aet", "CT_SCANNER", "-aec", NODE_AE, host, str(port), str(src))
    assert sent.returncode == 0, sent.stderr
    assert node.wait_idle(IDLE)
    (row,) = audit_objects(cfg)
    assert row["status"] == "stored"
    # dcmtk pads the odd lengths itself and sends the NULs as they are.
    assert row["reason"] == (
        f"{REPAIRED}: (0018,1210) ConvolutionKernel: NUL inside a text value, read as a space; "
        "(0020,4000) ImageComments: NUL inside a text value, read as a space"
    )
    assert FAMILY not in str(row) and "Nowakowski" not in str(row)
    written = Path(str(row["output_path"])).read_bytes()
    assert b"Nowakowski" not in written and FAMILY.encode() not in written


def test_a_repaired_capture_has_its_burned_in_text_cleaned(tmp_path: Path) -> None:
    # Repaired objects are cleaned like any other: their pixels are looked at too.
    from deid_node.config import BurnedInPolicy, ProfileConfig
    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient
    from deid_node.testing.synthetic.annotated import annotated_capture

    patient = SyntheticPatient.make(PhiTokens(), seed=11)
    ds, drawn = annotated_capture(patient, burned_in="YES")
    base = tmp_path / "capture.dcm"
    ds.save_as(base, enforce_file_format=True)
    implicit = False
    src = tmp_path / "faulty.dcm"
    src.write_bytes(_splice(base.read_bytes(), _faults(implicit)["odd-top"]))
    assert check_file(src).repairs
    profile = compile_profile(ProfileConfig("clean", burned_in_annotation=BurnedInPolicy.CLEAN))
    outcome = process_file(src, profile, KEY, tmp_path / "out")
    assert outcome.status is Status.STORED, outcome.reason
    assert outcome.reason is not None and outcome.reason.startswith(REPAIRED)
    assert outcome.pixels is not None and outcome.pixels.startswith("cleaned: ")
    assert outcome.output_path is not None
    frame = dcmread(outcome.output_path).pixel_array
    for text in drawn:
        left, top, right, bottom = text.box
        inside = frame[top:bottom, left:right]
        assert int(inside.max()) - int(inside.min()) < 25  # the contrast of 250 is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture.dcm", "faulty.dcm", "out"]
