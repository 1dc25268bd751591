"""Which operation the profile applies to a tag, shared by both engines so they cannot drift.

The dataset engine (engine.py) asks for the operation while it walks a pydicom Dataset;
the stream engine (stream.py) asks before decoding anything, to tell the elements it may
copy as bytes from those the dataset engine must see.
"""

from __future__ import annotations

import pydicom.datadict
from pydicom.datadict import dictionary_VR, keyword_for_tag

from deid_node.config import Option
from deid_node.deid.profiles import TEXT_VRS, CompiledProfile, Op, unlisted_ops

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
ID_TAGS = frozenset(t for t in (pydicom.datadict.tag_for_keyword(k) for k in _ID_KEYWORDS) if t)
# Text VRs the unlisted table covers: an attribute of these in neither table is removed.
STRING_VRS = TEXT_VRS | {"CS", "AE", "AS", "UR"}
# VRs the free-text cleaner reads under Op.CLEAN (kept text is only scrubbed, TEXT_VRS).
CLEANED_VRS = TEXT_VRS | {"AE", "PN", "UR"}
# VRs whose values the identifier collection reads wherever they are (SQ: it recurses).
COLLECTED_VRS = frozenset({"SQ", "PN", "DA"})


def dictionary_vr(tag: int) -> str:
    """The dictionary VR of a tag (the first if ambiguous), "" if unknown."""
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return ""


def is_curve_or_overlay(group: int) -> bool:
    """Curve (50xx) and overlay (60xx) groups: binary graphics, removed whole."""
    return 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E


def leaves_unchanged(op: Op, vr: str) -> bool:
    """Whether applying op to an element of this VR never changes it, whatever its value.

    Kept text (and cleaned AE/PN/UR) may be scrubbed and sequences are walked: not unchanged.
    """
    if op is Op.KEEP_VERBATIM:
        return True
    if op is Op.KEEP or op is Op.CLEAN:
        return vr not in TEXT_VRS and vr != "SQ" and (op is Op.KEEP or vr not in CLEANED_VRS)
    return False


def is_cleanable(op: Op, vr: str) -> bool:
    """Whether op on this VR only scrubs identifiers (changed only if the scrubber hits).

    Op.CLEAN is not: the free-text cleaner changes whatever it does not recognise.
    """
    return op is Op.KEEP and vr in TEXT_VRS


class OpTable:
    """The operation for each tag under one profile, the unlisted ones cached."""

    def __init__(self, profile: CompiledProfile) -> None:
        self.ops = profile.ops
        self.retain_uids = profile.has(Option.RETAIN_UIDS)
        self.full_dates = profile.has(Option.RETAIN_LONGITUDINAL_FULL_DATES)
        self.modified_dates = profile.has(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        self._unlisted: dict[tuple[int, bool], Op] = {}

    def op(self, t: int, dummy_mode: bool) -> Op:
        """The operation on public tag t (dummy_mode: inside a sequence replaced by a dummy)."""
        op = self.ops.get(t)
        if op is not None:
            return op
        if is_curve_or_overlay(t >> 16):
            # Nothing here can check binary graphics for text, so the whole curve or
            # overlay plane goes, even with clean-graphics.
            return Op.REMOVE
        key = (t, dummy_mode)
        op = self._unlisted.get(key)
        if op is None:
            op = self._default_op(t, dummy_mode)
            self._unlisted[key] = op
        return op

    def _default_op(self, t: int, dummy_mode: bool) -> Op:
        vr = dictionary_vr(t)
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
        reviewed = unlisted_ops().get(t)
        if reviewed is not None:
            return reviewed
        if vr in STRING_VRS:
            return Op.REMOVE  # text in neither table (retired, or a newer dictionary)
        return Op.KEEP


_TABLES: dict[int, tuple[CompiledProfile, OpTable]] = {}


def op_table(profile: CompiledProfile) -> OpTable:
    """The (cached) operation table of a compiled profile."""
    found = _TABLES.get(id(profile))
    if found is None or found[0] is not profile:
        if len(_TABLES) >= 64:  # profiles compiled again and again (tests): start over
            _TABLES.clear()
        found = (profile, OpTable(profile))
        _TABLES[id(profile)] = found
    return found[1]
