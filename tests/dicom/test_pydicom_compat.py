"""Each reach into pydicom's internals still works: a failure here names the one an
upgrade broke (deid_node/dicom/pydicom_compat.py)."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from deid_node.dicom import pydicom_compat as compat


def test_dictionary_uids_are_known_and_others_are_not() -> None:
    assert compat.is_dictionary_uid(CTImageStorage)
    assert compat.is_dictionary_uid(ExplicitVRLittleEndian)
    assert compat.is_dictionary_uid("1.2.840.10008.1.1")  # Verification
    assert not compat.is_dictionary_uid(generate_uid())
    assert not compat.is_dictionary_uid("")


def test_file_meta_is_read_from_bytes_at_the_position_given() -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    meta = compat.read_file_meta(BytesIO(buf.getvalue()[132:]))
    assert isinstance(meta, FileMetaDataset)
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPInstanceUID == sop


def test_the_element_dict_holds_raw_elements_undecoded() -> None:
    ds = Dataset()
    tag = Tag(0x00100010)
    raw = RawDataElement(tag, "PN", 10, b"DOE^JANE  ", 0, False, True)
    compat.element_dict(ds)[tag] = raw
    assert ds.get_item(tag) is raw  # still raw: nothing decoded it
    assert isinstance(ds[tag], DataElement)  # decoded on access, as for a file read
    assert str(ds.PatientName) == "DOE^JANE"
    assert compat.element_dict(ds)[tag] is ds.get_item(tag)
