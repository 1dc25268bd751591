"""Which objects may carry burned-in text (their pixels name the patient)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.values import text_of
from deid_node.dicom.pydicom_compat import is_dictionary_uid

# SOP classes that usually carry burned-in text: US, secondary capture, VL photo/endoscopy.
BURNED_IN_CLASSES = frozenset(
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
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM"})
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def burned_in_reason(ds: Dataset, has_pixels: bool | None = None) -> str | None:
    """Why this object may carry burned-in text, or None."""
    if not (has_pixels or any(t in ds for t in PIXEL_TAGS)):
        return None
    flag = text_of(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    sop_class = text_of(ds.get("SOPClassUID", "")).strip()
    modality = text_of(ds.get("Modality", "")).strip().upper()
    if sop_class in BURNED_IN_CLASSES or modality in BURNED_IN_MODALITIES:
        what = UID(sop_class).name if is_dictionary_uid(sop_class) else f"modality {modality}"
        return f"{what} without BurnedInAnnotation = NO usually carries burned-in text"
    return None


def cleans_pixels(profile: ProfileConfig, ds: Dataset, has_pixels: bool | None = None) -> bool:
    """Whether this profile cleans this object's pixels (they may carry burned-in text)."""
    return profile.burned_in_annotation is BurnedInPolicy.CLEAN and bool(
        burned_in_reason(ds, has_pixels)
    )
