"""Apply a compiled profile to one dataset: recursive, keyed, fail-closed.

`deidentify_dataset()` changes the dataset in place and returns what the caller needs
(pseudonyms for the layout and audit, originals for linkage, and the byte strings that
must never appear in the output, for `verify_clean()`). Anything unexpected raises
DeidError whose message names a tag or a rule, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import pydicom.config
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
)
from pydicom.valuerep import PersonName

from deid_node import __version__
from deid_node.config import BurnedInPolicy, Option, ProfileConfig
from deid_node.deid.profiles import (
    ANNEX_E_EDITION,
    BASIC_PROFILE_CODE,
    OPTION_CODES,
    TEXT_VRS,
    CompiledProfile,
    Op,
    safe_private_elements,
)
from deid_node.deid.pseudonym import (
    date_offset_days,
    pseudo_patient_id,
    pseudo_uid,
    shift_date,
    shift_datetime,
)
from deid_node.dicom.encoding import MAX_SEQUENCE_DEPTH
from deid_node.dicom.part10 import transfer_syntax_of
from deid_node.errors import DeidError

# Values that fail validation must never reach a log or a warning: they may be PHI.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1437.1.0")  # deid-node's own root
IMPLEMENTATION_VERSION = f"DEIDNODE_{__version__}"[:16]
DUMMY_TEXT = "ANONYMIZED"
_DUMMY: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000.000000",
    "TM": "000000.00",
    "DS": "0",
    "IS": "0",
    "PN": DUMMY_TEXT,
    "UR": "",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "UN": b"",
}
_STRING_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC")
_EMPTY: dict[str, object] = {vr: "" for vr in (*_STRING_VRS, "UI", "UR", "UT")}
_MAX_LEN = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}

# Unlisted UI attributes that name a class, a syntax or a coding scheme, never an instance.
_CLASS_UID_KEYWORDS = frozenset(
    {
        "TransferSyntaxUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ContextGroupExtensionCreatorUID",
        "TemplateExtensionCreatorUID",
        "TemplateExtensionOrganizationUID",
    }
)
# Identifiers whose values are removed from any free text kept in the same object.
_ID_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "ServiceEpisodeID",
        "MedicalRecordLocator",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "RegionOfResidence",
        "CountryOfResidence",
        "PatientBirthName",
        "PatientMotherBirthName",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "PatientReligiousPreference",
        "PatientInsurancePlanCodeSequence",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
    }
)
_ID_TAGS = frozenset(t for t in (pydicom.datadict.tag_for_keyword(k) for k in _ID_KEYWORDS) if t)
# SOP classes that usually carry burned-in text: US, secondary capture, VL photo/endoscopy.
_BURNED_IN_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.77.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.2",
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
    }
)
_BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM"})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_TAIL_START = 0x7FE00008  # storage.encode_instance checks only what comes before this
# File meta elements kept; everything else in group 0002 is removed or rewritten.
_META_KEEP = frozenset({0x00020001, 0x00020002, 0x00020010})
_MIN_SCRUB_LEN = 2
_REMOVING_OPS = frozenset(
    {Op.REMOVE, Op.EMPTY, Op.DUMMY, Op.UID, Op.PATIENT_ID, Op.PATIENT_NAME, Op.REPLACE}
)
_ADDRESS_TAGS = frozenset({0x00101040, 0x00080081, 0x00080092, 0x00102154, 0x00102150, 0x00102152})
# Identifiers checked for in the output bytes (patient ID, other IDs, accession number).
_NEEDLE_ID_TAGS = frozenset({0x00100020, 0x00101000, 0x00080050})
_PATIENT_NAME_TAGS = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})
_MIN_NEEDLE_LEN = 4
_MIN_NUMERIC_NEEDLE_LEN = 6
_MIN_UID_NEEDLE_LEN = 8  # shorter 'UIDs' are junk values, not identifiers
# Placeholders written where an identity is unknown or withheld (by people, modalities and
# other de-identifiers). They identify no one: as needles they quarantine clean objects
# (a PatientName 'Anonymized' matches every ANONYMIZED dummy), as scrub words they mangle
# kept text. Compared case-insensitively with whole values and name components; real
# surnames, however short (Li, Wu, Na), stay identifiers.
NON_IDENTIFYING_VALUES: Final = frozenset(
    {
        "anon",
        "anonymised",
        "anonymized",
        "anonymous",
        "n/a",
        "none",
        "null",
        "patient",
        "phantom",
        "research",
        "test",
        "unknown",
    }
)
SURVIVED: Final = "verification: an original identifier survived in the output"


@dataclass(frozen=True)
class Originals:
    """Original identifiers, kept only for the linkage table. PHI: never log."""

    patient_id: str
    patient_name: str
    accession_number: str
    study_uid: str
    series_uid: str
    sop_uid: str
    date_shift_days: int | None  # the keyed offset applied to every date, None if unshifted


@dataclass(frozen=True)
class DeidResult:
    """What de-identifying one dataset produced."""

    dataset: Dataset
    pseudo_patient_id: str
    pseudo_study_uid: str
    pseudo_series_uid: str
    pseudo_sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    originals: Originals
    needles: Needles = field(repr=False)  # must not occur in the output


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _name_parts(value: object) -> list[str]:
    parts: list[str] = []
    for v in _values(value):
        for piece in re.split(r"[\^=\s,.]+", v):
            if len(piece) >= _MIN_SCRUB_LEN:
                parts.append(piece)
    return parts


_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _date_forms(value: str) -> list[str]:
    """A DA value (first) and the spellings a person types it in: 2021-03-04, 04/03/2021,
    3/4/2021, 4 March 2021, March 4, 2021, 04-Mar-2021 (case is ignored by the scrub)."""
    v = value.strip()
    if len(v) != 8 or not v.isdigit() or not 1 <= int(v[4:6]) <= 12:
        return []
    y, m, d = v[:4], v[4:6], v[6:]
    mi, di = str(int(m)), str(int(d))
    month = _MONTHS[int(m) - 1]
    forms = [v, *(f"{y}{s}{m}{s}{d}" for s in "-/."), *(f"{d}{s}{m}{s}{y}" for s in "/.-")]
    forms += [f"{m}/{d}/{y}", f"{mi}/{di}/{y}", f"{di}/{mi}/{y}", f"{di}.{mi}.{y}"]
    for name in dict.fromkeys((month, month[:3])):
        forms += [f"{di} {name} {y}", f"{d} {name} {y}", f"{name} {di}, {y}", f"{name} {di} {y}"]
        forms += [f"{d}-{name}-{y}", f"{di}-{name}-{y}"]
    return list(dict.fromkeys(forms))


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return ""


def _raw_vr(ds: Dataset, tag: int) -> str:
    """The element's VR without converting its value (dictionary VR for implicit/UN)."""
    elem = ds.get_item(tag)
    vr = elem.VR if isinstance(elem, RawDataElement | DataElement) else None
    if vr and vr != "UN" and " or " not in vr:
        return str(vr)
    return _dictionary_vr(tag) or (str(vr) if vr else "UN")


def _elem(ds: Dataset, tag: int) -> DataElement:
    try:
        return ds[tag]
    except Exception as exc:  # a value pydicom cannot convert: never guess, never echo it
        raise DeidError(f"unreadable value in {_tag_name(tag)} ({type(exc).__name__})") from None


def _tag_name(tag: int) -> str:
    kw = keyword_for_tag(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + kw if kw else ''}"


class _Walker:
    """One object's walk: keyed context, identifier scrubber and needles."""

    def __init__(self, profile: CompiledProfile, key: bytes, patient_identity: str) -> None:
        self.profile = profile
        self.ops = profile.ops
        self.key = key
        self.scope = profile.config.pseudonym_scope
        self.days = date_offset_days(key, self.scope, patient_identity)
        self.retain_uids = profile.has(Option.RETAIN_UIDS)
        self.full_dates = profile.has(Option.RETAIN_LONGITUDINAL_FULL_DATES)
        self.modified_dates = profile.has(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        self.scrub: re.Pattern[str] | None = None
        self.needles: set[str] = set()  # names, IDs, dates that must not survive
        self.uid_needles: set[str] = set()  # original UIDs that were replaced
        self.uid_cache: dict[str, str] = {}
        self.pseudo_pid = ""
        self.written = written_by(profile.config)
        self._unlisted: dict[tuple[int, bool], Op] = {}

    # -- identifiers ------------------------------------------------------------
    def collect(self, ds: Dataset) -> None:
        """Gather every identifying value of the object before anything changes."""
        words: set[str] = set()
        self._collect(ds, words)
        words = {w for w in words if self.written.may_identify(w)}
        if words:
            ordered = sorted(words, key=lambda w: (-len(w), w))  # same words, same (cached) regex
            alternatives = "|".join(re.escape(w) for w in ordered)
            self.scrub = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.I)

    def _collect(self, ds: Dataset, words: set[str], depth: int = 0) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            # Nothing real nests this deep, and pydicom's writer degrades badly on it.
            raise DeidError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
        for tag in list(ds.keys()):
            t = int(tag)
            if t >> 16 & 1:
                continue  # private values are removed or known safe, never scrub sources
            vr = _raw_vr(ds, t)
            if vr == "SQ":
                for item in _elem(ds, t).value or ():
                    self._collect(item, words, depth + 1)
            elif vr == "PN":
                value = _elem(ds, t).value
                if self.ops.get(t, Op.EMPTY) in _REMOVING_OPS:
                    words.update(_name_parts(value))
                # Only the patient's own names are checked in the output: other names are
                # emptied anyway, and short common words there give false alarms.
                if t in _PATIENT_NAME_TAGS and self.ops.get(t) is not Op.KEEP_VERBATIM:
                    self.needles.update(p for p in _name_parts(value) if len(p) >= _MIN_NEEDLE_LEN)
            elif vr == "DA":
                for v in _values(_elem(ds, t).value):
                    words.update(_date_forms(v))
                    if t == 0x00100030 and not self.full_dates:
                        self.needles.update(_date_forms(v)[:1])
            elif t in _ID_TAGS and self.ops.get(t) in _REMOVING_OPS:
                # Only identifiers this profile takes out: a kept InstitutionName (retain
                # institution identity) must not be scrubbed from itself.
                for v in _values(_elem(ds, t).value):
                    v = v.strip()
                    if len(v) >= _MIN_SCRUB_LEN:
                        words.add(v)
                        # Short numbers also occur as IS/DS values: checking them in the
                        # output would quarantine clean objects.
                        long_enough = len(v) >= (
                            _MIN_NUMERIC_NEEDLE_LEN if v.isdigit() else _MIN_NEEDLE_LEN
                        )
                        if long_enough and t in _NEEDLE_ID_TAGS:
                            self.needles.add(v)
                    if t in _ADDRESS_TAGS:
                        words.update(w for w in re.split(r"[\s,;^]+", v) if len(w) >= 3)

    def clean_text(self, text: str) -> str:
        """Remove the object's own identifying values from free text."""
        return self.scrub.sub("***", text) if self.scrub else text

    # -- pseudonyms ---------------------------------------------------------------
    def uid(self, value: str) -> str:
        """Keyed UID for an instance UID; registered (well-known) UIDs are kept."""
        value = value.strip("\0 ")
        if not value or value in UID_dictionary:
            return value
        new = self.uid_cache.get(value)
        if new is None:
            new = pseudo_uid(self.key, self.scope, value)
            self.uid_cache[value] = new
            if len(value) >= _MIN_UID_NEEDLE_LEN:
                self.uid_needles.add(value)
        return new

    # -- the walk -----------------------------------------------------------------
    def walk(self, ds: Dataset, dummy_mode: bool = False) -> None:
        """Apply the profile to every element of ds, recursing into sequences."""
        kept_blocks: set[tuple[int, int]] = set()
        creators: list[int] = []
        for tag in list(ds.keys()):
            t = int(tag)
            group = t >> 16
            if group & 1:
                if 0x0010 <= (t & 0xFFFF) <= 0x00FF:
                    creators.append(t)
                elif self._private(ds, t, dummy_mode):
                    kept_blocks.add((group, (t >> 8) & 0xFF))
                continue
            if (t & 0xFFFF) == 0 or group == 0x0002:
                del ds[t]  # group lengths go stale; file meta never belongs in a body
                continue
            op = self.ops.get(t)
            if op is None:
                op = self._op_unlisted(ds, t, group, dummy_mode)
            self.apply(ds, t, op, dummy_mode)
        for t in creators:
            if (t >> 16, t & 0xFF) not in kept_blocks:
                del ds[t]

    def _op_unlisted(self, ds: Dataset, t: int, group: int, dummy_mode: bool) -> Op:
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            # Curve and overlay data are binary graphics nothing here can check for text,
            # so the whole curve or overlay plane goes, even with clean-graphics.
            return Op.REMOVE
        key = (t, dummy_mode)
        op = self._unlisted.get(key)
        if op is None:
            op = self._default_op(t, dummy_mode)
            self._unlisted[key] = op
        return op

    def _default_op(self, t: int, dummy_mode: bool) -> Op:
        vr = _dictionary_vr(t)
        keyword = keyword_for_tag(t)
        if not vr or not keyword:
            return Op.REMOVE  # unknown public attribute: cannot judge it, so drop it
        if vr == "SQ":
            return Op.RECURSE
        if vr == "UI":
            if self.retain_uids or keyword.endswith("ClassUID") or keyword in _CLASS_UID_KEYWORDS:
                return Op.KEEP
            return Op.UID
        if vr == "PN":
            return Op.EMPTY
        if vr in ("DA", "DT"):
            if self.full_dates:
                return Op.KEEP
            return Op.SHIFT if self.modified_dates else Op.DUMMY
        if dummy_mode and vr in TEXT_VRS:
            return Op.DUMMY
        return Op.KEEP

    def _private(self, ds: Dataset, t: int, dummy_mode: bool) -> bool:
        """Keep a private element only if it is known safe; True if kept."""
        group, elem = t >> 16, t & 0xFFFF
        if t in self.profile.verbatim:
            return True
        if (
            not self.profile.keep_safe_private
            or elem < 0x1000
            or group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF)
        ):
            del ds[t]
            return False
        creator_tag = (group << 16) | (elem >> 8)
        creator = ds.get(creator_tag)
        name = _text(creator.value).strip().lower() if creator is not None else ""
        if not name or (group, name, elem & 0xFF) not in safe_private_elements():
            del ds[t]
            return False
        vr = _raw_vr(ds, t)
        if vr == "SQ":
            for item in _elem(ds, t).value or ():
                self.walk(item, dummy_mode)
        elif vr in TEXT_VRS:
            self._clean(ds, t)
        return True

    def apply(self, ds: Dataset, t: int, op: Op, dummy_mode: bool) -> None:
        """Carry out one operation on element t of ds."""
        if op is Op.KEEP_VERBATIM:
            return
        if op is Op.REMOVE:
            del ds[t]
            return
        if op is Op.KEEP or op is Op.CLEAN:
            vr = _raw_vr(ds, t)
            if vr in TEXT_VRS or (vr in ("AE", "PN") and op is Op.CLEAN):
                self._clean(ds, t)
            elif vr == "SQ":
                self._recurse(ds, t, dummy_mode)
            return
        if op is Op.RECURSE:
            self._recurse(ds, t, dummy_mode)
            return
        if op is Op.DUMMY_SEQUENCE:
            for item in _elem(ds, t).value or ():
                self.walk(item, True)
            return
        elem = _elem(ds, t)
        vr = elem.VR.split(" or ")[0]
        if op is Op.EMPTY:
            self._set(ds, t, vr, Sequence() if vr == "SQ" else _EMPTY.get(vr))
        elif op is Op.DUMMY:
            if vr == "SQ":
                for item in elem.value or ():
                    self.walk(item, True)
            elif vr == "UI":
                self._set(ds, t, vr, self._map_uids(elem.value))
            else:
                self._set(ds, t, vr, _DUMMY.get(vr, DUMMY_TEXT if vr in TEXT_VRS else None))
        elif op is Op.UID:
            if vr != "UI":
                raise DeidError(f"{_tag_name(t)} should hold a UID but has VR {vr}")
            self._set(ds, t, vr, self._map_uids(elem.value))
        elif op is Op.SHIFT:
            self._shift(ds, t, elem)
        elif op is Op.PATIENT_ID:
            self._set(ds, t, "LO", self.pseudo_pid)
        elif op is Op.PATIENT_NAME:
            self._set(ds, t, "PN", self.pseudo_pid)
        elif op is Op.REPLACE:
            self._set(ds, t, vr, self.profile.replace[t])
        else:  # pragma: no cover - every Op is handled above
            raise DeidError(f"no handler for operation {op}")

    def _recurse(self, ds: Dataset, t: int, dummy_mode: bool) -> None:
        keyword = keyword_for_tag(t)
        # Coded entries keep their meaning: code values are not free text.
        inner = False if keyword.endswith("CodeSequence") else dummy_mode
        for item in _elem(ds, t).value or ():
            self.walk(item, inner)

    def _clean(self, ds: Dataset, t: int) -> None:
        if self.scrub is None:
            return
        elem = _elem(ds, t)
        value = elem.value
        if not value:
            return
        if isinstance(value, PersonName):
            value = str(value)
        if isinstance(value, str):
            new: object = self.clean_text(value)
            changed = new != value
        elif isinstance(value, MultiValue | list):
            items = [self.clean_text(str(v)) for v in value]
            changed = items != [str(v) for v in value]
            new = items
        else:
            return
        if changed:
            limit = _MAX_LEN.get(elem.VR)
            if isinstance(new, str) and limit:
                new = new[:limit]
            elem.value = new

    def _map_uids(self, value: object) -> object:
        vals = _values(value)
        if not vals:
            return value
        mapped = [self.uid(v) for v in vals]
        return mapped if len(mapped) > 1 else mapped[0]

    def _shift(self, ds: Dataset, t: int, elem: DataElement) -> None:
        vr = elem.VR
        shifted: list[str] = []
        for v in _values(elem.value):
            new = (shift_date if vr == "DA" else shift_datetime)(v, self.days) if v else ""
            if new is None:
                # A value we cannot parse as a date cannot be shifted: empty it.
                self._set(ds, t, vr, None)
                return
            shifted.append(new)
        self._set(ds, t, vr, shifted if len(shifted) > 1 else (shifted[0] if shifted else None))

    @staticmethod
    def _set(ds: Dataset, t: int, vr: str, value: object) -> None:
        ds[t] = DataElement(t, vr, value)


def patient_identity(ds: Dataset) -> str:
    """The original value pseudonyms and date offsets are keyed on (PHI)."""
    pid = _text(ds.get("PatientID", "")).strip() if "PatientID" in ds else ""
    if pid:
        return "id:" + pid
    name = _text(ds.get("PatientName", "")).strip()
    birth = _text(ds.get("PatientBirthDate", "")).strip()
    return f"name:{name}|{birth}"


def burned_in_reason(ds: Dataset, has_pixels: bool | None = None) -> str | None:
    """Why this object may carry burned-in text, or None."""
    if not (has_pixels or any(t in ds for t in _PIXEL_TAGS)):
        return None
    flag = _text(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    sop_class = _text(ds.get("SOPClassUID", "")).strip()
    modality = _text(ds.get("Modality", "")).strip().upper()
    if sop_class in _BURNED_IN_CLASSES or modality in _BURNED_IN_MODALITIES:
        what = UID(sop_class).name if sop_class in UID_dictionary else f"modality {modality}"
        return f"{what} without BurnedInAnnotation = NO usually carries burned-in text"
    return None


def _required_uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds.get(keyword, "")).strip("\0 ") if keyword in ds else ""
    if not value:
        raise DeidError(f"missing {keyword}")
    return value


def deidentify_dataset(
    ds: Dataset, profile: CompiledProfile, key: bytes, *, has_pixels: bool | None = None
) -> DeidResult:
    """De-identify ds in place with the profile; raise DeidError if that is not certain.

    `has_pixels` says the object has pixel data that ds does not hold (read up to it).
    """
    try:
        return _deidentify(ds, profile, key, has_pixels)
    except DeidError:
        raise
    except Exception as exc:  # fail closed; the message carries no value
        raise DeidError(f"cannot de-identify: {type(exc).__name__}") from None


def _deidentify(
    ds: Dataset, profile: CompiledProfile, key: bytes, has_pixels: bool | None
) -> DeidResult:
    sop_class = _required_uid(ds, "SOPClassUID")
    study_uid = _required_uid(ds, "StudyInstanceUID")
    series_uid = _required_uid(ds, "SeriesInstanceUID")
    sop_uid = _required_uid(ds, "SOPInstanceUID")
    policy = profile.config.burned_in_annotation
    reason = burned_in_reason(ds, has_pixels)
    if reason and policy is not BurnedInPolicy.ALLOW:
        if policy is BurnedInPolicy.CLEAN:
            raise DeidError(f"burned-in annotation: {reason}; no pixel region rule matches it")
        raise DeidError(f"burned-in annotation: {reason}; profile policy is quarantine")
    ts = transfer_syntax_of(ds)

    identity = patient_identity(ds)
    walker = _Walker(profile, key, identity)
    walker.pseudo_pid = pseudo_patient_id(
        key, profile.config.pseudonym_scope, identity, profile.config.patient_id_prefix
    )
    originals = Originals(
        patient_id=_text(ds.get("PatientID", "")),
        patient_name=_text(ds.get("PatientName", "")),
        accession_number=_text(ds.get("AccessionNumber", "")),
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        date_shift_days=walker.days if walker.modified_dates else None,
    )
    walker.collect(ds)
    try:
        walker.walk(ds)
    except DeidError:
        raise
    except Exception as exc:  # fail closed; the message carries no value
        raise DeidError(f"cannot de-identify: {type(exc).__name__} while walking") from None

    # Under "allow" an object that may carry burned-in text goes out as it is: it must not
    # claim that the patient's identity, or its pixel data, was removed.
    _mark(ds, profile, walker, pixels_may_identify=reason is not None)
    if profile.config.trial is not None:
        _write_trial(ds, profile, walker.pseudo_pid)
    new_sop = _text(ds.get("SOPInstanceUID", "")) or originals.sop_uid
    ds.file_meta = _new_meta(ds, sop_class, new_sop, ts)
    if hasattr(ds, "preamble"):
        ds.preamble = None  # written as 128 zero bytes; dual TIFF/DICOM files hide data there
    return DeidResult(
        dataset=ds,
        pseudo_patient_id=walker.pseudo_pid,
        pseudo_study_uid=_text(ds.get("StudyInstanceUID", "")),
        pseudo_series_uid=_text(ds.get("SeriesInstanceUID", "")),
        pseudo_sop_uid=new_sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(ts),
        originals=originals,
        needles=_needles(
            walker.needles,
            walker.uid_needles,
            walker.written,
            {walker.pseudo_pid, *walker.uid_cache.values()},
        ),
    )


def _encodings(values: Iterable[str]) -> list[bytes]:
    # UTF-8 and Latin-1 cover ISO_IR 192, ISO_IR 100 and plain ASCII output. A bytes
    # pattern's re.I folds ASCII letters only, so MÜLLER needs müller as a needle of its
    # own. Sorted longest first, then by value: the same needles give the same pattern
    # text, which re caches.
    encoded = {
        form.encode(codec, "ignore")
        for v in values
        if v
        for form in ((v,) if v.isascii() else (v, v.upper(), v.lower()))
        for codec in ("utf-8", "latin-1")
    }
    encoded.discard(b"")
    return sorted(encoded, key=lambda v: (-len(v), v))


_UID_RUN = re.compile(rb"[0-9](?:[0-9.]*[0-9])?")


@dataclass(frozen=True)
class Needles:
    """An object's original identifiers, none of which may appear in its output."""

    text: re.Pattern[bytes] | None
    uids: frozenset[bytes]
    # Whole values (casefolded) the profile itself writes, and the object's pseudonyms: an
    # element holding only such values is no survivor, whatever words it shares with one.
    explained: frozenset[str] = frozenset()

    def found_in(self, encoded: bytes) -> bool:
        """True if any original identifier occurs in the encoded bytes."""
        if self.text is not None and self.text.search(encoded):
            return True
        # A UID counts as a whole run of digits and dots, so the prefix of another UID
        # is not a hit; one regex for every object instead of one alternation each.
        return bool(self.uids) and not self.uids.isdisjoint(_UID_RUN.findall(encoded))


def _needles(
    texts: set[str], uids: set[str], written: ProfileWrites, pseudonyms: set[str]
) -> Needles:
    # A 'UID' with other characters than digits and dots is searched for as text.
    odd = {u for u in uids if u.strip(".0123456789")}
    own = frozenset(p.strip().casefold() for p in pseudonyms)
    # A placeholder, or a whole value the profile writes, identifies no one. A needle that
    # is only a word of such a value (a surname "Clean", a code meaning "Clean Descriptors
    # Option") stays a needle: verify_clean tells the two places apart.
    texts = {t for t in texts | odd if written.may_identify(t) and t.strip().casefold() not in own}
    uids = uids - odd - pseudonyms - {IMPLEMENTATION_CLASS_UID}
    # Word boundaries: a surname inside an unrelated word is not a leak.
    pattern = None
    if texts:
        alt = b"|".join(re.escape(v) for v in _encodings(texts))
        pattern = re.compile(rb"(?<![A-Za-z0-9])(?:" + alt + rb")(?![A-Za-z0-9])", re.I)
    return Needles(
        pattern, frozenset(v.strip(b".") for v in _encodings(uids)), written.values | own
    )


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


_BURNED_IN_KEPT: Final = "; burned-in text not removed"


def _method_text(pixels_may_identify: bool = False) -> str:
    text = f"deid-node {__version__}: PS3.15 E.1-1 {ANNEX_E_EDITION}"
    return (text + (_BURNED_IN_KEPT if pixels_may_identify else ""))[:64]


@dataclass(frozen=True)
class ProfileWrites:
    """The values a profile writes into every object, to tell them from survivors."""

    values: frozenset[str]  # whole values, casefolded

    def may_identify(self, value: str) -> bool:
        """False for a placeholder or a value the profile writes itself (no scrub word)."""
        folded = value.strip().casefold()
        return folded not in NON_IDENTIFYING_VALUES and folded not in self.values


@lru_cache(maxsize=64)
def written_by(config: ProfileConfig) -> ProfileWrites:
    """Every text the profile writes whatever the object: dummies, replace and trial
    values, the de-identification markers and codes, the file meta texts."""
    texts = [DUMMY_TEXT, *(v for v in _DUMMY.values() if isinstance(v, str))]
    texts += [value for _, value in config.replace]
    trial = config.trial
    if trial is not None:
        texts += [trial.sponsor, trial.protocol_id, trial.protocol_name, trial.site_id]
        texts += [trial.site_name, trial.coordinating_center]
    texts += [_method_text(), _method_text(pixels_may_identify=True)]
    texts += ["YES", "NO", "DCM", "MODIFIED", "REMOVED", "UNMODIFIED"]
    for code in (BASIC_PROFILE_CODE, *(OPTION_CODES[o] for o in config.options)):
        texts += code
    texts += ["DICM", IMPLEMENTATION_VERSION]
    texts = [t for t in texts if t]
    return ProfileWrites(values=frozenset(t.strip().casefold() for t in texts))


def _mark(
    ds: Dataset, profile: CompiledProfile, walker: _Walker, *, pixels_may_identify: bool
) -> None:
    options = sorted(profile.config.options, key=lambda o: OPTION_CODES[o][0])
    if pixels_may_identify:
        options = [o for o in options if o is not Option.CLEAN_PIXEL_DATA]
    ds.PatientIdentityRemoved = "NO" if pixels_may_identify else "YES"
    ds.DeidentificationMethod = _method_text(pixels_may_identify)
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code_item(*BASIC_PROFILE_CODE)] + [_code_item(*OPTION_CODES[o]) for o in options]
    )
    if walker.full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif walker.modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"


def _write_trial(ds: Dataset, profile: CompiledProfile, pseudo_pid: str) -> None:
    trial = profile.config.trial
    assert trial is not None
    ds.ClinicalTrialSponsorName = trial.sponsor
    ds.ClinicalTrialProtocolID = trial.protocol_id
    ds.ClinicalTrialProtocolName = trial.protocol_name
    ds.ClinicalTrialSiteID = trial.site_id
    ds.ClinicalTrialSiteName = trial.site_name
    ds.ClinicalTrialSubjectID = pseudo_pid
    ds.ClinicalTrialTimePointID = ""
    ds.ClinicalTrialCoordinatingCenterName = trial.coordinating_center


def _new_meta(ds: Dataset, sop_class: str, sop_uid: str, ts: UID) -> FileMetaDataset:
    old = getattr(ds, "file_meta", None)
    meta = FileMetaDataset()
    if old is not None:
        for t in _META_KEEP:
            if t in old:
                meta[t] = old[t]
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def verify_clean(encoded: bytes, needles: Needles, dataset: Dataset) -> None:
    """Raise DeidError if any original identifier occurs in the encoded output.

    One search over the bytes; only when it hits is `dataset` (what was encoded) searched
    element by element. A hit only inside elements that hold nothing but values the
    profile writes (a surname that is also a word of a code meaning) is no survivor; any
    other hit quarantines, and the reason names the attribute, never the value. A hit no
    element explains (it spans two) fails closed.
    """
    if not needles.found_in(encoded):
        return
    try:
        where, explained = locate_survivor(dataset, needles)
    except Exception:  # fail closed: the object is refused, only the place is unknown
        where, explained = None, False
    if where is None and explained:
        return
    raise DeidError(f"{SURVIVED} ({f'in {where}' if where else 'attribute not found'})")


def locate_survivor(ds: Dataset, needles: Needles) -> tuple[str | None, bool]:
    """Where an original identifier is in the encoded elements.

    Returns the attribute as a keyword path (``ContentSequence[0].TextValue``; tags for
    private and unknown elements) or None, and whether an element holding only values
    the profile writes matched (which is no survivor).
    """
    found = _Found()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _locate(meta, needles, (False, True), None, found)
        if found.where:
            return found.where, found.explained
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    # A deflated body is verified as explicit little endian, its own encoding too.
    encoding = (UID(ts).is_implicit_VR, UID(ts).is_little_endian) if ts else (False, True)
    _locate(ds, needles, encoding, None, found, top=True)
    return found.where, found.explained


@dataclass
class _Found:
    where: str | None = None
    explained: bool = False


def _only_written(elem: DataElement | RawDataElement, explained: frozenset[str]) -> bool:
    """True if every value of the element is one the profile writes (or a pseudonym)."""
    if isinstance(elem, RawDataElement) or not explained:
        return False
    values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
    return bool(values) and all(
        isinstance(v, str | PersonName) and str(v).strip().casefold() in explained for v in values
    )


def _attribute(tag: int) -> str:
    keyword = "" if tag >> 16 & 1 else keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _locate(
    ds: Dataset,
    needles: Needles,
    encoding: tuple[bool, bool],
    charset: object,
    found: _Found,
    *,
    top: bool = False,
    path: str = "",
) -> None:
    charset = ds.get("SpecificCharacterSet", charset)  # items inherit, as the writer does
    for tag in sorted(ds.keys()):
        if top and int(tag) >= _TAIL_START:
            break  # pixel data and what follows it are not part of the checked header
        elem = ds.get_item(tag)
        name = path + _attribute(int(tag))
        if isinstance(elem, DataElement) and elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                _locate(item, needles, encoding, charset, found, path=f"{name}[{i}].")
                if found.where:
                    return
        elif needles.found_in(_encoded(elem, encoding, charset)):
            if _only_written(elem, needles.explained):
                found.explained = True
                continue
            found.where = name
            return


def _encoded(
    elem: DataElement | RawDataElement, encoding: tuple[bool, bool], charset: object
) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = encoding
    try:
        write_data_element(fp, elem, charset)  # type: ignore[arg-type]
    except Exception:  # an element the writer refuses alone cannot be the one to name
        return b""
    return fp.getvalue()
