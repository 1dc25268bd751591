"""Synthetic DICOM objects full of planted PHI tokens, for de-identification tests and benchmarks.

Everything here is made up: no value comes from a real patient.  Every identifying value that a
generator plants is a *token* recorded in a :class:`PhiTokens`, with the place it was planted
(a tag path such as ``RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0].PersonName``)
and its kind:

``text``
    a free-text token ``PHI`` + 5 digits + ``Z`` (e.g. ``PHI00042Z``), also used inside binary
    (OB/OW/UN) values, AE titles and code strings;
``id``
    the same shape, planted in an identifier attribute (PatientID, AccessionNumber, StudyID...);
``name``
    the family and the given component of a person name ``PHI00001Z^PHI00002Z`` (each component
    is recorded, never the whole name);
``date``
    a valid DA (``YYYYMMDD``), TM (``HHMMSS.ffffff``) or DT (``YYYYMMDDHHMMSS.ffffff``) value;
``uid``
    an original UID made by :func:`pydicom.uid.generate_uid` (root ``1.2.826.0.1.3680043.8.498.``,
    never ``2.25.``, so it cannot be mistaken for the pseudonyms a de-identifier produces).

All values recorded in one :class:`PhiTokens` are distinct and none is a substring of another,
so a test can search the bytes of an output file for every value and attribute each hit.

Generators are deterministic for a given ``seed`` and token counter.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
)
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

__all__ = [
    "KINDS",
    "PhiTokens",
    "PlantedToken",
    "SyntheticPatient",
    "annex_e_tags",
    "ct_series",
    "iter_ct_series",
    "phi_everywhere",
    "rt_structure_set",
    "secondary_capture",
    "sr_document",
    "us_multiframe",
    "write_bad_files",
    "write_files",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
ANNEX_E_CSV = REPO_ROOT / "deid_node" / "data" / "annex_e.csv"
ANNEX_E_JSON = Path("/work/shared/reference/ps3.15-table-E.1-1-2024b.json")

#: UID root of every UID made here (pydicom's own root, as generate_uid uses by default).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["deid-node synthetic implementation"])
IMPLEMENTATION_VERSION_NAME = "DEIDSYNTH_1"

KINDS = ("text", "name", "id", "date", "uid")
TOKEN_RE = re.compile(r"PHI\d{5}Z")

# Private blocks planted by phi_everywhere.
ACME_CREATOR = "ACME_PHI_1"
GEMS_CREATOR = "GEMS_ACQU_01"
SAFE_PRIVATE_VALUE = "SAFE_VALUE_1"


# --------------------------------------------------------------------------------------------
# Token registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantedToken:
    """One planting: ``value`` was written at ``path``; ``kind`` is one of :data:`KINDS`."""

    value: str
    path: str
    kind: str


class PhiTokens:
    """Makes PHI tokens and records every place one was planted.

    A value may be planted in several places (the patient's name tokens reappear in free text);
    each place is one :class:`PlantedToken` in :attr:`records`.  New values are guaranteed
    distinct from, and neither a substring nor a superstring of, every value already recorded.
    """

    def __init__(self, start: int = 1) -> None:
        if not 0 < start < 100_000:
            raise ValueError("start must be in 1..99999")
        self._counter = start
        self._records: list[PlantedToken] = []
        self._seen: set[tuple[str, str]] = set()
        self._kind: dict[str, str] = {}  # value -> kind, in first-planting order
        self._non_token: list[str] = []  # dates and UIDs, for the substring check
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._uid_attempt = 0

    # ---- queries ---------------------------------------------------------------------------

    @property
    def records(self) -> list[PlantedToken]:
        """Every planting, in order."""
        return list(self._records)

    def values(self, kind: str | None = None) -> list[str]:
        """Distinct planted values (of one kind if given), in first-planting order."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return [v for v, k in self._kind.items() if kind is None or k == kind]

    def kind_of(self, value: str) -> str:
        return self._kind[value]

    def paths(self, value: str) -> list[str]:
        """Every path where ``value`` was planted."""
        return [r.path for r in self._records if r.value == value]

    def find_in(self, data: bytes | str) -> list[str]:
        """The planted values that occur in ``data`` (e.g. the bytes of an output file)."""
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        found = {m for m in TOKEN_RE.findall(text) if m in self._kind}
        found.update(v for v in self._non_token if v in text)
        return [v for v in self._kind if v in found]

    def __len__(self) -> int:
        return len(self._kind)

    def __contains__(self, value: object) -> bool:
        return value in self._kind

    def __iter__(self) -> Iterator[PlantedToken]:
        return iter(self._records)

    def __repr__(self) -> str:
        counts = {k: len(self.values(k)) for k in KINDS}
        return f"PhiTokens({len(self)} values, {len(self._records)} plantings, {counts})"

    # ---- planting --------------------------------------------------------------------------

    def record(self, value: str, path: str, kind: str) -> str:
        """Record that ``value`` (already known, or made elsewhere) was planted at ``path``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        known = self._kind.get(value)
        if known is None:
            self._kind[value] = kind
            if not TOKEN_RE.fullmatch(value):
                self._non_token.append(value)
        elif known != kind:
            raise ValueError(f"{value!r} was recorded as {known}, not {kind}")
        if (value, path) not in self._seen:
            self._seen.add((value, path))
            self._records.append(PlantedToken(value, path, kind))
        return value

    def new_token(self, path: str, kind: str = "text") -> str:
        """A fresh ``PHInnnnnZ`` token planted at ``path``."""
        if self._counter > 99_999:
            raise RuntimeError("PhiTokens ran out of 5-digit tokens")
        token = f"PHI{self._counter:05d}Z"
        self._counter += 1
        return self.record(token, path, kind)

    def new_name(self, path: str) -> str:
        """A fresh PN value ``FAMILY^GIVEN`` made of two tokens (both recorded as ``name``)."""
        family = self.new_token(f"{path}^family", "name")
        given = self.new_token(f"{path}^given", "name")
        return f"{family}^{given}"

    def new_date(self, path: str, *, start: dt.date = dt.date(1960, 1, 1)) -> str:
        """A fresh valid DA value on or after ``start``."""

        def candidates() -> Iterator[str]:
            day = start
            while True:
                yield day.strftime("%Y%m%d")
                day += dt.timedelta(days=1)

        return self._fresh(candidates(), path)

    def new_time(self, path: str, *, start: dt.time = dt.time(8, 0)) -> str:
        """A fresh valid TM value ``HHMMSS.ffffff`` (the fraction keeps it distinctive)."""
        base = start.hour * 3600 + start.minute * 60 + start.second

        def candidates() -> Iterator[str]:
            k = 0
            while True:
                secs = (base + 97 * k) % 86_400
                frac = (104_729 * (k + 1) + len(self._kind)) % 1_000_000
                yield f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.{frac:06d}"
                k += 1

        return self._fresh(candidates(), path)

    def new_datetime(self, path: str, *, start: dt.date = dt.date(1971, 1, 1)) -> str:
        """A fresh valid DT value ``YYYYMMDDHHMMSS.ffffff``."""

        def candidates() -> Iterator[str]:
            k = 0
            while True:
                day = start + dt.timedelta(days=k)
                secs = (9 * 3600 + 613 * k) % 86_400
                frac = (7_919 * (k + 1)) % 1_000_000
                yield (
                    f"{day:%Y%m%d}{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.{frac:06d}"
                )
                k += 1

        return self._fresh(candidates(), path)

    def new_uid(self, path: str, *entropy: object) -> str:
        """A fresh original UID, deterministic for the given entropy and token state."""

        def candidates() -> Iterator[str]:
            attempt = 0
            while True:
                srcs = [str(e) for e in entropy] + [path, str(attempt)]
                yield generate_uid(prefix=UID_PREFIX, entropy_srcs=srcs)
                attempt += 1

        return self._fresh(candidates(), path, kind="uid")

    def _fresh(self, candidates: Iterator[str], path: str, kind: str = "date") -> str:
        for value in candidates:
            if value in self._kind:
                continue
            if any(value in other or other in value for other in self._non_token):
                continue
            return self.record(value, path, kind)
        raise AssertionError("unreachable")  # pragma: no cover

    def memo(self, key: tuple[Any, ...], factory: Callable[[], Any]) -> Any:
        """Per-registry cache, so objects of one study share study-level values."""
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]


# --------------------------------------------------------------------------------------------
# Patients and common modules
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticPatient:
    """A made-up patient whose identifying values are tokens of ``tokens``."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    tokens: PhiTokens = field(default_factory=PhiTokens, repr=False, compare=False)
    seed: int = 0

    @classmethod
    def make(cls, tokens: PhiTokens, seed: int = 0) -> SyntheticPatient:
        name = tokens.new_name("PatientName")
        patient_id = tokens.new_token("PatientID", "id")
        start = dt.date(1940 + seed % 50, 1 + seed % 12, 1 + seed % 28)
        birth_date = tokens.new_date("PatientBirthDate", start=start)
        sex = "FMO"[seed % 3] if seed % 7 == 6 else "MF"[seed % 2]
        return cls(name, patient_id, birth_date, sex, tokens, seed)

    @property
    def family(self) -> str:
        return self.name.split("^")[0]

    @property
    def given(self) -> str:
        parts = self.name.split("^")
        return parts[1] if len(parts) > 1 else ""

    def age_on(self, date: str) -> str:
        """PatientAge (AS) on a DA date."""
        born = dt.datetime.strptime(self.birth_date, "%Y%m%d").date()
        day = dt.datetime.strptime(date, "%Y%m%d").date()
        years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        return f"{max(years, 0):03d}Y"


@dataclass(frozen=True)
class _Study:
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    referring: str
    institution: str
    description: str


# Token registry of each study made here, so that rt_structure_set(ct) can plant new tokens in
# the registry of the CT's patient.
_STUDY_TOKENS: weakref.WeakValueDictionary[str, PhiTokens] = weakref.WeakValueDictionary()


def _study(patient: SyntheticPatient, study_uid: str | None, seed: int, description: str) -> _Study:
    """Study-level values shared by every object of one study (memoised per token registry).

    Without ``study_uid`` the study is the patient's study for ``seed``; the first object made
    for a study decides its values (including the description).
    """
    tokens = patient.tokens
    if study_uid is None:
        uid: str = tokens.memo(
            ("study", patient.patient_id, seed),
            lambda: tokens.new_uid("StudyInstanceUID", "study", patient.patient_id, seed),
        )
    else:
        uid = tokens.record(study_uid, "StudyInstanceUID", "uid")

    def make() -> _Study:
        start = dt.date(2021 + seed % 4, 1 + seed % 12, 1 + seed % 28)
        return _Study(
            uid=uid,
            date=tokens.new_date("StudyDate", start=start),
            time=tokens.new_time("StudyTime", start=dt.time(7 + seed % 12, 30)),
            accession=tokens.new_token("AccessionNumber", "id"),
            study_id=tokens.new_token("StudyID", "id"),
            referring=tokens.new_name("ReferringPhysicianName"),
            institution=tokens.new_token("InstitutionName"),
            description=description,
        )

    result: _Study = tokens.memo(("study-uid", uid), make)
    _STUDY_TOKENS[uid] = tokens
    return result


def _new_dataset(sop_class: str, sop_instance: str) -> Dataset:
    """An empty dataset with Part-10 file meta (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _patient_and_study(ds: Dataset, patient: SyntheticPatient, study: _Study) -> None:
    tokens = patient.tokens
    for value, path, kind in [
        (patient.family, "PatientName^family", "name"),
        (patient.given, "PatientName^given", "name"),
        (patient.patient_id, "PatientID", "id"),
        (patient.birth_date, "PatientBirthDate", "date"),
    ]:
        if value:
            tokens.record(value, path, kind)
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.ReferringPhysicianName = study.referring
    ds.PatientAge = patient.age_on(study.date)
    ds.InstitutionName = study.institution
    ds.StudyDescription = study.description


def _equipment(ds: Dataset, tokens: PhiTokens, *, model: str, path_prefix: str = "") -> None:
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = tokens.new_token(f"{path_prefix}DeviceSerialNumber", "id")
    ds.StationName = tokens.new_token(f"{path_prefix}StationName")
    ds.SoftwareVersions = "SYN 1.0"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --------------------------------------------------------------------------------------------
# PS3.15 Table E.1-1
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# phi_everywhere
# --------------------------------------------------------------------------------------------

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


def _join(prefix: str, tag: int) -> str:
    return f"{prefix}.{_seg(tag)}" if prefix else _seg(tag)


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
    protocol = _code("SYN-CT-01", "99SYN", "Synthetic CT protocol")
    context = Dataset()
    context.ValueType = "PNAME"
    context.ConceptNameCodeSequence = [_code("121008", "DCM", "Person Observer Name")]
    deep = f"{path}[0].ScheduledProtocolCodeSequence[0].ProtocolContextSequence[0]"
    context.PersonName = tokens.new_name(f"{deep}.PersonName")
    protocol.ProtocolContextSequence = [context]
    item.ScheduledProtocolCodeSequence = [protocol]
    return DicomSequence([item])


def _content_items(tokens: PhiTokens, path: str, seed: int) -> DicomSequence:
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    mention = tokens.new_token(f"{path}[0].TextValue")
    text.TextValue = f"Findings discussed with Dr {mention} by phone."
    pname = Dataset()
    pname.RelationshipType = "HAS OBS CONTEXT"
    pname.ValueType = "PNAME"
    pname.ConceptNameCodeSequence = [_code("121008", "DCM", "Person Observer Name")]
    pname.PersonName = tokens.new_name(f"{path}[1].PersonName")
    date = Dataset()
    date.RelationshipType = "HAS OBS CONTEXT"
    date.ValueType = "DATE"
    date.ConceptNameCodeSequence = [_code("111060", "DCM", "Study Date")]
    date.Date = tokens.new_date(f"{path}[2].Date")
    uidref = Dataset()
    uidref.RelationshipType = "HAS OBS CONTEXT"
    uidref.ValueType = "UIDREF"
    uidref.ConceptNameCodeSequence = [_code("110180", "DCM", "Study Instance UID")]
    uidref.UID = tokens.new_uid(f"{path}[3].UID", "content", seed)
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ContinuityOfContent = "SEPARATE"
    container.ConceptNameCodeSequence = [_code("121070", "DCM", "Findings")]
    inner = Dataset()
    inner.RelationshipType = "CONTAINS"
    inner.ValueType = "TEXT"
    inner.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
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


def _table_value(tokens: PhiTokens, tag: int, vr: str, path: str, seed: int) -> Any:
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
    ds = _new_dataset(CTImageStorage, sop_instance)
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


# --------------------------------------------------------------------------------------------
# Realistic objects
# --------------------------------------------------------------------------------------------


def _phantom(rows: int, cols: int, rng: np.random.Generator, z: float) -> np.ndarray:
    """A CT slice (stored values, HU + 1024): air, an elliptical body, a bone ring, noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    r = np.hypot((x - cx) / (0.42 * cols), (y - cy) / (0.34 * rows))
    scale = 1.0 - 0.15 * np.sin(z / 40.0) ** 2
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    hu[r < scale] = 40.0
    hu[(r > 0.8 * scale) & (r < 0.88 * scale)] = 700.0
    lesion = np.hypot(x - cx - 0.1 * cols, y - cy) < 0.05 * cols
    hu[lesion & (r < scale)] = 90.0
    hu += rng.normal(0.0, 12.0, size=(rows, cols)).astype(np.float32)
    return np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)


def ct_series(
    n: int,
    *,
    patient: SyntheticPatient,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> list[Dataset]:
    """``n`` axial CT slices of one series (CT Image Storage, 16-bit, Explicit VR LE).

    Same Study/Series/FrameOfReference UID, InstanceNumber 1..n, 2.5 mm slices, pixel values
    of a noisy body phantom (12 bits stored, RescaleIntercept -1024).  Identifying values
    (patient, dates, times, accession, station, institution, operator, UIDs) are tokens of
    ``patient.tokens``.  Valid per dciodvfy.
    """
    return list(
        iter_ct_series(n, patient=patient, study_uid=study_uid, rows=rows, cols=cols, seed=seed)
    )


def iter_ct_series(
    n: int,
    *,
    patient: SyntheticPatient,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> Iterator[Dataset]:
    """Like :func:`ct_series`, one slice at a time (for series too large to hold in memory)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    if rows < 8 or cols < 8:
        raise ValueError("rows and cols must be >= 8")
    tokens = patient.tokens
    study = _study(patient, study_uid, seed, "CT CHEST WITH CONTRAST")
    series_uid = tokens.new_uid("SeriesInstanceUID", "ct series", study.uid, seed)
    series = _CTSeries(
        uid=series_uid,
        frame_uid=tokens.new_uid("FrameOfReferenceUID", "ct frame", series_uid),
        time=tokens.new_time("SeriesTime", start=dt.time(9, 15)),
        operator=tokens.new_name("OperatorsName"),
        station=tokens.new_token("StationName"),
        serial=tokens.new_token("DeviceSerialNumber", "id"),
    )
    return _ct_slices(n, patient, study, series, rows, cols, seed)


@dataclass(frozen=True)
class _CTSeries:
    uid: str
    frame_uid: str
    time: str
    operator: str
    station: str
    serial: str


def _ct_slices(
    n: int,
    patient: SyntheticPatient,
    study: _Study,
    series: _CTSeries,
    rows: int,
    cols: int,
    seed: int,
) -> Iterator[Dataset]:
    tokens = patient.tokens
    series_uid, frame_uid = series.uid, series.frame_uid
    series_date, series_time = study.date, series.time
    operator, station, serial = series.operator, series.station, series.serial
    thickness = 2.5
    spacing = 300.0 / max(rows, cols)
    rng = np.random.default_rng(seed)
    for i in range(n):
        z = -thickness * i
        sop_uid = tokens.new_uid("SOPInstanceUID", "ct slice", series_uid, i)
        ds = _new_dataset(CTImageStorage, sop_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceCreationDate = series_date
        ds.InstanceCreationTime = series_time
        _patient_and_study(ds, patient, study)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 2
        ds.SeriesDate = series_date
        ds.SeriesTime = series_time
        ds.SeriesDescription = "AXIAL 2.5MM"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.OperatorsName = operator
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "ACME Medical Systems"
        ds.ManufacturerModelName = "Synthetica CT 64"
        ds.DeviceSerialNumber = serial
        ds.StationName = station
        ds.SoftwareVersions = "SYN 1.0"
        ds.AcquisitionNumber = 1
        ds.AcquisitionDate = series_date
        ds.AcquisitionTime = series_time
        ds.ContentDate = series_date
        ds.ContentTime = series_time
        ds.InstanceNumber = i + 1
        ds.PatientOrientation = ""
        ds.ImagePositionPatient = [f"{-spacing * (cols - 1) / 2:.4f}", "-150.0", f"{z:.2f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.2f}"
        ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
        ds.SliceThickness = f"{thickness}"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = f"{spacing * cols:.1f}"
        ds.XRayTubeCurrent = 250
        ds.ExposureTime = 500
        ds.ConvolutionKernel = "STANDARD"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = _phantom(rows, cols, rng, z).tobytes()
        ds["PixelData"].VR = "OW"
        for path, value, kind in [
            ("file_meta.MediaStorageSOPInstanceUID", sop_uid, "uid"),
            ("AcquisitionDate", series_date, "date"),
            ("ContentDate", series_date, "date"),
            ("SeriesDate", series_date, "date"),
            ("InstanceCreationDate", series_date, "date"),
            ("AcquisitionTime", series_time, "date"),
            ("ContentTime", series_time, "date"),
            ("InstanceCreationTime", series_time, "date"),
        ]:
            tokens.record(value, path, kind)
        yield ds


def rt_structure_set(ct: Sequence[Dataset], *, tokens: PhiTokens | None = None) -> Dataset:
    """RT Structure Set referencing every slice of the CT series ``ct`` (same patient/study).

    Two ROIs (BODY and GTV) with one closed planar contour per slice.  New identifying values
    (operator, ROI interpreter, dates, UIDs) are planted as tokens of ``tokens``, by default the
    registry of the patient the CT series was made for.
    """
    if not ct:
        raise ValueError("rt_structure_set needs at least one CT slice")
    first = ct[0]
    if tokens is None:
        tokens = _STUDY_TOKENS.get(str(first.StudyInstanceUID)) or PhiTokens(start=90_000)
    sop_uid = tokens.new_uid("SOPInstanceUID", "rtstruct", first.SeriesInstanceUID)
    ds = _new_dataset(RTStructureSetStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "StudyDescription",
        "InstitutionName",
    ):
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "rtstruct series", sop_uid)
    ds.SeriesNumber = 90
    ds.SeriesDescription = "Structure set"
    ds.OperatorsName = tokens.new_name("OperatorsName")
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = "Synthetica Contour"
    ds.StationName = tokens.new_token("StationName")
    ds.SoftwareVersions = "SYN 1.0"
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "SYN_RS"
    ds.StructureSetName = "Synthetic structures"
    ds.StructureSetDate = tokens.new_date("StructureSetDate", start=dt.date(2024, 2, 1))
    ds.StructureSetTime = tokens.new_time("StructureSetTime", start=dt.time(16, 0))

    frame_uid = first.FrameOfReferenceUID
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    contour_images = []
    for sl in ct:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sl.SOPClassUID
        ref.ReferencedSOPInstanceUID = sl.SOPInstanceUID
        contour_images.append(ref)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = contour_images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Mgmt (retired)
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]

    rows, cols = int(first.Rows), int(first.Columns)
    spacing = [float(v) for v in first.PixelSpacing]
    origin = [float(v) for v in first.ImagePositionPatient]
    cx = origin[0] + spacing[1] * (cols - 1) / 2
    cy = origin[1] + spacing[0] * (rows - 1) / 2
    rois = [
        (1, "BODY", "EXTERNAL", [0, 255, 0], 0.40 * cols * spacing[1], 0.32 * rows * spacing[0]),
        (2, "GTV", "GTV", [255, 0, 0], 0.05 * cols * spacing[1], 0.05 * rows * spacing[0]),
    ]
    ss_rois, roi_contours, observations = [], [], []
    for number, name, interpreted, color, ax, ay in rois:
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(roi)
        contours = []
        for sl in ct:
            z = float(sl.ImagePositionPatient[2])
            angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            shift = 0.1 * cols * spacing[1] if name == "GTV" else 0.0
            points = []
            for a in angles:
                points += [
                    f"{cx + shift + ax * np.cos(a):.2f}",
                    f"{cy + ay * np.sin(a):.2f}",
                    f"{z:.2f}",
                ]
            img = Dataset()
            img.ReferencedSOPClassUID = sl.SOPClassUID
            img.ReferencedSOPInstanceUID = sl.SOPInstanceUID
            contour = Dataset()
            contour.ContourImageSequence = [img]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(angles)
            contour.ContourData = points
            contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = color
        roi_contour.ContourSequence = contours
        roi_contours.append(roi_contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = interpreted
        obs.ROIInterpreter = tokens.new_name(
            f"RTROIObservationsSequence[{number - 1}].ROIInterpreter"
        )
        observations.append(obs)
    ds.StructureSetROISequence = ss_rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def sr_document(
    patient: SyntheticPatient, study_uid: str | None = None, *, seed: int = 0
) -> Dataset:
    """A Basic Text SR report whose TEXT items mention the patient's name and ID tokens.

    Content: TEXT (history, mentions the patient), a CONTAINER of findings with TEXT, PNAME
    (observer), DATE (study date) and UIDREF (study UID) items; verified by a token observer.
    """
    tokens = patient.tokens
    study = _study(patient, study_uid, seed, "CT CHEST WITH CONTRAST")
    sop_uid = tokens.new_uid("SOPInstanceUID", "sr", study.uid, seed)
    ds = _new_dataset(BasicTextSRStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    _patient_and_study(ds, patient, study)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "sr series", sop_uid)
    ds.SeriesNumber = 99
    ds.SeriesDescription = "Report"
    ds.ReferencedPerformedProcedureStepSequence = []
    _equipment(ds, tokens, model="Synthetica Reporting")
    ds.InstanceNumber = 1
    content_date = tokens.new_date("ContentDate", start=dt.date(2024, 3, 1))
    ds.ContentDate = content_date
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(17, 0))
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = tokens.new_name(
        "VerifyingObserverSequence[0].VerifyingObserverName"
    )
    verifier.VerifyingObserverIdentificationCodeSequence = []
    verifier.VerifyingOrganization = tokens.new_token(
        "VerifyingObserverSequence[0].VerifyingOrganization"
    )
    verifier.VerificationDateTime = tokens.new_datetime(
        "VerifyingObserverSequence[0].VerificationDateTime", start=dt.date(2024, 3, 2)
    )
    ds.VerifyingObserverSequence = [verifier]
    ds.PerformedProcedureCodeSequence = []

    def item(relationship: str, value_type: str, code: Dataset) -> Dataset:
        it = Dataset()
        it.RelationshipType = relationship
        it.ValueType = value_type
        it.ConceptNameCodeSequence = [code]
        return it

    observer = item("HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name"))
    observer.PersonName = tokens.new_name("ContentSequence[0].PersonName")
    history = item("CONTAINS", "TEXT", _code("121060", "DCM", "History"))
    for value, kind in [
        (patient.family, "name"),
        (patient.given, "name"),
        (patient.patient_id, "id"),
        (patient.birth_date, "date"),
    ]:
        tokens.record(value, "ContentSequence[1].TextValue", kind)
    history.TextValue = (
        f"{patient.given} {patient.family} (MRN {patient.patient_id}, DOB {patient.birth_date}) "
        "presents with cough for three weeks."
    )
    findings = item("CONTAINS", "CONTAINER", _code("121070", "DCM", "Findings"))
    findings.ContinuityOfContent = "SEPARATE"
    finding = item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"))
    for value, kind in [(patient.family, "name"), (patient.patient_id, "id")]:
        tokens.record(value, "ContentSequence[2].ContentSequence[0].TextValue", kind)
    contact = tokens.new_token("ContentSequence[2].ContentSequence[0].TextValue")
    finding.TextValue = (
        f"No acute abnormality for {patient.family} ({patient.patient_id}). "
        f"Result phoned to {contact}."
    )
    findings.ContentSequence = [finding]
    date = item("HAS OBS CONTEXT", "DATE", _code("111060", "DCM", "Study Date"))
    tokens.record(study.date, "ContentSequence[3].Date", "date")
    date.Date = study.date
    uidref = item("HAS OBS CONTEXT", "UIDREF", _code("110180", "DCM", "Study Instance UID"))
    tokens.record(study.uid, "ContentSequence[4].UID", "uid")
    uidref.UID = study.uid
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [observer, history, findings, date, uidref]
    return ds


def _burn_banner(pixels: np.ndarray, value: int | Sequence[int]) -> None:
    """Marks a text-like banner at the top left, as burned-in annotations look."""
    h, w = pixels.shape[0], pixels.shape[1]
    bar = max(3, h // 10)
    for k in range(0, w // 2, 4):
        pixels[1 : 1 + bar, k : k + 2] = value


def us_multiframe(
    patient: SyntheticPatient,
    frames: int = 3,
    rows: int = 48,
    cols: int = 64,
    burned_in: str | None = None,
    *,
    study_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Ultrasound Multi-frame Image Storage, RGB 8-bit; BurnedInAnnotation only when given."""
    tokens = patient.tokens
    study = _study(patient, study_uid, seed, "US ABDOMEN")
    sop_uid = tokens.new_uid("SOPInstanceUID", "us", study.uid, seed)
    ds = _new_dataset(UltrasoundMultiFrameImageStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    _patient_and_study(ds, patient, study)
    ds.Modality = "US"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "us series", sop_uid)
    ds.SeriesNumber = 1
    _equipment(ds, tokens, model="Synthetica Sono")
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = study.date
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(11, 0))
    tokens.record(study.date, "ContentDate", "date")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "33.3"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    fan = (np.hypot(x - cols / 2, y) < 0.95 * rows) & (np.abs(x - cols / 2) < y + 2)
    pixels = np.zeros((frames, rows, cols, 3), dtype=np.uint8)
    for f in range(frames):
        speckle = rng.gamma(2.0, 40.0, size=(rows, cols)).clip(0, 255).astype(np.uint8)
        for c in range(3):
            pixels[f, :, :, c] = np.where(fan, speckle, 0)
        if burned_in is not None and burned_in.upper() == "YES":
            _burn_banner(pixels[f], [255, 255, 0])
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def secondary_capture(
    patient: SyntheticPatient,
    burned_in: str | None = None,
    *,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> Dataset:
    """Secondary Capture Image Storage, MONOCHROME2 8-bit; BurnedInAnnotation only when given."""
    tokens = patient.tokens
    study = _study(patient, study_uid, seed, "SCREEN CAPTURE")
    sop_uid = tokens.new_uid("SOPInstanceUID", "sc", study.uid, seed)
    ds = _new_dataset(SecondaryCaptureImageStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    _patient_and_study(ds, patient, study)
    ds.Modality = "OT"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "sc series", sop_uid)
    ds.SeriesNumber = 300
    ds.ConversionType = "WSD"
    _equipment(ds, tokens, model="Synthetica Workstation")
    ds.SecondaryCaptureDeviceManufacturer = "ACME Medical Systems"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = study.date
    tokens.record(study.date, "ContentDate", "date")
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(12, 0))
    ds.DateOfSecondaryCapture = study.date
    tokens.record(study.date, "DateOfSecondaryCapture", "date")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    pixels = ((x + y) * 255 // max(rows + cols - 2, 1)).astype(np.uint8)
    pixels = np.clip(pixels + rng.integers(0, 8, size=(rows, cols)), 0, 255).astype(np.uint8)
    if burned_in is not None and burned_in.upper() == "YES":
        _burn_banner(pixels, 255)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_files(datasets: Iterable[Dataset], folder: str | Path) -> list[Path]:
    """Writes each dataset as ``<folder>/<n>.dcm`` (n = 1, 2, ...) as a Part-10 file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _element_offset(data: bytes, tag: int) -> int:
    """Offset of an explicit-VR little-endian element header (first occurrence)."""
    needle = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    offset = data.find(needle, 132)
    if offset < 0 or not data[offset + 4 : offset + 6].isalpha():
        raise ValueError(f"tag {tag:08X} not found")
    return offset


def write_bad_files(folder: str | Path, *, tokens: PhiTokens | None = None) -> dict[str, Path]:
    """Files a receiver must reject or quarantine, by name.

    ``truncated``        a valid CT file cut in the middle of the PatientName value;
    ``truncated_pixels`` a valid CT file cut in the middle of its pixel data;
    ``garbage``          random bytes;
    ``text``             a plain text file;
    ``no_sop_instance_uid`` a Part-10 file whose dataset lacks SOPInstanceUID;
    ``bad_length``       Rows (US) encoded with a 3-byte value;
    ``wrong_vr``         PatientName encoded with VR US and a 3-byte value;
    ``empty``            a zero-byte file.

    Beware: pydicom's ``dcmread`` reads ``truncated`` and ``truncated_pixels`` without raising
    (it returns the elements before the cut), and reads ``no_sop_instance_uid`` fine; it raises
    ``InvalidDicomError`` for ``garbage``, ``text`` and ``empty`` and ``BytesLengthException``
    for ``bad_length`` and ``wrong_vr``.  The files carry tokens of ``tokens`` when given.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = tokens if tokens is not None else PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=1)
    ct = ct_series(1, patient=patient, rows=16, cols=16, seed=1)[0]
    good = folder / "_good.dcm"
    ct.save_as(good, enforce_file_format=True)
    data = good.read_bytes()
    good.unlink()
    out: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        path = folder / f"{name}.dcm"
        path.write_bytes(content)
        out[name] = path

    name_at = _element_offset(data, 0x00100010)
    name_len = int.from_bytes(data[name_at + 6 : name_at + 8], "little")
    put("truncated", data[: name_at + 8 + name_len // 2])
    pixels_at = _element_offset(data, 0x7FE00010)
    put("truncated_pixels", data[: pixels_at + 12 + 100])
    put("garbage", np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    put("text", b"This is not a DICOM file.\nPatient: nobody\n" * 20)
    no_uid = ct.copy()
    del no_uid.SOPInstanceUID
    path = folder / "no_sop_instance_uid.dcm"
    no_uid.save_as(path, enforce_file_format=True)
    out["no_sop_instance_uid"] = path
    rows_at = _element_offset(data, 0x00280010)
    bad_rows = data[rows_at : rows_at + 4] + b"US" + (3).to_bytes(2, "little") + b"\x10\x00\x00"
    put("bad_length", data[:rows_at] + bad_rows + data[rows_at + 10 :])
    wrong = data[name_at : name_at + 4] + b"US" + (3).to_bytes(2, "little") + b"\x01\x02\x03"
    put("wrong_vr", data[:name_at] + wrong + data[name_at + 8 + name_len :])
    put("empty", b"")
    return out
