"""Valid base objects, pre-encoded, and the drafts a mutation edits element by element."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RTStructureSetStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from deid_node.dicom.elements import EXPLICIT_LE, IMPLICIT_LE
from deid_node.testing.fuzz.encoding import (
    SOP_INSTANCE_UID,
    element,
    kw,
    split_elements,
    text,
    uid_value,
)

__all__ = [
    "MALFORMED",
    "STORAGE_CLASSES",
    "TRANSFER_SYNTAXES",
    "VALID",
    "WELL_FORMED",
    "Base",
    "Draft",
    "Mutation",
    "make_base",
    "patient_elements",
    "phi_text",
]

STORAGE_CLASSES: Final = (
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    BasicTextSRStorage,
    RTStructureSetStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    EnhancedCTImageStorage,
    DigitalXRayImageStorageForPresentation,
)
TRANSFER_SYNTAXES: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class Base:
    """A valid synthetic object, pre-encoded as top-level elements in both encodings."""

    name: str
    sop_class: str
    explicit: tuple[tuple[int, bytes], ...]
    implicit: tuple[tuple[int, bytes], ...]
    patient_name: str
    patient_id: str
    is_control: bool  # valid per dciodvfy: expected to be stored unchanged


def _encode(ds: Dataset, explicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = not explicit
    write_dataset(fp, ds)
    return fp.getvalue()


def make_base(name: str, ds: Dataset, *, is_control: bool = False) -> Base:
    """Encode one synthetic dataset (minus its file meta) once, for cheap mutation later."""
    ds = ds.copy()
    with contextlib.suppress(AttributeError):
        del ds.file_meta
    return Base(
        name=name,
        sop_class=str(ds.SOPClassUID),
        explicit=tuple(split_elements(_encode(ds, True), True)),
        implicit=tuple(split_elements(_encode(ds, False), False)),
        patient_name=str(ds.PatientName),
        patient_id=str(ds.PatientID),
        is_control=is_control,
    )


class Draft:
    """A base object's top-level elements, edited before they are joined into a body."""

    def __init__(self, base: Base, uid: str, *, explicit: bool = True) -> None:
        self.base = base
        self.explicit = explicit
        self.elems: list[tuple[int, bytes]] = list(base.explicit if explicit else base.implicit)
        self.put(SOP_INSTANCE_UID, "UI", uid_value(uid))

    def el(self, tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
        """One element in this draft's encoding."""
        return element(tag, vr, value, explicit=self.explicit, length=length)

    def index(self, tag: int) -> int | None:
        """Where the first element with `tag` is, None if absent."""
        for i, (t, _) in enumerate(self.elems):
            if t == tag:
                return i
        return None

    def position(self, tag: int) -> int:
        """Where an element with `tag` belongs in ascending order."""
        for i, (t, _) in enumerate(self.elems):
            if t > tag:
                return i
        return len(self.elems)

    def put(self, tag: int, vr: str, value: bytes, length: int | None = None) -> None:
        """Replace or insert an element (see put_raw)."""
        self.put_raw(tag, self.el(tag, vr, value, length))

    def put_raw(self, tag: int, raw: bytes) -> None:
        """Replace the element with `tag`, or insert it in tag order."""
        i = self.index(tag)
        if i is None:
            self.elems.insert(self.position(tag), (tag, raw))
        else:
            self.elems[i] = (tag, raw)

    def add_raw(self, tag: int, raw: bytes) -> None:
        """Insert after any element with the same tag (a duplicate stays adjacent)."""
        i = self.position(tag)
        self.elems.insert(i, (tag, raw))

    def drop(self, tag: int) -> None:
        """Remove every element with `tag`."""
        self.elems = [(t, b) for t, b in self.elems if t != tag]

    def value(self, tag: int) -> bytes:
        """The value bytes of a simple (defined length) element, b"" if absent."""
        i = self.index(tag)
        if i is None:
            return b""
        raw = self.elems[i][1]
        syntax = EXPLICIT_LE if self.explicit else IMPLICIT_LE
        return raw[syntax.read_header(raw, 0, len(raw))[3] :]

    def body(self) -> bytes:
        """The data set's bytes."""
        return b"".join(b for _, b in self.elems)

    def offsets(self) -> list[tuple[int, int, int]]:
        """(tag, start, end) of every top-level element."""
        out, pos = [], 0
        for t, b in self.elems:
            out.append((t, pos, pos + len(b)))
            pos += len(b)
        return out


# What the node may do with a mutated object.
MALFORMED: Final = "malformed"  # must never be stored
WELL_FORMED: Final = "well-formed"  # the encoding is still valid: may be stored or quarantined
VALID: Final = "valid"  # an unmutated control: must be stored


@dataclass
class Mutation:
    """What a mutation produced: the bytes to send and what the node may do with them."""

    body: bytes
    variant: str
    expect: str
    context_class: str | None = None  # None: the base's SOP class
    explicit: bool = True
    extra_uids: tuple[str, ...] = ()  # other SOP Instance UIDs the node could key the object on


def phi_text(base: Base) -> str:
    """Free text naming the base's patient and ID, to plant where a mutation needs PHI."""
    family, _, given = base.patient_name.partition("^")
    return f"Patient {family} {given} {base.patient_id}"


def patient_elements(d: Draft) -> bytes:
    """PatientName + PatientID of the base, for planting inside sequences."""
    return d.el(kw("PatientName"), "PN", text(d.base.patient_name)) + d.el(
        kw("PatientID"), "LO", text(d.base.patient_id)
    )
