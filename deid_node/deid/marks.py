"""What every de-identified object says about itself: PS3.15 markers and codes, the trial
modules, a new file meta."""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from deid_node import __version__
from deid_node.config import Option
from deid_node.deid.profiles import (
    ANNEX_E_EDITION,
    BASIC_PROFILE_CODE,
    OPTION_CODES,
    CompiledProfile,
)

IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1437.1.0")  # deid-node's own root
IMPLEMENTATION_VERSION = f"DEIDNODE_{__version__}"[:16]
# File meta elements kept; everything else in group 0002 is removed or rewritten.
_META_KEEP = frozenset({0x00020001, 0x00020002, 0x00020010})


def code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


_BURNED_IN_KEPT: Final = "; burned-in text not removed"


def method_text(pixels_may_identify: bool = False) -> str:
    text = f"deid-node {__version__}: PS3.15 E.1-1 {ANNEX_E_EDITION}"
    return (text + (_BURNED_IN_KEPT if pixels_may_identify else ""))[:64]


def mark(ds: Dataset, profile: CompiledProfile, *, dates: str, pixels_may_identify: bool) -> None:
    """Write PatientIdentityRemoved, the method and its codes; `dates` is what became of
    them (UNMODIFIED, MODIFIED or REMOVED: LongitudinalTemporalInformationModified).

    113101 (Clean Pixel Data) is never written here: only :func:`mark_pixels` writes it,
    on an object whose pixels were cleaned.
    """
    options = sorted(profile.config.options, key=lambda o: OPTION_CODES[o][0])
    options = [o for o in options if o is not Option.CLEAN_PIXEL_DATA]
    ds.PatientIdentityRemoved = "NO" if pixels_may_identify else "YES"
    ds.DeidentificationMethod = method_text(pixels_may_identify)
    ds.DeidentificationMethodCodeSequence = Sequence(
        [code_item(*BASIC_PROFILE_CODE)] + [code_item(*OPTION_CODES[o]) for o in options]
    )
    ds.LongitudinalTemporalInformationModified = dates


def mark_pixels(ds: Dataset, *, cleaned: bool) -> None:
    """After the pixels were looked at and found free of text: BurnedInAnnotation NO, and
    113101 (Clean Pixel Data) when text was blanked to make them so."""
    ds.BurnedInAnnotation = "NO"
    codes = ds.DeidentificationMethodCodeSequence
    if cleaned and not any(item.get("CodeValue") == "113101" for item in codes):
        codes.insert(1, code_item(*OPTION_CODES[Option.CLEAN_PIXEL_DATA]))  # after 113100


def write_trial(ds: Dataset, profile: CompiledProfile, pseudo_pid: str) -> None:
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


def new_meta(ds: Dataset, sop_class: str, sop_uid: str, ts: UID) -> FileMetaDataset:
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
