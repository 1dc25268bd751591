"""An object whose kept and cleaned text names its patient, third parties and ages.

The patient's name (any script, with ideographic and phonetic groups), names that follow a
title, age phrases, and the patient's names run together in a technical attribute are
planted in every kind of place a profile keeps text: descriptions and comments, the
meaning of a local code (document title, SR content, acquisition context), SR text six
levels deep, a kernel name, and safe-listed private elements at the top level and inside a
ReferencedImageSequence item. The caller passes the names (Faker makes them in the tests),
so this module needs nothing beyond pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import CTImageStorage

from deid_node.testing.synthetic.patient import new_dataset

__all__ = ["PETD_CREATOR", "Planted", "named_text_object"]

PETD_CREATOR = "GEMS_PETD_01"  # (0009,xx11) LO, (0009,xx16) SL, (0009,xx7F) DS: safe-listed
_SR_DEPTH = 6


@dataclass(frozen=True)
class Planted:
    """What `named_text_object` planted, to search the output for."""

    names: tuple[str, ...]  # the patient's name parts, every group
    joined: str  # the patient's names run together in ConvolutionKernel
    third_party: tuple[str, ...]  # names after a title or role
    age: str  # the age in the age phrases
    clinical: tuple[str, ...]  # words the cleaner keeps where text is cleaned


def _local_code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = "L0042"
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = meaning
    return item


def _text_item(text: str, meaning: str, depth: int) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_local_code(meaning)]
    item.TextValue = text
    if depth > 1:
        item.ContentSequence = [_text_item(text, meaning, depth - 1)]
    return item


def named_text_object(
    uid_root: str,
    family: str,
    given: str,
    *,
    ideographic: tuple[str, str] | None = None,
    phonetic: tuple[str, str] | None = None,
    third_party: tuple[str, str] = ("Violet", "Iris"),
    age: int = 93,
    charset: str = "ISO_IR 192",
) -> tuple[Dataset, Planted]:
    """A CT header (no pixels) whose text names the patient `family^given` everywhere.

    `uid_root` makes the UIDs (one object per root); `ideographic` and `phonetic` are the
    (family, given) of the other PN component groups.
    """
    ds = new_dataset(CTImageStorage, f"{uid_root}.3")
    ds.SpecificCharacterSet = charset
    groups = [f"{family}^{given}"]
    names = [family, given]
    for extra in (ideographic, phonetic):
        groups.append(f"{extra[0]}^{extra[1]}" if extra else "")
        names += list(extra or ())
    ds.PatientName = "=".join(groups).rstrip("=")
    ds.PatientID = f"PID{uid_root[-6:]}"
    ds.PatientBirthDate = "19300101"
    ds.PatientSex = "F"
    ds.PatientAge = f"{age:03d}Y"
    ds.StudyInstanceUID = f"{uid_root}.1"
    ds.SeriesInstanceUID = f"{uid_root}.2"
    ds.Modality = "CT"
    first, last = third_party
    own_ideographic = "".join(ideographic) if ideographic else family
    note = (
        f"{given} {family} reports chest pain. Seen by Dr. {first} {last}, "
        f"referred by {first} {last}; aged {age}, a {age}-year-old, {age} yo, age {age}."
    )
    ds.StudyDescription = f"{own_ideographic} chest CT"
    ds.SeriesDescription = f"{family} {given} contrast"
    ds.ImageComments = note
    ds.AdditionalPatientHistory = note
    ds.RequestAttributesSequence = [Dataset()]
    ds.RequestAttributesSequence[0].RequestedProcedureDescription = note[:64]
    # The longest run-together form a kernel name (SH, 16 characters) holds whole.
    forms = (f"{given}{family}", f"{given[:1]}{family}", family)
    joined = next((f for f in forms if len(f) <= 16), family[:16]).upper()
    ds.ConvolutionKernel = joined
    initial = f"{given[:1]}.{family}".upper()[:16]
    ds.FilterType = initial  # kept technical text, an initial and the family name
    # Kept text (the manufacturer is technical) naming the patient in the other groups.
    other = " ".join("".join(g) for g in (ideographic, phonetic) if g)
    ds.Manufacturer = f"ACME {other}".strip()
    ds.ConceptNameCodeSequence = [_local_code(f"{given} {family} report")]
    ds.ContentSequence = [_text_item(note, f"Note on {family}", _SR_DEPTH)]
    context = Dataset()
    context.ValueType = "TEXT"
    context.ConceptNameCodeSequence = [_local_code(f"{family} context")]
    context.TextValue = note
    ds.AcquisitionContextSequence = [context]

    block = ds.private_block(0x0009, PETD_CREATOR, create=True)
    block.add_new(0x11, "LO", f"Scanner by {first} {last} for {family}")
    block.add_new(0x16, "SL", 3)
    block.add_new(0x7F, "DS", "2.5")
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = f"{uid_root}.4"
    reference.FilterType = initial
    reference.ConvolutionKernel = joined
    inner = reference.private_block(0x0009, PETD_CREATOR, create=True)
    inner.add_new(0x11, "LO", f"Tech {first} {last}")
    inner.add_new(0x7F, "LO", f"{first} {last}")  # a name where a number is listed
    ds.ReferencedImageSequence = [reference]
    planted = Planted(
        names=tuple(n for n in names if n),
        joined=joined,
        third_party=third_party,
        age=str(age),
        clinical=("chest", "pain"),
    )
    return ds, planted
