"""phi_beyond_table: a token in every standard text attribute Table E.1-1 does not list."""

from __future__ import annotations

from typing import Final

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage

from deid_node.dicom.pydicom_compat import dictionary_entries
from deid_node.testing.synthetic.everywhere import annex_e_tags
from deid_node.testing.synthetic.patient import SyntheticPatient, code_item, new_dataset
from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = [
    "LOCAL_CODE_SEQUENCE",
    "NESTED_SEQUENCE",
    "STANDARD_CODE",
    "beyond_table_tags",
    "phi_beyond_table",
]

# Text VRs a token can be written in as a valid value (AS holds four characters only).
_PLANT_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# Attributes that change how the rest is read, or that the CT needs: never planted.
_SKIP: Final = frozenset({"SpecificCharacterSet", "Modality", "PhotometricInterpretation"})
# An unlisted sequence (not a code sequence) whose item repeats every planted attribute.
NESTED_SEQUENCE: Final = "CTExposureSequence"
# An unlisted code sequence: one item of a local scheme (tokens), one of SNOMED CT.
LOCAL_CODE_SEQUENCE: Final = "AnatomicRegionSequence"
STANDARD_CODE: Final = ("51185008", "SCT", "Thorax")


def beyond_table_tags() -> list[int]:
    """Every public attribute of pydicom's dictionary (retired ones too) with a text VR
    that Table E.1-1 does not list, sorted."""
    listed = set(annex_e_tags())
    out = []
    for tag, (vr, _vm, _name, _retired, keyword) in dictionary_entries().items():
        group = tag >> 16
        if tag in listed or group in (0x0000, 0x0002, 0x0004) or keyword in _SKIP:
            continue
        if vr.split(" or ")[0] in _PLANT_VRS:
            out.append(tag)
    return sorted(out)


def _value(tokens: PhiTokens, vr: str, path: str) -> str:
    if vr == "PN":
        return tokens.new_name(path)
    if vr == "UR":
        return f"https://records.example.invalid/{tokens.new_token(path)}"
    return tokens.new_token(path)


def _plant(ds: Dataset, tokens: PhiTokens, prefix: str) -> None:
    for tag in beyond_table_tags():
        vr, _vm, _name, _retired, keyword = dictionary_entries()[tag]
        vr = vr.split(" or ")[0]
        ds.add_new(tag, vr, _value(tokens, vr, f"{prefix}{keyword}"))


def phi_beyond_table(tokens: PhiTokens, *, seed: int = 0) -> Dataset:
    """A CT image with a token in every attribute of `beyond_table_tags()`, at the top level
    and again inside an item of NESTED_SEQUENCE, and a local-scheme code item of tokens.

    The patient module carries tokens too. Full of PHI on purpose and not a valid CT IOD.
    """
    patient = SyntheticPatient.make(tokens, seed)
    ds = new_dataset(CTImageStorage, tokens.new_uid("SOPInstanceUID", "beyond", seed))
    ds.Modality = "CT"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.StudyInstanceUID = tokens.new_uid("StudyInstanceUID", "beyond-study", seed)
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "beyond-series", seed)
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(32)
    _plant(ds, tokens, "")
    item = Dataset()
    _plant(item, tokens, f"{NESTED_SEQUENCE}[0].")
    setattr(ds, NESTED_SEQUENCE, DicomSequence([item]))
    path = f"{LOCAL_CODE_SEQUENCE}[0]."
    local = code_item(
        tokens.new_token(f"{path}CodeValue"),
        tokens.new_token(f"{path}CodingSchemeDesignator"),
        tokens.new_token(f"{path}CodeMeaning"),
    )
    setattr(ds, LOCAL_CODE_SEQUENCE, DicomSequence([local, code_item(*STANDARD_CODE)]))
    return ds
