"""Which objects' pixels may name the patient, decided by what they are, not what they claim.

No header says "no text": BurnedInAnnotation = NO is wrong in many real archives, and
screen captures arrive as CT or MR images. So an object is looked at by what it is:

- *known*: BurnedInAnnotation = YES, or a kind that usually carries text (ultrasound,
  secondary capture, visible light) that does not say NO. Withheld under `quarantine`,
  cleaned under `clean`.
- *suspect*: may carry text but claims not to (one of those kinds saying NO), another kind
  that often carries it (XA/RF, ophthalmic), an image that is not ORIGINAL\\PRIMARY
  (derived and secondary images, screen captures, slide labels), or any image when the
  profile says `look_at_every_image`. Looked at by the detector: withheld under `quarantine`
  when anything text-like is found, cleaned under `clean`.
- otherwise (ORIGINAL\\PRIMARY images of kinds without text: CT, MR, PET, ...) the pixels
  are not looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

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
# Kinds that often carry text without being known for it: always looked at.
TEXT_PRONE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic
        "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF
        "1.2.840.10008.5.1.4.1.1.77.1.3",  # VL Slide-Coordinates Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit
        "1.2.840.10008.5.1.4.1.1.77.1.5.5",  # Wide Field Ophthalmic Photography Stereographic
        "1.2.840.10008.5.1.4.1.1.77.1.5.6",  # Wide Field Ophthalmic Photography 3D
        "1.2.840.10008.5.1.4.1.1.77.1.7",  # Dermoscopic Photography
    }
)
TEXT_PRONE_MODALITIES = frozenset({"XA", "RF", "OP", "DOC", "IVUS"})
# Pixel data that is not a picture of anything (labels, doses, maps): never text.
NOT_PICTURES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
        "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    }
)
# ImageType value 3 of images that show a label, an overview or a screen.
SHOWS_TEXT = frozenset({"LABEL", "OVERVIEW", "SCREENSHOT", "SCREEN", "CAPTURE"})
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class Suspicion:
    """Why an object's pixels are looked at; `known`: it is expected to carry text."""

    reason: str
    known: bool


def suspicion(
    ds: Dataset, has_pixels: bool | None = None, *, every_image: bool = False
) -> Suspicion | None:
    """Why this object's pixels may carry text, or None when they are not looked at."""
    if not (has_pixels or any(t in ds for t in PIXEL_TAGS)):
        return None
    flag = text_of(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag == "YES":
        return Suspicion("BurnedInAnnotation is YES", known=True)
    sop_class = text_of(ds.get("SOPClassUID", "")).strip()
    if sop_class in NOT_PICTURES:
        return None
    modality = text_of(ds.get("Modality", "")).strip().upper()
    what = UID(sop_class).name if is_dictionary_uid(sop_class) else f"modality {modality}"
    if sop_class in BURNED_IN_CLASSES or modality in BURNED_IN_MODALITIES:
        if flag != "NO":
            return Suspicion(f"{what} without BurnedInAnnotation = NO usually carries text", True)
        return Suspicion(
            f"{what} usually carries text; BurnedInAnnotation NO is not trusted", False
        )
    if sop_class in TEXT_PRONE_CLASSES or modality in TEXT_PRONE_MODALITIES:
        return Suspicion(f"{what} often carries text", known=False)
    if _overlay_in_compressed_words(ds):
        return Suspicion("an overlay plane may be kept in the compressed pixel words", False)
    kind = _image_type(ds)
    # An absent ImageType claims nothing (CT and MR must have one; screen captures saved
    # as such say DERIVED or SECONDARY): such images are looked at only on request.
    if kind and (kind[:2] != ["ORIGINAL", "PRIMARY"] or SHOWS_TEXT.intersection(kind[2:3])):
        shown = "\\".join(kind[:3])
        return Suspicion(f"ImageType {shown} (not an original primary image)", known=False)
    if every_image:
        return Suspicion("the profile looks at every image", known=False)
    return None


def _overlay_in_compressed_words(ds: Dataset) -> bool:
    """Whether compressed pixel data may hold an overlay plane in its unused high bits:
    an overlay group without OverlayData (the retired form) and BitsStored short of
    BitsAllocated. Native words are cleared without decoding (dicom/pixel_bits.py);
    compressed ones only when decoded, so such an object is looked at."""
    meta = getattr(ds, "file_meta", None)
    syntax = text_of(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax or not UID(syntax.strip()).is_compressed:
        return False
    try:
        if int(ds.get("BitsStored") or 0) >= int(ds.get("BitsAllocated") or 0):
            return False
    except (TypeError, ValueError):
        return True  # unreadable bit depths: looked at
    tags = ds.keys()  # tags only: iterating a Dataset decodes every element
    groups = {t.group for t in tags if 0x6000 <= t.group <= 0x601E and not t.group & 1}
    return any((g << 16 | 0x3000) not in ds for g in groups)


def _image_type(ds: Dataset) -> list[str]:
    try:
        value = ds.get("ImageType")
    except Exception:  # an unreadable ImageType says nothing: treated as absent
        return []
    if value is None:
        return []
    values = [value] if isinstance(value, str | bytes) else list(value)
    return [text_of(v).strip().upper() for v in values]


def looks_at_pixels(profile: ProfileConfig, ds: Dataset, has_pixels: bool | None = None) -> bool:
    """Whether this profile has this object's pixels looked at (and cleaned, or checked)."""
    policy = profile.burned_in_annotation
    if policy is BurnedInPolicy.ALLOW:
        return False
    found = suspicion(ds, has_pixels, every_image=profile.look_at_every_image)
    if found is None:
        return False
    return policy is BurnedInPolicy.CLEAN or not found.known
