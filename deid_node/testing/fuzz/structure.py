"""Mutations that break a data set's structure: cuts, lengths, delimiters, nesting, not DICOM.

Each takes the object's random generator, a valid base and the SOP Instance UID to give it,
and returns the mutated bytes with what the node may do with them (see draft.Mutation).
"""

from __future__ import annotations

import random
import struct
from typing import Final

from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from deid_node.dicom.elements import EXPLICIT_LE
from deid_node.testing.fuzz.draft import (
    MALFORMED,
    WELL_FORMED,
    Base,
    Draft,
    Mutation,
    patient_elements,
    phi_text,
)
from deid_node.testing.fuzz.encoding import (
    ITEM,
    ITEM_DELIM,
    PIXEL_DATA,
    REQUIRED_UIDS,
    SEQ_DELIM,
    UNDEFINED,
    delimiter,
    item,
    kw,
    sequence,
    tag_bytes,
    text,
)

__all__ = [
    "ID_SEQUENCES",
    "mut_bad_vr_length",
    "mut_deep_nesting",
    "mut_item_no_delimiter",
    "mut_length_overflow",
    "mut_not_dicom",
    "mut_truncated",
    "mut_undefined_length",
]


def mut_truncated(rng: random.Random, base: Base, uid: str) -> Mutation:
    """The body cut short: between elements, inside the header or in the pixel data."""
    d = Draft(base, uid, explicit=rng.random() < 0.75)
    body = d.body()
    offsets = d.offsets()
    header_end = next((s for t, s, _ in offsets if t >= PIXEL_DATA), len(body))
    r = rng.random()
    if r < 0.2:
        cut = rng.choice([s for _, s, _ in offsets[1:]])
    elif r < 0.6:
        cut = rng.randrange(1, max(2, header_end))
    else:
        cut = rng.randrange(1, len(body))
    starts = {s for _, s, _ in offsets}
    if cut in starts:
        kept = {t for t, _, e in offsets if e <= cut}
        complete = all(t in kept for t in REQUIRED_UIDS)
        # A cut between elements leaves a well-formed (if incomplete) object; it is only
        # malformed in the IOD sense when a UID the node must pseudonymise is gone.
        return Mutation(
            body[:cut],
            "element-boundary" if complete else "element-boundary-before-uids",
            WELL_FORMED if complete else MALFORMED,
            explicit=d.explicit,
        )
    where = "pixel-data" if cut > header_end else "header"
    return Mutation(body[:cut], f"mid-element-{where}", MALFORMED, explicit=d.explicit)


def _bad_length_targets() -> list[tuple[str, str, int]]:
    targets = [
        ("Rows", "US", 3),
        ("Columns", "US", 1),
        ("BitsAllocated", "US", 5),
        ("SamplesPerPixel", "US", 3),
        ("PixelRepresentation", "US", 7),
        ("FrameIncrementPointer", "AT", 3),
        ("CTDIvol", "FD", 7),
        ("SimpleFrameList", "UL", 6),
        ("PatientName", "US", 3),  # wrong VR as well as a wrong length
        ("StudyInstanceUID", "FL", 2),
    ]
    for keyword, vr, _ in targets:  # keep the table honest against pydicom's dictionary
        if keyword not in ("PatientName", "StudyInstanceUID"):
            assert dictionary_VR(kw(keyword)) == vr, keyword
    return targets


BAD_LENGTH_TARGETS: Final = _bad_length_targets()


def mut_bad_vr_length(rng: random.Random, base: Base, uid: str) -> Mutation:
    """A value whose length does not fit its VR (and a VR lie for PN and UI)."""
    keyword, vr, length = rng.choice(BAD_LENGTH_TARGETS)
    # Implicit VR cannot state a wrong VR, so a VR lie is always sent explicit.
    explicit = keyword in ("PatientName", "StudyInstanceUID") or rng.random() < 0.8
    d = Draft(base, uid, explicit=explicit)
    d.put(kw(keyword), vr, rng.randbytes(length))
    enc = "explicit" if explicit else "implicit"
    return Mutation(d.body(), f"{keyword}:{vr}:{length}:{enc}", MALFORMED, explicit=explicit)


def mut_undefined_length(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Undefined lengths where only sequences and encapsulated pixel data may have them."""
    payload = text(phi_text(base))
    variant = rng.choice(
        [
            "UT-with-seq-delimiter",
            "UT-no-delimiter",
            "UC-with-item-delimiter",
            "OB-document-with-items",
            "OW-native-pixel-data",
            "implicit-LO-with-seq-delimiter",
            "implicit-PN-no-delimiter",
            "implicit-US-with-seq-delimiter",
        ]
    )
    explicit = not variant.startswith("implicit")
    d = Draft(base, uid, explicit=explicit)
    if variant.startswith("UT"):
        tag = kw("TextValue")
        raw = d.el(tag, "UT", payload, UNDEFINED)
        d.put_raw(tag, raw + (delimiter(SEQ_DELIM) if "with" in variant else b""))
    elif variant.startswith("UC"):
        tag = kw("LongCodeValue")
        d.put_raw(tag, d.el(tag, "UC", payload, UNDEFINED) + delimiter(ITEM_DELIM))
    elif variant.startswith("OB"):
        tag = kw("EncapsulatedDocument")
        raw = d.el(tag, "OB", b"", UNDEFINED) + item(b"") + item(payload) + delimiter(SEQ_DELIM)
        d.put_raw(tag, raw)
    elif variant.startswith("OW"):
        pixels = d.value(PIXEL_DATA) or rng.randbytes(512)
        d.put_raw(PIXEL_DATA, d.el(PIXEL_DATA, "OW", pixels, UNDEFINED) + delimiter(SEQ_DELIM))
    elif variant == "implicit-LO-with-seq-delimiter":
        tag = rng.choice([kw("StudyDescription"), kw("InstitutionName"), kw("PatientID")])
        d.put_raw(tag, d.el(tag, "LO", payload, UNDEFINED) + delimiter(SEQ_DELIM))
    elif variant == "implicit-PN-no-delimiter":
        tag = kw("PatientName")
        d.put_raw(tag, d.el(tag, "PN", text(base.patient_name), UNDEFINED))
    else:
        tag = kw("Rows")
        d.put_raw(tag, d.el(tag, "US", b"\x10\x00", UNDEFINED) + delimiter(SEQ_DELIM))
    return Mutation(d.body(), variant, MALFORMED, explicit=explicit)


ID_SEQUENCES: Final = (
    "OtherPatientIDsSequence",
    "ReferencedImageSequence",
    "RequestAttributesSequence",
)


def mut_item_no_delimiter(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Broken item and sequence structure: missing, stray or misplaced delimiters."""
    variant = rng.choice(
        [
            "item-undefined-no-item-delimiter",
            "item-undefined-no-delimiters-at-all",
            "sequence-undefined-no-seq-delimiter",
            "sequence-defined-shorter-than-items",
            "item-defined-longer-than-content",
            "stray-item-delimiter-top-level",
            "stray-item-top-level",
            "seq-delimiter-closes-item",
            "stray-item-delimiter-before-last-element",
        ]
    )
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    tag = kw(rng.choice(ID_SEQUENCES))
    content = patient_elements(d)
    sq_head = d.el(tag, "SQ", b"", UNDEFINED)
    undefined_item = tag_bytes(ITEM) + struct.pack("<I", UNDEFINED) + content
    if variant == "item-undefined-no-item-delimiter":
        raw = sq_head + undefined_item + delimiter(SEQ_DELIM)
    elif variant == "item-undefined-no-delimiters-at-all":
        raw = sq_head + undefined_item
    elif variant == "sequence-undefined-no-seq-delimiter":
        raw = sq_head + item(content)
    elif variant == "sequence-defined-shorter-than-items":
        items = item(content) + item(content)
        raw = d.el(tag, "SQ", items, len(items) - 12)
    elif variant == "item-defined-longer-than-content":
        raw = sq_head + item(content, length=len(content) + 64) + delimiter(SEQ_DELIM)
    elif variant == "seq-delimiter-closes-item":
        raw = sq_head + undefined_item + delimiter(SEQ_DELIM) + delimiter(SEQ_DELIM)
    elif variant == "stray-item-delimiter-before-last-element":
        # A reader that stops at the delimiter sees one last element after it: the place
        # where a node that copies "the pixel data" through would look for pixels.
        if d.elems[-1][0] >= PIXEL_DATA:  # pixel data last: follow it with PHI
            d.elems.append((0xFFFCFFFC, d.el(0xFFFCFFFC, "OB", text(phi_text(base)))))
        d.elems.insert(len(d.elems) - 1, (ITEM_DELIM, delimiter(ITEM_DELIM)))
        return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)
    else:
        stray = delimiter(ITEM_DELIM) if "delimiter" in variant else item(content)
        at = rng.randrange(1, len(d.elems))
        d.elems.insert(at, (ITEM_DELIM if "delimiter" in variant else ITEM, stray))
        return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)
    d.put_raw(tag, raw)
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)


def mut_length_overflow(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Declared lengths far beyond the data (or just past its end)."""
    huge = 0xFFFFFFF0
    variant = rng.choice(
        [
            "implicit-LO-FFFFFFF0",
            "implicit-PN-FFFFFFF0",
            "explicit-UT-FFFFFFF0",
            "explicit-pixel-data-FFFFFFF0",
            "explicit-LO-FFFE",
            "explicit-SQ-FFFFFFF0",
            "explicit-item-FFFFFFF0",
            "last-element-plus-2",
        ]
    )
    explicit = not variant.startswith("implicit")
    d = Draft(base, uid, explicit=explicit)
    payload = text(phi_text(base))
    if variant == "implicit-LO-FFFFFFF0":
        tag = rng.choice([kw("StudyDescription"), kw("InstitutionName"), kw("PatientID")])
        d.put(tag, "LO", payload, huge)
    elif variant == "implicit-PN-FFFFFFF0":
        d.put(kw("PatientName"), "PN", text(base.patient_name), huge)
    elif variant == "explicit-UT-FFFFFFF0":
        d.put(kw("TextValue"), "UT", payload, huge)
    elif variant == "explicit-pixel-data-FFFFFFF0":
        d.put(PIXEL_DATA, "OW", d.value(PIXEL_DATA) or rng.randbytes(512), huge)
    elif variant == "explicit-LO-FFFE":
        d.put(kw("StudyDescription"), "LO", payload, 0xFFFE)
    elif variant == "explicit-SQ-FFFFFFF0":
        tag = kw(rng.choice(ID_SEQUENCES))
        d.put(tag, "SQ", item(patient_elements(d)), huge)
    elif variant == "explicit-item-FFFFFFF0":
        tag = kw(rng.choice(ID_SEQUENCES))
        raw = d.el(tag, "SQ", b"", UNDEFINED) + item(patient_elements(d), length=huge)
        d.put_raw(tag, raw + delimiter(SEQ_DELIM))
    else:
        tag, raw = d.elems[-1]
        at = EXPLICIT_LE.read_header(raw, 0, len(raw))[3]
        head, value = raw[:at], raw[at:]
        if len(head) == 12:
            head = head[:8] + struct.pack("<I", len(value) + 2)
        else:
            head = head[:6] + struct.pack("<H", len(value) + 2)
        d.elems[-1] = (tag, head + value)
    return Mutation(d.body(), variant, MALFORMED, explicit=explicit)


NEST_SEQUENCES: Final = (
    "ReferencedImageSequence",
    "ContentSequence",
    "SourceImageSequence",
    "OtherPatientIDsSequence",
    "ReferencedStudySequence",
)


def mut_deep_nesting(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Sequences nested hundreds to thousands deep, PHI at the bottom."""
    depth = rng.choice([200, 256, 300, 500, 1000, 2000, 4000])
    mode = rng.choice(["undefined", "defined", "mixed"])
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    keyword = rng.choice(NEST_SEQUENCES)
    tag = kw(keyword)
    content = patient_elements(d)  # the PHI sits at the very bottom
    for level in range(depth):
        defined = mode == "defined" or (mode == "mixed" and level % 2 == 0)
        content = sequence(
            tag, [item(content, defined=defined)], explicit=d.explicit, defined=defined
        )
    d.put_raw(tag, content)
    # The encoding is valid; only the IOD is not. Storing it is fine if no PHI survives.
    return Mutation(d.body(), f"{keyword}:{depth}:{mode}", WELL_FORMED, explicit=d.explicit)


PNG_HEADER: Final = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x00\x00\x00\x00"
)


def mut_not_dicom(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Bytes that are no data set at all: random, images, PDF, text, a Part-10 file."""
    variant = rng.choice(
        [
            "random",
            "png",
            "empty",
            "jpeg",
            "text-with-phi",
            "part10-file-as-dataset",
            "zeros",
            "pdf",
        ]
    )
    if variant == "random":
        body = rng.randbytes(rng.randrange(1, 8192))
    elif variant == "png":
        body = PNG_HEADER + rng.randbytes(rng.randrange(0, 2048))
    elif variant == "empty":
        body = b""
    elif variant == "jpeg":
        body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00" + rng.randbytes(
            rng.randrange(0, 2048)
        )
    elif variant == "text-with-phi":
        body = (f"{phi_text(base)}\nThis is not DICOM.\n" * rng.randrange(1, 50)).encode()
    elif variant == "part10-file-as-dataset":
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(base.sop_class)
        meta.MediaStorageSOPInstanceUID = UID(uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta, enforce_standard=True)
        body = b"\0" * 128 + b"DICM" + fp.getvalue() + Draft(base, uid).body()
    elif variant == "zeros":
        body = b"\0" * rng.randrange(1, 4096)
    else:
        body = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + phi_text(base).encode() + rng.randbytes(512)
    return Mutation(body, variant, MALFORMED)
