"""phi_everywhere: a CT image with a token in every PS3.15 Table E.1-1 attribute, and more."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_has_tag, dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage

from deid_node.testing.synthetic.patient import SyntheticPatient, code_item, new_dataset
from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = [
    "ACME_CREATOR",
    "ANNEX_E_CSV",
    "ANNEX_E_JSON",
    "GEMS_CREATOR",
    "SAFE_PRIVATE_VALUE",
    "annex_e_tags",
    "phi_everywhere",
]

# The shipped table, and the reference it is generated from (outside the package).
ANNEX_E_CSV: Final = Path(__file__).resolve().parents[2] / "data" / "annex_e.csv"
ANNEX_E_JSON: Final = Path("/work/shared/reference/ps3.15-table-E.1-1-2024b.json")

# Private blocks planted by phi_everywhere.
ACME_CREATOR: Final = "ACME_PHI_1"
GEMS_CREATOR: Final = "GEMS_ACQU_01"
SAFE_PRIVATE_VALUE: Final = "SAFE_VALUE_1"


def _parse_tag(text: str) -> int | None:
    """``00100010`` or ``(0010,0010)`` -> int; patterns such as ``(50XX,XXXX)`` -> None."""
    compact = re.sub(r"[()\s,]", "", text)
    if re.fullmatch(r"[0-9A-Fa-f]{8}", compact):
        return int(compact, 16)
    return None


def _tags_from_csv(path: Path) -> list[int]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return [t for row in rows if (t := _parse_tag(row.get("tag") or "")) is not None]


def _tags_from_json(path: Path) -> list[int]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [t for row in rows if (t := _parse_tag(str(row.get("tag", "")))) is not None]


def annex_e_tags() -> list[int]:
    """The plain (non-pattern) tags of PS3.15 Table E.1-1, sorted.

    Read from the project's ``deid_node/data/annex_e.csv`` when it exists and looks complete
    (it may be half-written while someone regenerates it), else from the reference JSON.
    """
    tags: list[int] = []
    if ANNEX_E_CSV.is_file():
        try:
            tags = _tags_from_csv(ANNEX_E_CSV)
        except (OSError, csv.Error, UnicodeDecodeError):
            tags = []
    if len(tags) < 300 and ANNEX_E_JSON.is_file():
        tags = _tags_from_json(ANNEX_E_JSON)
    if not tags:
        raise FileNotFoundError(f"PS3.15 Table E.1-1 not found at {ANNEX_E_CSV} or {ANNEX_E_JSON}")
    return sorted(set(tags))


_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"}
_BYTE_VRS = {"OB", "OW", "UN", "OD", "OF", "OL", "OV"}
_ID_SUFFIXES = ("ID", "IDs", "Number", "Numbers", "Identifier", "Identifiers")
# Keywords phi_everywhere fills itself (the generic table loop skips them).
_PATIENT_KEYWORDS = {
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDsSequence",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyDescription",
    "ImageComments",
}
# Attributes the CT image itself needs; never overwritten by the table loop.
_CT_REQUIRED = {
    "SOPClassUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
}


def _seg(tag: int) -> str:
    """One path segment: the keyword of a public tag, else ``(gggg,eeee)``."""
    group = tag >> 16
    if group % 2 == 0 and dictionary_has_tag(tag):
        keyword = keyword_for_tag(tag)
        if keyword:
            return keyword
    return f"({group:04X},{tag & 0xFFFF:04X})"


def _token_bytes(token: str, length: int = 0) -> bytes:
    """An even-length binary value that contains ``token``."""
    value = b"\xfe\xed" + token.encode("ascii") + b"\x00"
    value = value.ljust(max(length, len(value)), b"\x00")
    return value + b"\x00" * (len(value) % 2)


def _vm_count(tag: int) -> int:
    vm = dictionary_VM(tag)
    return int(vm) if vm.isdigit() else 1


def _text_kind(tag: int) -> str:
    keyword = keyword_for_tag(tag) or ""
    return "id" if keyword.endswith(_ID_SUFFIXES) else "text"


def _generic_item(tokens: PhiTokens, path: str) -> Dataset:
    """A small sequence item with a PN and an LO token (both Table E.1-1 attributes)."""
    item = Dataset()
    item.PersonName = tokens.new_name(f"{path}.PersonName")
    item.InstitutionName = tokens.new_token(f"{path}.InstitutionName")
    return item


def _ref_items(
    tokens: PhiTokens, path: str, sop_class: str, seed: int, n: int = 2
) -> DicomSequence:
    items = []
    for i in range(n):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = tokens.new_uid(
            f"{path}[{i}].ReferencedSOPInstanceUID", "ref", seed
        )
        items.append(item)
    return DicomSequence(items)


def _request_attributes(tokens: PhiTokens, path: str, seed: int) -> DicomSequence:
    item = Dataset()
    item.RequestedProcedureID = tokens.new_token(f"{path}[0].RequestedProcedureID", "id")
    item.ScheduledProcedureStepID = tokens.new_token(f"{path}[0].ScheduledProcedureStepID", "id")
    item.ScheduledProcedureStepDescription = tokens.new_token(
        f"{path}[0].ScheduledProcedureStepDescription"
    )
    protocol = code_item("SYN-CT-01", "99SYN", "Synthetic CT protocol")
    context = Dataset()
    context.ValueType = "PNAME"
    context.ConceptNameCodeSequence = [code_item("121008", "DCM", "Person Observer Name")]
    deep = f"{path}[0].ScheduledProtocolCodeSequence[0].ProtocolContextSequence[0]"
    context.PersonName = tokens.new_name(f"{deep}.PersonName")
    protocol.ProtocolContextSequence = [context]
    item.ScheduledProtocolCodeSequence = [protocol]
    return DicomSequence([item])


def _content_items(tokens: PhiTokens, path: str, seed: int) -> DicomSequence:
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = [code_item("121071", "DCM", "Finding")]
    mention = tokens.new_token(f"{path}[0].TextValue")
    text.TextValue = f"Findings discussed with Dr {mention} by phone."
    pname = Dataset()
    pname.RelationshipType = "HAS OBS CONTEXT"
    pname.ValueType = "PNAME"
    pname.ConceptNameCodeSequence = [code_item("121008", "DCM", "Person Observer Name")]
    pname.PersonName = tokens.new_name(f"{path}[1].PersonName")
    date = Dataset()
    date.RelationshipType = "HAS OBS CONTEXT"
    date.ValueType = "DATE"
    date.ConceptNameCodeSequence = [code_item("111060", "DCM", "Study Date")]
    date.Date = tokens.new_date(f"{path}[2].Date")
    uidref = Dataset()
    uidref.RelationshipType = "HAS OBS CONTEXT"
    uidref.ValueType = "UIDREF"
    uidref.ConceptNameCodeSequence = [code_item("110180", "DCM", "Study Instance UID")]
    uidref.UID = tokens.new_uid(f"{path}[3].UID", "content", seed)
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ContinuityOfContent = "SEPARATE"
    container.ConceptNameCodeSequence = [code_item("121070", "DCM", "Findings")]
    inner = Dataset()
    inner.RelationshipType = "CONTAINS"
    inner.ValueType = "TEXT"
    inner.ConceptNameCodeSequence = [code_item("121071", "DCM", "Finding")]
    inner.TextValue = f"Nested note {tokens.new_token(f'{path}[4].ContentSequence[0].TextValue')}"
    container.ContentSequence = [inner]
    return DicomSequence([text, pname, date, uidref, container])


_SPECIAL_SEQUENCES: dict[str, Callable[[PhiTokens, str, int], DicomSequence]] = {
    "ReferencedImageSequence": lambda t, p, s: _ref_items(t, p, CTImageStorage, s),
    "SourceImageSequence": lambda t, p, s: _ref_items(t, p, CTImageStorage, s),
    "ReferencedStudySequence": lambda t, p, s: _ref_items(t, p, "1.2.840.10008.3.1.2.3.1", s, n=1),
    "ReferencedPatientSequence": lambda t, p, s: _ref_items(t, p, "1.2.840.10008.3.1.2.1.1", s, 1),
    "ReferencedPerformedProcedureStepSequence": lambda t, p, s: _ref_items(
        t, p, "1.2.840.10008.3.1.2.3.3", s, n=1
    ),
    "RequestAttributesSequence": _request_attributes,
    "ContentSequence": _content_items,
}


def _table_value(tokens: PhiTokens, tag: int, vr: str, path: str, seed: int) -> object:
    """A value valid for ``vr`` that carries a fresh token whenever the VR can hold one."""
    keyword = keyword_for_tag(tag) or ""
    count = _vm_count(tag)
    if vr == "PN":
        return tokens.new_name(path)
    if vr in _TEXT_VRS:
        return tokens.new_token(path, _text_kind(tag))
    if vr == "UR":
        return f"https://records.example.invalid/{tokens.new_token(path)}"
    if vr == "DA":
        return tokens.new_date(path)
    if vr == "TM":
        return tokens.new_time(path)
    if vr == "DT":
        return tokens.new_datetime(path)
    if vr == "UI":
        return tokens.new_uid(path, "table", seed)
    if vr == "SQ":
        special = _SPECIAL_SEQUENCES.get(keyword)
        if special is not None:
            return special(tokens, path, seed)
        return DicomSequence([_generic_item(tokens, f"{path}[0]")])
    if vr in _BYTE_VRS:
        return _token_bytes(tokens.new_token(path))
    if vr == "AS":
        return "047Y"
    if vr == "DS":
        values = [f"{12.5 + i:.1f}" for i in range(count)]
        return values if count > 1 else values[0]
    if vr == "IS":
        return "42"
    if vr in {"US", "UL", "SS", "SL", "UV", "SV"}:
        return 4 if keyword == "PregnancyStatus" else 0
    if vr in {"FL", "FD"}:
        return 1.5
    if vr == "AT":
        return 0x00100010
    raise ValueError(f"no synthetic value for VR {vr}")  # pragma: no cover


def _skip_table_tag(tag: int) -> bool:
    group = tag >> 16
    if group in (0x0000, 0x0002, 0x7FE0) or tag == 0xFFFCFFFC:
        # command set, file meta and pixel data cannot be written in a Part-10 body;
        # DataSetTrailingPadding would be taken for padding by other toolkits
        return True
    if not dictionary_has_tag(tag):
        return True
    keyword = keyword_for_tag(tag)
    return keyword in _PATIENT_KEYWORDS or keyword in _CT_REQUIRED


def _ct_pixels(ds: Dataset, rows: int, cols: int, seed: int) -> None:
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()


def phi_everywhere(tokens: PhiTokens, *, seed: int = 0) -> Dataset:
    """A CT image carrying a token in every PS3.15 Table E.1-1 attribute pydicom knows.

    Also plants patient-module tokens, free text that repeats the patient's tokens, overlay and
    curve groups, private blocks (``ACME_PHI_1`` in group 0009, ``GEMS_ACQU_01`` in group 0019
    with the safe element (0019,109E) = ``SAFE_VALUE_1``, an element in group 0011 with no
    creator) and nested sequences.  It is full of PHI on purpose and not a valid CT IOD.
    """
    patient = SyntheticPatient.make(tokens, seed)
    sop_instance = tokens.new_uid("SOPInstanceUID", "phi_everywhere", seed)
    ds = new_dataset(CTImageStorage, sop_instance)
    tokens.record(sop_instance, "file_meta.MediaStorageSOPInstanceUID", "uid")
    ds.file_meta.SourceApplicationEntityTitle = tokens.new_token(
        "file_meta.SourceApplicationEntityTitle"
    )
    ds.Modality = "CT"
    _ct_pixels(ds, 8, 8, seed)

    for tag in annex_e_tags():
        if _skip_table_tag(tag) or tag in ds:
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        ds.add_new(tag, vr, _table_value(tokens, tag, vr, _seg(tag), seed))

    # Patient module, with the patient's tokens repeated in free text.
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.IssuerOfPatientID = tokens.new_token("IssuerOfPatientID")
    ds.AccessionNumber = tokens.new_token("AccessionNumber", "id")
    other_ids = []
    for i in range(2):
        item = Dataset()
        item.PatientID = tokens.new_token(f"OtherPatientIDsSequence[{i}].PatientID", "id")
        item.IssuerOfPatientID = tokens.new_token(f"OtherPatientIDsSequence[{i}].IssuerOfPatientID")
        item.TypeOfPatientID = "TEXT"
        other_ids.append(item)
    ds.OtherPatientIDsSequence = other_ids
    for path, kind, value in [
        ("StudyDescription", "name", patient.family),
        ("StudyDescription", "name", patient.given),
        ("StudyDescription", "id", patient.patient_id),
        ("ImageComments", "name", patient.family),
        ("ImageComments", "name", patient.given),
        ("ImageComments", "id", patient.patient_id),
    ]:
        tokens.record(value, path, kind)
    ds.StudyDescription = f"CT for {patient.family} {patient.given} {patient.patient_id}"
    ds.ImageComments = (
        f"Patient {patient.given} {patient.family}, MRN {patient.patient_id}, born "
        f"{patient.birth_date}; images reviewed."
    )
    tokens.record(patient.birth_date, "ImageComments", "date")

    # Overlay group 6000 and (retired) curve group 5000.
    ds.add_new(0x60000010, "US", 16)  # OverlayRows
    ds.add_new(0x60000011, "US", 16)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60000022, "LO", tokens.new_token("(6000,0022)"))
    ds.add_new(0x60003000, "OW", _token_bytes(tokens.new_token("(6000,3000)"), 32))
    ds.add_new(0x60004000, "LT", tokens.new_token("(6000,4000)"))
    ds.add_new(0x50000005, "US", 1)  # CurveDimensions
    ds.add_new(0x50000010, "US", 8)  # NumberOfPoints
    ds.add_new(0x50000020, "CS", "TAC")  # TypeOfData
    ds.add_new(0x50000022, "LO", tokens.new_token("(5000,0022)"))
    ds.add_new(0x50000103, "US", 0)  # DataValueRepresentation
    ds.add_new(0x50003000, "OW", _token_bytes(tokens.new_token("(5000,3000)"), 16))

    # Private elements.
    acme = ds.private_block(0x0009, ACME_CREATOR, create=True)
    acme.add_new(0x01, "LO", tokens.new_token("(0009,1001)"))
    acme.add_new(0x02, "ST", f"Note: {tokens.new_token('(0009,1002)')}")
    acme.add_new(0x03, "OB", _token_bytes(tokens.new_token("(0009,1003)")))
    acme.add_new(0x04, "UN", _token_bytes(tokens.new_token("(0009,1004)")))
    private_item = Dataset()
    item_block = private_item.private_block(0x0009, ACME_CREATOR, create=True)
    item_block.add_new(0x01, "PN", tokens.new_name("(0009,1005)[0].(0009,1001)"))
    acme.add_new(0x05, "SQ", DicomSequence([private_item]))
    acme.add_new(0x06, "DA", tokens.new_date("(0009,1006)"))
    gems = ds.private_block(0x0019, GEMS_CREATOR, create=True)
    gems.add_new(0x9E, "LO", SAFE_PRIVATE_VALUE)  # TCIA KB: keep
    gems.add_new(0x10, "DT", tokens.new_datetime("(0019,1010)"))  # TCIA KB: delete
    gems.add_new(0xF0, "LO", tokens.new_token("(0019,10F0)"))  # not in the KB
    ds.add_new(0x00111001, "LO", tokens.new_token("(0011,1001)"))  # no private creator
    return ds
