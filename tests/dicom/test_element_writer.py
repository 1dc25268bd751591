"""The direct element writer produces pydicom's bytes, or leaves the element to pydicom."""

from __future__ import annotations

import pytest
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from deid_node.deid.marks import new_meta
from deid_node.dicom.element_writer import encode_meta, write_text
from deid_node.dicom.elements import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE, Syntax
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series

SYNTAXES = [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE]
ELEMENTS = [
    (0x00080060, "CS", "CT"),
    (0x00080060, "CS", "OT"),
    (0x00080008, "CS", ["ORIGINAL", "PRIMARY", "AXIAL"]),
    (0x00080020, "DA", "20240131"),
    (0x00080018, "UI", "1.2.3.4.5"),
    (0x00080018, "UI", "2.25.1234"),
    (0x00081030, "LO", "odd"),
    (0x00081030, "LO", ""),
    (0x00081030, "LO", None),
    (0x00324000, "LT", "a longer text, odd length"),
    (0x00404001, "UT", "unlimited text"),
    (0x00100020, "LO", ["ID1", "ID22"]),
]


def _pydicom(elem: DataElement, syntax: Syntax) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = syntax.implicit, syntax.little
    write_data_element(fp, elem, "iso8859")
    return fp.getvalue()


@pytest.mark.parametrize("syntax", SYNTAXES, ids=repr)
@pytest.mark.parametrize(("tag", "vr", "value"), ELEMENTS)
def test_plain_text_is_written_as_pydicom_writes_it(
    syntax: Syntax, tag: int, vr: str, value: object
) -> None:
    elem = DataElement(tag, vr, value)
    fp = DicomBytesIO()
    assert write_text(fp, elem, "iso8859", syntax)
    assert fp.getvalue() == _pydicom(elem, syntax)


@pytest.mark.parametrize(
    ("elem", "charset"),
    [
        (DataElement(0x00081030, "LO", "Müller"), "iso8859"),  # not ASCII
        (DataElement(0x00081030, "LO", "text"), ["", "ISO 2022 IR 87"]),  # code extensions
        (DataElement(0x00081030, "LO", "text"), "ISO_IR 13"),  # JIS X 0201: no backslash
        (DataElement(0x00100010, "PN", "Doe^John"), "iso8859"),  # names keep their bytes
        (DataElement(0x00180050, "DS", "1.25"), "iso8859"),  # numbers keep their strings
    ],
)
def test_anything_else_is_left_to_pydicom(elem: DataElement, charset: object) -> None:
    assert not write_text(DicomBytesIO(), elem, charset, EXPLICIT_LE)


def test_file_meta_is_written_as_pydicom_writes_it() -> None:
    [ds] = ct_series(1, patient=SyntheticPatient.make(PhiTokens()))
    for sop_uid in ("2.25.12345", "2.25.123456"):  # odd and even lengths
        meta = new_meta(ds, str(ds.SOPClassUID), sop_uid, ExplicitVRLittleEndian)
        raw = encode_meta(meta)
        fp = DicomBytesIO()
        write_file_meta_info(fp, meta, enforce_standard=True)
        assert raw == fp.getvalue()
