#!/usr/bin/env python3
"""Fuzz a deid-node with malformed C-STORE objects over real associations on 127.0.0.1.

Every object is a valid synthetic object (deid_node.testing.synthetic, full of planted PHI tokens)
with one malformation applied to its *encoded bytes*; the bytes reach the wire unchanged
(pynetdicom streams them from a file, see `install_raw_sender`). Kinds are cycled by object
id (`KINDS`), each with several variants; every object is classified `malformed` (must not
be stored), `well-formed` (the mutation left a valid encoding: may be stored) or `valid`
(an unmutated control, every `--control-every` objects: must be stored).

At the end the node's audit database and output folder are checked, and the exit code is 0
only if every invariant holds: the node still serves (C-ECHO, and a valid object is stored
and written), no traceback in its log and no 0xC211, no output file (raw bytes or decoded
text), log or audit database holds a planted value, every object has a failure status or
(after Success) an audit row, no malformed object was stored, and its memory stayed bounded.

    scripts/fuzz.py --count 10000 --seed 0 --associations 4 --json fuzz.json
    scripts/fuzz.py --count 10000 --oid 1488 --keep     # one object again, same bytes
    scripts/fuzz.py --kinds deep_nesting --restart-on-crash

Without --config/--port it starts its own `deid-node serve` on a temporary data folder and
a temporary config (one source, unknown sources rejected, a basic profile), with a known
key so stored objects map back to object ids, its address space capped (`--node-memory-mb`)
so a memory bomb fails inside the node rather than waking the kernel's OOM killer, and
stops it at the end (SIGTERM, bounded wait, then SIGKILL of its process group).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

from pydicom.datadict import dictionary_VR, tag_for_keyword  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.filewriter import write_dataset, write_file_meta_info  # noqa: E402
from pydicom.uid import (  # noqa: E402
    UID,
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

from deid_node.testing.synthetic import (  # noqa: E402
    TOKEN_RE,
    UID_PREFIX,
    PhiTokens,
    SyntheticPatient,
    ct_series,
    phi_everywhere,
    rt_structure_set,
    secondary_capture,
    sr_document,
)

# --------------------------------------------------------------------------------------------
# Raw element encoding (little endian; explicit or implicit VR)
# --------------------------------------------------------------------------------------------

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARSET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
REQUIRED_UIDS = (SOP_CLASS_UID, SOP_INSTANCE_UID, 0x0020000D, 0x0020000E)


def kw(keyword: str) -> int:
    """The tag of a DICOM keyword (fails loudly on a typo)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


def tag_bytes(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def element(tag: int, vr: str, value: bytes, *, explicit: bool, length: int | None = None) -> bytes:
    """One encoded element; `length` overrides the declared length (the point of fuzzing)."""
    declared = len(value) if length is None else length
    if not explicit:
        return tag_bytes(tag) + struct.pack("<I", declared) + value
    if vr in LONG_VRS:
        return tag_bytes(tag) + vr.encode() + b"\0\0" + struct.pack("<I", declared) + value
    if declared > 0xFFFF:
        raise ValueError(f"{vr} cannot declare {declared} bytes in explicit VR")
    return tag_bytes(tag) + vr.encode() + struct.pack("<H", declared) + value


def item(content: bytes, *, defined: bool = True, length: int | None = None) -> bytes:
    """A sequence item, defined length or closed by an item delimiter."""
    if defined:
        declared = len(content) if length is None else length
        return tag_bytes(ITEM) + struct.pack("<I", declared) + content
    return tag_bytes(ITEM) + struct.pack("<I", UNDEFINED) + content + delimiter(ITEM_DELIM)


def delimiter(tag: int) -> bytes:
    return tag_bytes(tag) + b"\0\0\0\0"


def sequence(tag: int, items: list[bytes], *, explicit: bool, defined: bool) -> bytes:
    """An SQ element holding already-encoded items."""
    body = b"".join(items)
    if defined:
        return element(tag, "SQ", body, explicit=explicit)
    return element(tag, "SQ", body, explicit=explicit, length=UNDEFINED) + delimiter(SEQ_DELIM)


def text(value: str | bytes, pad: bytes = b" ") -> bytes:
    """A text value padded to even length (Latin-1 for str)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return raw + pad if len(raw) % 2 else raw


def uid_value(value: str) -> bytes:
    return text(value, b"\0")


def _element_end(data: bytes, pos: int, explicit: bool) -> int:
    """Offset just past the element at `pos` of well-formed data (sequences skipped)."""
    tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from("<H", data, pos + 2)[
        0
    ]
    if explicit and tag not in (ITEM, ITEM_DELIM, SEQ_DELIM):
        vr = data[pos + 4 : pos + 6].decode("latin-1")
        if vr in LONG_VRS:
            length, start = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
    else:
        length, start = struct.unpack_from("<I", data, pos + 4)[0], pos + 8
    if length != UNDEFINED:
        return int(start + length)
    p = start  # undefined length: items up to the sequence delimiter
    while True:
        t = (struct.unpack_from("<H", data, p)[0] << 16) | struct.unpack_from("<H", data, p + 2)[0]
        if t == SEQ_DELIM:
            return p + 8
        if t != ITEM:
            raise ValueError(f"expected an item at {p}")
        ilen = struct.unpack_from("<I", data, p + 4)[0]
        if ilen != UNDEFINED:
            p += 8 + ilen
            continue
        p += 8
        while struct.unpack_from("<I", data, p)[0] != 0xE00DFFFE:  # item delimiter, LE
            p = _element_end(data, p, explicit)
        p += 8


def split_elements(data: bytes, explicit: bool) -> list[tuple[int, bytes]]:
    """Top-level (tag, encoded element) pairs of a well-formed dataset."""
    out, pos = [], 0
    while pos < len(data):
        end = _element_end(data, pos, explicit)
        tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from(
            "<H", data, pos + 2
        )[0]
        out.append((tag, data[pos:end]))
        pos = end
    return out


# --------------------------------------------------------------------------------------------
# Base objects and drafts
# --------------------------------------------------------------------------------------------

STORAGE_CLASSES = (
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
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


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


def make_pool(tokens: PhiTokens) -> list[Base]:
    """The valid objects every malformation starts from; their tokens go into `tokens`."""
    patient = SyntheticPatient.make(tokens, seed=11)
    cts = ct_series(3, patient=patient, rows=16, cols=16, seed=11)
    other = SyntheticPatient.make(tokens, seed=12)
    pool = [make_base(f"ct{i}", ds, is_control=True) for i, ds in enumerate(cts)]
    pool.append(make_base("phi_everywhere", phi_everywhere(tokens, seed=13)))
    pool.append(make_base("sr", sr_document(patient, seed=11)))
    pool.append(make_base("rtstruct", rt_structure_set(cts)))
    pool.append(make_base("sc", secondary_capture(other, "NO", rows=16, cols=16, seed=12)))
    return pool


class Draft:
    """A base object's top-level elements, edited before they are joined into a body."""

    def __init__(self, base: Base, uid: str, *, explicit: bool = True) -> None:
        self.base = base
        self.explicit = explicit
        self.elems: list[tuple[int, bytes]] = list(base.explicit if explicit else base.implicit)
        self.put(SOP_INSTANCE_UID, "UI", uid_value(uid))

    def el(self, tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
        return element(tag, vr, value, explicit=self.explicit, length=length)

    def index(self, tag: int) -> int | None:
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
        self.elems = [(t, b) for t, b in self.elems if t != tag]

    def value(self, tag: int) -> bytes:
        """The value bytes of a simple (defined length) element, b"" if absent."""
        i = self.index(tag)
        if i is None:
            return b""
        raw = self.elems[i][1]
        if not self.explicit:
            return raw[8:]
        return raw[12:] if raw[4:6].decode("latin-1") in LONG_VRS else raw[8:]

    def body(self) -> bytes:
        return b"".join(b for _, b in self.elems)

    def offsets(self) -> list[tuple[int, int, int]]:
        """(tag, start, end) of every top-level element."""
        out, pos = [], 0
        for t, b in self.elems:
            out.append((t, pos, pos + len(b)))
            pos += len(b)
        return out


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

MALFORMED = "malformed"  # must never be stored
WELL_FORMED = "well-formed"  # encoding valid after the mutation: may be stored or quarantined
VALID = "valid"  # an unmutated control: must be stored


@dataclass
class Mutation:
    """What a mutation produced: the bytes to send and what the node may do with them."""

    body: bytes
    variant: str
    expect: str
    context_class: str | None = None  # None: the base's SOP class
    explicit: bool = True
    extra_uids: tuple[str, ...] = ()  # other SOP Instance UIDs the node could key the object on


def _phi_text(base: Base) -> str:
    family, _, given = base.patient_name.partition("^")
    return f"Patient {family} {given} {base.patient_id}"


def _patient_elems(d: Draft) -> bytes:
    """PatientName + PatientID of the base, for planting inside sequences."""
    return d.el(kw("PatientName"), "PN", text(d.base.patient_name)) + d.el(
        kw("PatientID"), "LO", text(d.base.patient_id)
    )


def mut_truncated(rng: random.Random, base: Base, uid: str) -> Mutation:
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


BAD_LENGTH_TARGETS = _bad_length_targets()


def mut_bad_vr_length(rng: random.Random, base: Base, uid: str) -> Mutation:
    keyword, vr, length = rng.choice(BAD_LENGTH_TARGETS)
    # Implicit VR cannot state a wrong VR, so a VR lie is always sent explicit.
    explicit = keyword in ("PatientName", "StudyInstanceUID") or rng.random() < 0.8
    d = Draft(base, uid, explicit=explicit)
    d.put(kw(keyword), vr, rng.randbytes(length))
    enc = "explicit" if explicit else "implicit"
    return Mutation(d.body(), f"{keyword}:{vr}:{length}:{enc}", MALFORMED, explicit=explicit)


def mut_undefined_length(rng: random.Random, base: Base, uid: str) -> Mutation:
    payload = text(_phi_text(base))
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


ID_SEQUENCES = ("OtherPatientIDsSequence", "ReferencedImageSequence", "RequestAttributesSequence")


def mut_item_no_delimiter(rng: random.Random, base: Base, uid: str) -> Mutation:
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
    content = _patient_elems(d)
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
            d.elems.append((0xFFFCFFFC, d.el(0xFFFCFFFC, "OB", text(_phi_text(base)))))
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
    payload = text(_phi_text(base))
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
        d.put(tag, "SQ", item(_patient_elems(d)), huge)
    elif variant == "explicit-item-FFFFFFF0":
        tag = kw(rng.choice(ID_SEQUENCES))
        raw = d.el(tag, "SQ", b"", UNDEFINED) + item(_patient_elems(d), length=huge)
        d.put_raw(tag, raw + delimiter(SEQ_DELIM))
    else:
        tag, raw = d.elems[-1]
        head, value = (raw[:12], raw[12:]) if raw[4:6].decode() in LONG_VRS else (raw[:8], raw[8:])
        if len(head) == 12:
            head = head[:8] + struct.pack("<I", len(value) + 2)
        else:
            head = head[:6] + struct.pack("<H", len(value) + 2)
        d.elems[-1] = (tag, head + value)
    return Mutation(d.body(), variant, MALFORMED, explicit=explicit)


NEST_SEQUENCES = (
    "ReferencedImageSequence",
    "ContentSequence",
    "SourceImageSequence",
    "OtherPatientIDsSequence",
    "ReferencedStudySequence",
)


def mut_deep_nesting(rng: random.Random, base: Base, uid: str) -> Mutation:
    depth = rng.choice([200, 256, 300, 500, 1000, 2000, 4000])
    mode = rng.choice(["undefined", "defined", "mixed"])
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    keyword = rng.choice(NEST_SEQUENCES)
    tag = kw(keyword)
    content = _patient_elems(d)  # the PHI sits at the very bottom
    for level in range(depth):
        defined = mode == "defined" or (mode == "mixed" and level % 2 == 0)
        content = sequence(
            tag, [item(content, defined=defined)], explicit=d.explicit, defined=defined
        )
    d.put_raw(tag, content)
    # The encoding is valid; only the IOD is not. Storing it is fine if no PHI survives.
    return Mutation(d.body(), f"{keyword}:{depth}:{mode}", WELL_FORMED, explicit=d.explicit)


PNG_HEADER = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x00\x00\x00\x00"
)


def mut_not_dicom(rng: random.Random, base: Base, uid: str) -> Mutation:
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
        body = (f"{_phi_text(base)}\nThis is not DICOM.\n" * rng.randrange(1, 50)).encode()
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
        body = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + _phi_text(base).encode() + rng.randbytes(512)
    return Mutation(body, variant, MALFORMED)


def mut_sop_class_mismatch(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    r = rng.random()
    if r < 0.6:
        other = rng.choice([c for c in STORAGE_CLASSES if c != base.sop_class])
        return Mutation(
            d.body(), f"context:{UID(other).keyword}", MALFORMED, other, explicit=d.explicit
        )
    if r < 0.75:
        d.put(SOP_CLASS_UID, "UI", uid_value("1.2.3.4.5.6.7"))
        variant = "dataset-class-unknown-uid"
    elif r < 0.9:
        d.put(SOP_CLASS_UID, "UI", uid_value("1.2.840.10008.1.1"))
        variant = "dataset-class-verification"
    else:
        d.drop(SOP_CLASS_UID)
        variant = "dataset-class-missing"
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)


CHARSET_TERMS = ("ISO_IR 999", "UTF-8", "latin1", "ISO-8859-1", "ISO_IR 100\\ISO_IR 999", "\x1b%G")


def mut_charset_lie(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid)
    family, _, given = (s.encode() for s in base.patient_name.partition("^"))
    pid = base.patient_id.encode()
    variant = rng.choice(
        [
            "utf8-declared-invalid-bytes",
            "latin1-declared-iso2022-escapes",
            "iso2022-broken-escape",
            "unknown-term",
            "no-charset-8bit-values",
            "utf16-values",
            "iso2022-split-identifiers",
        ]
    )
    expect = MALFORMED
    if variant == "utf8-declared-invalid-bytes":
        charset = "ISO_IR 192"
        name = family + b"\xc3\x28^" + given + b"\xff"
        inst, other = b"\xfe\xff" + pid, b"\xe2\x82" + pid + b"\xc0\xaf"
    elif variant == "latin1-declared-iso2022-escapes":
        charset = "ISO_IR 100"
        junk = b"\x1b$B" + rng.randbytes(4) + b"\x1b(B"
        name, inst, other = family + junk + b"^" + given, junk + pid, pid + junk
    elif variant == "iso2022-broken-escape":
        charset = "\\ISO 2022 IR 87"
        name = family + b"^" + given + b"=\x1b$B\x30"  # odd byte count, no return to ASCII
        inst, other = b"\x1b$(" + pid, pid + b"\x1b"
    elif variant == "unknown-term":
        charset = rng.choice(CHARSET_TERMS)
        name, inst, other = family + b"\xe9^" + given, pid + b"\xfc", b"\xe4" + pid
    elif variant == "no-charset-8bit-values":
        charset = ""
        name, inst, other = family + b"\xe9^" + given, pid + b"\xfc", b"\xe4" + pid
        # Not conformant, but common in the field: the node reads such bytes as Latin-1
        # (as pydicom does), so it may store the object, provided nothing leaks.
        expect = WELL_FORMED
    elif variant == "utf16-values":
        charset = "ISO_IR 192"
        name = base.patient_name.encode("utf-16-le")
        inst, other = pid.decode().encode("utf-16-le"), ("x" + pid.decode()).encode("utf-16-le")
    else:
        # An empty switch to JIS X 0208 and back: valid ISO 2022, and it decodes to the
        # plain identifier, but the raw bytes no longer contain it.
        charset = "\\ISO 2022 IR 87"
        split = b"\x1b$B\x1b(B"
        name = family[:4] + split + family[4:] + b"^" + given
        inst, other = pid[:4] + split + pid[4:], pid[:3] + split + pid[3:]
        expect = WELL_FORMED
    if charset:
        d.put(SPECIFIC_CHARSET, "CS", text(charset))
    else:
        d.drop(SPECIFIC_CHARSET)
    d.put(kw("PatientName"), "PN", text(name))
    d.put(kw("InstitutionName"), "LO", text(inst))
    # Manufacturer is kept by the profile: only the node's verification can catch this.
    d.put(kw("Manufacturer"), "LO", text(b"ACME " + other))
    suffix = f":{charset!r}" if variant == "unknown-term" else ""
    return Mutation(d.body(), variant + suffix, expect)


def mut_duplicate_tag(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    variant = rng.choice(
        [
            "PatientName-real-then-decoy",
            "PatientName-decoy-then-real",
            "PatientID-twice",
            "SOPInstanceUID-twice",
            "SpecificCharacterSet-twice",
            "PixelData-twice",
            "Rows-twice",
            "in-sequence-item",
            "PatientName-real-then-decoy-real-in-kept-text",
            "PatientID-real-then-decoy-real-in-kept-text",
        ]
    )
    extra: tuple[str, ...] = ()
    if variant.endswith("-in-kept-text"):
        # The node knows the patient by the value it parsed (the last one); the first,
        # real value is repeated in Manufacturer, which the profile keeps.
        family = base.patient_name.split("^")[0]
        if variant.startswith("PatientName"):
            tag, vr, decoy, real = kw("PatientName"), "PN", "DOE^JOHN", family
        else:
            tag, vr, decoy, real = kw("PatientID"), "LO", "DECOY-ID", base.patient_id
        d.add_raw(tag, d.el(tag, vr, text(decoy)))
        d.put(kw("Manufacturer"), "LO", text(f"ACME {real}"))
    elif variant.startswith("PatientName"):
        real, decoy = text(base.patient_name), text("DOE^JOHN")
        first, second = (real, decoy) if "real-then" in variant else (decoy, real)
        tag = kw("PatientName")
        d.put(tag, "PN", first)
        d.add_raw(tag, d.el(tag, "PN", second))
    elif variant == "PatientID-twice":
        tag = kw("PatientID")
        d.add_raw(tag, d.el(tag, "LO", text("DECOY-ID")))
    elif variant == "SOPInstanceUID-twice":
        other = uid + ".1"
        d.add_raw(SOP_INSTANCE_UID, d.el(SOP_INSTANCE_UID, "UI", uid_value(other)))
        extra = (other,)
    elif variant == "SpecificCharacterSet-twice":
        d.put(SPECIFIC_CHARSET, "CS", text("ISO_IR 100"))
        d.add_raw(SPECIFIC_CHARSET, d.el(SPECIFIC_CHARSET, "CS", text("ISO_IR 192")))
    elif variant == "PixelData-twice" and (at := d.index(PIXEL_DATA)) is not None:
        d.elems.insert(at + 1, d.elems[at])
    elif variant == "Rows-twice" and d.index(kw("Rows")) is not None:
        d.add_raw(kw("Rows"), d.el(kw("Rows"), "US", struct.pack("<H", 4096)))
    else:
        variant = "in-sequence-item"
        pid_el = d.el(kw("PatientID"), "LO", text(base.patient_id))
        content = _patient_elems(d) + pid_el
        tag = kw("OtherPatientIDsSequence")
        d.put_raw(tag, sequence(tag, [item(content)], explicit=d.explicit, defined=False))
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit, extra_uids=extra)


def mut_out_of_order(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    variant = rng.choice(
        [
            "swap-adjacent",
            "pixel-data-first",
            "reversed",
            "patient-after-pixel-data",
            "shuffled",
            "group-0002-in-dataset",
        ]
    )
    if variant == "swap-adjacent":
        i = rng.randrange(0, len(d.elems) - 1)
        d.elems[i], d.elems[i + 1] = d.elems[i + 1], d.elems[i]
    elif variant == "pixel-data-first" and (at := d.index(PIXEL_DATA)) is not None:
        d.elems.insert(0, d.elems.pop(at))
    elif variant == "reversed":
        d.elems.reverse()
    elif variant == "patient-after-pixel-data":
        moved = [e for e in d.elems if e[0] in (kw("PatientName"), kw("PatientID"))]
        d.elems = [e for e in d.elems if e not in moved] + moved
    elif variant == "group-0002-in-dataset":
        ts = d.el(0x00020010, "UI", uid_value(ExplicitVRLittleEndian))
        d.elems.insert(0, (0x00020010, ts))
    else:
        variant = "shuffled"
        original = list(d.elems)
        while d.elems == original:
            rng.shuffle(d.elems)
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)


def mut_missing_sop_instance_uid(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    variant = rng.choice(
        [
            "removed",
            "empty",
            "nul-only",
            "spaces-only",
            "removed-with-sop-class",
            "removed-all-uids",
        ]
    )
    if variant == "removed":
        d.drop(SOP_INSTANCE_UID)
    elif variant == "empty":
        d.put(SOP_INSTANCE_UID, "UI", b"")
    elif variant == "nul-only":
        d.put(SOP_INSTANCE_UID, "UI", b"\0\0")
    elif variant == "spaces-only":
        d.put(SOP_INSTANCE_UID, "UI", b"    ")
    elif variant == "removed-with-sop-class":
        d.drop(SOP_INSTANCE_UID)
        d.drop(SOP_CLASS_UID)
    else:
        for tag in REQUIRED_UIDS[1:]:
            d.drop(tag)
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit)


def mut_odd_length(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    variant = rng.choice(
        ["PatientName", "StudyDescription", "SOPInstanceUID", "PixelData", "StudyDate", "LUT-OW"]
    )
    extra: tuple[str, ...] = ()
    if variant == "PatientName":
        raw = base.patient_name.encode()
        d.put(kw("PatientName"), "PN", raw if len(raw) % 2 else raw + b"X")
    elif variant == "StudyDescription":
        d.put(kw("StudyDescription"), "LO", _phi_text(base).encode()[: 2 * 10 + 1])
    elif variant == "SOPInstanceUID":
        odd = uid if len(uid) % 2 else uid + "1"
        d.put(SOP_INSTANCE_UID, "UI", odd.encode())
        extra = (odd,)
    elif variant == "PixelData":
        pixels = d.value(PIXEL_DATA) or rng.randbytes(512)
        d.put(PIXEL_DATA, "OW", pixels[:-1])
    elif variant == "StudyDate":
        d.put(kw("StudyDate"), "DA", b"2023031")
    else:
        d.put(
            kw("RedPaletteColorLookupTableData"), "OW", rng.randbytes(rng.randrange(0, 64) * 2 + 1)
        )
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit, extra_uids=extra)


def mut_embedded_nul(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    family, _, given = base.patient_name.partition("^")
    variant = rng.choice(
        [
            "Manufacturer-nul-then-patient-id",
            "PatientName-nul",
            "SOPInstanceUID-inner-nul",
            "StudyDescription-nuls-then-name",
            "InstitutionName-all-nul",
            "ImageType-nul-separator",
        ]
    )
    extra: tuple[str, ...] = ()
    if variant == "Manufacturer-nul-then-patient-id":
        d.put(kw("Manufacturer"), "LO", text(b"ACME\0" + base.patient_id.encode()))
    elif variant == "PatientName-nul":
        d.put(kw("PatientName"), "PN", text(f"{family}\0^{given}\0"))
    elif variant == "SOPInstanceUID-inner-nul":
        d.put(SOP_INSTANCE_UID, "UI", uid_value(uid + "\0.99"))
        extra = (uid + "\0.99",)
    elif variant == "StudyDescription-nuls-then-name":
        d.put(kw("StudyDescription"), "LO", text(f"CT\0\0\0{family} {given}"))
    elif variant == "InstitutionName-all-nul":
        d.put(kw("InstitutionName"), "LO", b"\0" * 16)
    else:
        d.put(kw("ImageType"), "CS", text(b"ORIGINAL\0PRIMARY\0AXIAL"))
    return Mutation(d.body(), variant, MALFORMED, explicit=d.explicit, extra_uids=extra)


def mut_huge_vm(rng: random.Random, base: Base, uid: str) -> Mutation:
    variant = rng.choice(
        [
            "ImageType-21000",
            "OtherPatientIDs-5000",
            "WindowCenter-30000",
            "PatientSex-10000",
            "Rows-30000",
            "PatientName-3000",
            "SOPInstanceUID-1000",
            "implicit-ImagePositionPatient-200000",
        ]
    )
    explicit = not variant.startswith("implicit")
    d = Draft(base, uid, explicit=explicit)
    expect = MALFORMED  # VM beyond what the dictionary allows
    if variant == "ImageType-21000":
        d.put(kw("ImageType"), "CS", text("ORIGINAL\\PRIMARY\\AXIAL" + "\\A" * 21000))
        expect = WELL_FORMED  # ImageType is 2-n
    elif variant == "OtherPatientIDs-5000":
        d.put(kw("OtherPatientIDs"), "LO", text("\\".join([base.patient_id] * 5000)))
        expect = WELL_FORMED  # 1-n, but every value is the patient's ID: must go
    elif variant == "WindowCenter-30000":
        d.put(kw("WindowCenter"), "DS", text("\\".join(["1"] * 30000)))
        expect = WELL_FORMED
    elif variant == "PatientSex-10000":
        d.put(kw("PatientSex"), "CS", text("\\".join(["M"] * 10000)))
    elif variant == "Rows-30000":
        d.put(kw("Rows"), "US", struct.pack("<30000H", *([16] * 30000)))
    elif variant == "PatientName-3000":
        d.put(kw("PatientName"), "PN", text("\\".join([base.patient_name] * 3000)))
        expect = WELL_FORMED  # the node does not count values in free text: must go anyway
    elif variant == "SOPInstanceUID-1000":
        d.put(SOP_INSTANCE_UID, "UI", uid_value("\\".join([uid] * 1000)))
    else:
        d.put(kw("ImagePositionPatient"), "DS", text("\\".join(["1"] * 200000)))
    return Mutation(d.body(), variant, expect, explicit=explicit)


def mut_control(rng: random.Random, base: Base, uid: str) -> Mutation:
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    return Mutation(d.body(), "unmutated", VALID, explicit=d.explicit)


MUTATIONS: dict[str, Callable[[random.Random, Base, str], Mutation]] = {
    "truncated": mut_truncated,
    "bad_vr_length": mut_bad_vr_length,
    "undefined_length": mut_undefined_length,
    "item_no_delimiter": mut_item_no_delimiter,
    "length_overflow": mut_length_overflow,
    "deep_nesting": mut_deep_nesting,
    "not_dicom": mut_not_dicom,
    "sop_class_mismatch": mut_sop_class_mismatch,
    "charset_lie": mut_charset_lie,
    "duplicate_tag": mut_duplicate_tag,
    "out_of_order": mut_out_of_order,
    "missing_sop_instance_uid": mut_missing_sop_instance_uid,
    "odd_length": mut_odd_length,
    "embedded_nul": mut_embedded_nul,
    "huge_vm": mut_huge_vm,
}
KINDS = tuple(MUTATIONS)
CONTROL = "control"


@dataclass(frozen=True)
class FuzzObject:
    """One object to send: bytes, how to send them, and what was done to them."""

    oid: int
    kind: str
    base: str
    variant: str
    expect: str
    sop_class: str  # the presentation context's abstract syntax and Affected SOP Class
    sop_instance: str  # Affected SOP Instance UID (also the dataset's, unless mutated away)
    transfer_syntax: str
    body: bytes
    uids: tuple[str, ...]  # every SOP Instance UID the node could key this object on


def object_uid(seed: int, oid: int) -> str:
    # Under the synthetic root, with a "0." arc no synthetic generator uses, so it can
    # never be a substring of a base object's UID (those end in one long digit run).
    return f"{UID_PREFIX}0.{seed}.{oid}"


class Generator:
    """Deterministic objects: the same (seed, oid) always gives the same bytes."""

    def __init__(self, seed: int, count: int) -> None:
        self.seed = seed
        self.count = count
        self.tokens = PhiTokens()
        self.pool = make_pool(self.tokens)
        self.controls = [b for b in self.pool if b.is_control]

    def kind_of(self, oid: int) -> str:
        return KINDS[oid % len(KINDS)] if oid < self.count else CONTROL

    def build(self, oid: int) -> FuzzObject:
        rng = random.Random(f"deid-node-fuzz/{self.seed}/{oid}")
        kind = self.kind_of(oid)
        base = rng.choice(self.controls if kind == CONTROL else self.pool)
        uid = object_uid(self.seed, oid)
        mutate = mut_control if kind == CONTROL else MUTATIONS[kind]
        m = mutate(rng, base, uid)
        return FuzzObject(
            oid=oid,
            kind=kind,
            base=base.name,
            variant=m.variant,
            expect=m.expect,
            sop_class=m.context_class or base.sop_class,
            sop_instance=uid,
            transfer_syntax=ExplicitVRLittleEndian if m.explicit else ImplicitVRLittleEndian,
            body=m.body,
            uids=(uid, *m.extra_uids),
        )


# --------------------------------------------------------------------------------------------
# Sending raw bytes over real associations
# --------------------------------------------------------------------------------------------

_RAW_META: dict[str, FileMetaDataset] = {}  # temp file path -> the meta pynetdicom should use


def install_raw_sender() -> None:
    """Make `send_c_store(path)` stream a file's bytes untouched, whatever they are.

    With STORE_SEND_CHUNKED_DATASET pynetdicom sends the bytes after a file's meta
    unread; it finds the meta with `split_dataset`, which misparses a body that starts
    with group 0002 or is garbage. Our temp files hold only the body, and we hand over
    the meta we built, so the data set on the wire is exactly the bytes generated.
    """
    import pynetdicom.association as association
    from pynetdicom import _config

    original = association.split_dataset  # type: ignore[attr-defined]

    def split(path: Path) -> tuple[Dataset, int]:
        meta = _RAW_META.get(os.fspath(path))
        return (meta, 0) if meta is not None else original(path)

    association.split_dataset = split  # type: ignore[attr-defined]
    _config.STORE_SEND_CHUNKED_DATASET = True


def make_ae(calling_ae: str, request_timeout: float) -> Any:
    """An SCU AE proposing every SOP class we send, each in both transfer syntaxes."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 15
    ae.dimse_timeout = request_timeout
    ae.network_timeout = 30
    ae.connection_timeout = 10
    for sop_class in STORAGE_CLASSES:
        for ts in TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, [ts])  # one syntax each: exact matches only
    return ae


def echo(host: str, port: int, called_ae: str, calling_ae: str, timeout: float = 10) -> bool:
    """One C-ECHO on a fresh association."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.get("Status", -1)) == 0
    finally:
        if assoc.is_established:
            assoc.release()


@dataclass
class Result:
    """What one object got back."""

    oid: int
    kind: str
    base: str
    variant: str
    expect: str
    uids: tuple[str, ...]
    size: int
    status: str = "not-sent"  # "0x0000", "abort", "no-response", "not-sent", "error:..."
    seconds: float = 0.0
    outcome: str = ""  # after the audit: stored / quarantined / failed / unaccounted


def status_text(code: int) -> str:
    return f"0x{code:04X}"


def is_success(status: str) -> bool:
    """0x0000 or a warning (0xB000-0xBFFF, 0x0107, 0x0116): the node took the object."""
    if not status.startswith("0x"):
        return False
    code = int(status, 16)
    return code == 0 or 0xB000 <= code <= 0xBFFF or code in (0x0107, 0x0116)


def is_contract_failure(status: str) -> bool:
    """The failure statuses DESIGN.md allows: 0xA700 and 0xC000-0xCFFF."""
    if not status.startswith("0x"):
        return False
    code = int(status, 16)
    return 0xA700 <= code <= 0xA7FF or 0xC000 <= code <= 0xCFFF


@dataclass
class Target:
    """Where the node listens, and what we can read of it afterwards."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    data_dir: Path | None = None
    output_dir: Path | None = None
    db_path: Path | None = None
    log_path: Path | None = None
    key: bytes | None = None
    scope: str | None = None
    record_linkage: bool = False
    proc: subprocess.Popen[bytes] | None = None


class Sender:
    """Sends scheduled objects over `associations` concurrent associations."""

    def __init__(
        self,
        gen: Generator,
        target: Target,
        schedule: list[int],
        *,
        associations: int,
        per_association: int,
        request_timeout: float,
        deadline: float,
        workdir: Path,
        progress: bool,
        recover: Callable[[Sender], bool] | None = None,
    ) -> None:
        self.gen = gen
        self.recover = recover  # restarts our own node when it died or wedged
        self.recover_lock = threading.Lock()
        self.generation = 0  # bumped by every recovery
        self.inflight: dict[int, int] = {}  # sender thread -> object being sent
        self.target = target
        self.schedule = iter(schedule)
        self.total = len(schedule)
        self.associations = associations
        self.per_association = per_association
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.workdir = workdir
        self.progress = progress
        self.lock = threading.Lock()
        self.results: dict[int, Result] = {}
        self.stop = threading.Event()
        self.node_down = False
        self.associations_opened = 0
        self.association_failures = 0
        self.done = 0
        self.started = time.monotonic()

    def next_oid(self) -> int | None:
        with self.lock:
            if self.stop.is_set():
                return None
            return next(self.schedule, None)

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.worker, args=(k,), name=f"sender-{k}", daemon=True)
            for k in range(self.associations)
        ]
        for t in threads:
            t.start()
        for t in threads:
            # Bounded: every request has its own timeout and the deadline stops the loop.
            t.join(timeout=max(1.0, self.deadline - time.monotonic()) + 4 * self.request_timeout)
        self.stop.set()

    def _associate(self, ae: Any) -> Any | None:
        t = self.target
        while True:
            generation = self.generation
            for attempt in range(5):
                if self.stop.is_set() or time.monotonic() > self.deadline:
                    return None
                assoc = ae.associate(t.host, t.port, ae_title=t.called_ae)
                if assoc.is_established:
                    with self.lock:
                        self.associations_opened += 1
                    return assoc
                with self.lock:
                    self.association_failures += 1
                time.sleep(min(0.2 * 2**attempt, 3.0))
            # Five refusals in a row (about 6 s): the node is gone or wedged.
            if not self._recover(generation):
                self.node_down = True
                self.stop.set()
                return None

    def _recover(self, generation: int) -> bool:
        """Restart the node once per failure, however many threads noticed it."""
        if self.recover is None:
            return False
        with self.recover_lock:
            if self.generation != generation:
                return True  # another thread already brought it back
            if not self.recover(self):
                return False
            self.generation += 1
            return True

    def _check_alive(self) -> None:
        proc = self.target.proc
        if proc is not None and proc.poll() is not None:
            self._recover(self.generation)

    def worker(self, k: int) -> None:
        ae = make_ae(self.target.calling_ae, self.request_timeout)
        path = self.workdir / f"send-{k}.bin"
        assoc: Any = None
        sent_here = 0
        try:
            while (oid := self.next_oid()) is not None:
                if time.monotonic() > self.deadline:
                    self.stop.set()
                    break
                obj = self.gen.build(oid)
                res = Result(
                    oid, obj.kind, obj.base, obj.variant, obj.expect, obj.uids, len(obj.body)
                )
                with self.lock:
                    self.results[oid] = res
                if assoc is None or not assoc.is_established or sent_here >= self.per_association:
                    if assoc is not None and assoc.is_established:
                        assoc.release()
                    assoc, sent_here = self._associate(ae), 0
                    if assoc is None:
                        res.status = "not-sent:association-failed"
                        break
                sent_here += 1
                self.inflight[k] = oid
                self.send_one(assoc, obj, res, path, msg_id=sent_here)
                self.inflight.pop(k, None)
                if res.status in ("abort", "no-response") or res.status.startswith("error"):
                    self._check_alive()
                with self.lock:
                    self.done += 1
                    if self.progress and self.done % 500 == 0:
                        print(f"  {self.done}/{self.total} sent", file=sys.stderr, flush=True)
        finally:
            if assoc is not None and assoc.is_established:
                with contextlib.suppress(Exception):
                    assoc.release()
            _RAW_META.pop(os.fspath(path), None)
            with contextlib.suppress(OSError):
                path.unlink()

    def send_one(self, assoc: Any, obj: FuzzObject, res: Result, path: Path, msg_id: int) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(obj.sop_class)
        meta.MediaStorageSOPInstanceUID = UID(obj.sop_instance)
        meta.TransferSyntaxUID = UID(obj.transfer_syntax)
        path.write_bytes(obj.body)
        _RAW_META[os.fspath(path)] = meta
        t0 = time.monotonic()
        try:
            rsp = assoc.send_c_store(path, msg_id=msg_id)
        except ValueError:  # no accepted presentation context for this class/syntax
            res.status = "not-sent:no-context"
            return
        except Exception as exc:  # the association died under us
            res.status = f"error:{type(exc).__name__}"
            return
        finally:
            res.seconds = time.monotonic() - t0
        if rsp is not None and "Status" in rsp:
            res.status = status_text(int(rsp.Status))
        elif res.seconds >= self.request_timeout - 0.5:
            res.status = "no-response"
        else:
            res.status = "abort"


# --------------------------------------------------------------------------------------------
# The node: our own, or one described by --config / --port
# --------------------------------------------------------------------------------------------

FUZZ_PROFILE = "fuzz"
CONFIG_TEMPLATE = """\
# Written by scripts/fuzz.py: one known sender, everyone else rejected.
[node]
ae_title = "{called}"
host = "127.0.0.1"
port = {port}
data_dir = "data"
max_associations = 16
durability = "os"

[[sources]]
ae_title = "{calling}"
profile = "{profile}"
hosts = ["127.0.0.1"]

[unknown_sources]
action = "reject"

[profiles.{profile}]
options = []
burned_in_annotation = "quarantine"
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deid_node_command() -> list[str]:
    """The console script beside our interpreter, else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / "deid-node"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("deid-node")
    return [found] if found else [sys.executable, "-m", "deid_node"]


def prepare_node(workdir: Path, calling_ae: str, called_ae: str) -> Target:
    """A temp config and data dir for our own node (not started yet)."""
    port = free_port()
    config = workdir / "fuzz.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            called=called_ae, port=port, calling=calling_ae, profile=FUZZ_PROFILE
        )
    )
    data = workdir / "data"
    return Target(
        host="127.0.0.1",
        port=port,
        called_ae=called_ae,
        calling_ae=calling_ae,
        data_dir=data,
        output_dir=data / "output",
        db_path=data / "audit.db",
        log_path=workdir / "node.log",
        key=os.urandom(32),  # handed over in DEID_NODE_SECRET: we can map pseudonyms
        scope=FUZZ_PROFILE,
    )


def launch_node(target: Target, memory_limit_mb: int, timeout: float) -> None:
    """Start (or restart) `deid-node serve` for a prepared target; wait until it echoes."""
    assert target.key is not None and target.log_path is not None
    workdir = target.log_path.parent
    env = dict(os.environ, DEID_NODE_SECRET=target.key.hex())
    env.pop("DEID_NODE_CONFIG", None)
    with target.log_path.open("ab") as log:  # a restart appends: tracebacks stay countable
        proc = subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(workdir / "fuzz.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,  # its own process group: we can reap its workers
        )
    if memory_limit_mb:
        # A memory bomb must fail inside the node (MemoryError), not make the kernel's
        # OOM killer pick processes on a shared machine. Workers inherit the limit.
        limit = memory_limit_mb * 1024 * 1024
        with contextlib.suppress(OSError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))
    target.proc = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = target.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"deid-node serve exited with {proc.returncode}:\n{tail}")
        if echo(target.host, target.port, target.called_ae, target.calling_ae, timeout=5):
            return
        time.sleep(0.3)
    stop_node(target)
    raise RuntimeError(f"deid-node serve did not answer C-ECHO within {timeout:.0f} s")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its direct children, in MiB."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def stop_node(target: Target, grace: float = 30.0) -> dict[str, Any]:
    """SIGTERM, bounded wait, then SIGKILL to its process group; report how it went."""
    proc = target.proc
    if proc is None:
        return {}
    info: dict[str, Any] = {"pid": proc.pid, "peak_rss_mb": peak_rss_mb(proc.pid)}
    if proc.poll() is not None:
        info.update(stopped="already exited", exit_code=proc.returncode)
        return info
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        info.update(stopped="SIGTERM", exit_code=proc.returncode)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        info.update(stopped=f"SIGKILL after {grace:.0f} s", exit_code=proc.returncode)
    # multiprocessing's forkserver and resource tracker leave by themselves within a
    # second or so; whatever is still in the group after 5 s outlived the node.
    linger = time.monotonic() + 5
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            info["orphans_killed"] = False
            break
        if time.monotonic() > linger:
            info["orphans_killed"] = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return info


def external_target(args: argparse.Namespace) -> Target:
    """A node someone else runs: from its config file, or from --host/--port."""
    from deid_node.config import load_config
    from deid_node.deid.secret import load_secret

    if args.config is not None:
        cfg = load_config(Path(args.config))
        calling = args.calling_ae or (cfg.sources[0].ae_title if cfg.sources else "FUZZER")
        source = cfg.source_for(calling)
        profile_name = source.profile if source else cfg.unknown_action
        profile = cfg.profiles.get(profile_name)
        db = None
        if cfg.database_url.startswith("sqlite:///"):
            db = Path(cfg.database_url[len("sqlite:///") :])
        target = Target(
            host=cfg.node.host if cfg.node.host not in ("0.0.0.0", "::") else "127.0.0.1",
            port=cfg.node.port,
            called_ae=args.called_ae or cfg.node.ae_title,
            calling_ae=calling,
            data_dir=cfg.node.data_dir,
            output_dir=cfg.node.output,
            db_path=db,
            scope=profile.pseudonym_scope if profile else None,
            record_linkage=bool(profile and profile.record_linkage),
        )
        secret_path = cfg.node.secret_path
    else:
        data = Path(args.data_dir) if args.data_dir else None
        target = Target(
            host=args.host,
            port=args.port,
            called_ae=args.called_ae or "DEID_NODE",
            calling_ae=args.calling_ae or "FUZZER",
            data_dir=data,
            output_dir=data / "output" if data else None,
            db_path=data / "audit.db" if data else None,
            scope=args.profile,
        )
        secret_path = data / "secret.key" if data else Path("/nonexistent")
    target.log_path = Path(args.node_log) if args.node_log else None
    with contextlib.suppress(Exception):  # no key: stored objects are counted, not mapped
        target.key = load_secret(secret_path, create=False)
    return target


# --------------------------------------------------------------------------------------------
# What the node left behind: audit rows, output files, its log
# --------------------------------------------------------------------------------------------


def audit_rows(db: Path | None, calling_ae: str, after_id: int) -> list[dict[str, Any]] | None:
    """Object rows of this run (read-only); None if there is no readable database."""
    if db is None or not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            "SELECT id, status, reason, pseudo_sop_uid, output_path FROM objects"
            " WHERE calling_ae = ? AND id > ? ORDER BY id",
            (calling_ae, after_id),
        ).fetchall()
        return [dict(r) for r in rows]
    except sqlite3.Error:
        return []  # not created yet
    finally:
        con.close()


def max_audit_id(db: Path | None) -> int:
    if db is None or not db.exists():
        return 0
    with contextlib.suppress(sqlite3.Error):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute("SELECT COALESCE(MAX(id), 0) FROM objects").fetchone()[0])
        finally:
            con.close()
    return 0


ACCEPTED_ROW = ("stored", "duplicate", "quarantined")


def count_files(folder: Path | None) -> int:
    if folder is None or not folder.exists():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file())


def wait_for_drain(
    target: Target, accepted: int, after_id: int, limit: float, stall: float = 90.0
) -> float:
    """Wait until every accepted object has an audit row and the spool is empty.

    Gives up early when the node is dead or nothing moved for `stall` seconds.
    """
    t0 = time.monotonic()
    spool = target.data_dir / "spool" if target.data_dir else None
    last, moved = (-1, -1), time.monotonic()
    while time.monotonic() < limit:
        rows = audit_rows(target.db_path, target.calling_ae, after_id)
        if rows is None:
            break
        done = sum(1 for r in rows if r["status"] in ACCEPTED_ROW)
        left = count_files(spool)
        if done >= accepted and left == 0:
            break
        if (done, left) != last:
            last, moved = (done, left), time.monotonic()
        elif time.monotonic() - moved > stall:
            break
        if target.proc is not None and target.proc.poll() is not None:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


class PhiScanner:
    """Finds planted values (tokens, dates, original UIDs) in bytes."""

    def __init__(self, tokens: PhiTokens, extra_uids: set[str]) -> None:
        self.tokens = tokens
        self.names = {v for v in tokens.values() if TOKEN_RE.fullmatch(v)}
        self.uids = set(tokens.values("uid")) | extra_uids
        dates = sorted(
            (v for v in tokens.values("date") if not TOKEN_RE.fullmatch(v)), key=len, reverse=True
        )
        # Dates need digit boundaries: an 8-digit date inside a 39-digit pseudonym is luck.
        self.dates = re.compile(
            rb"(?<![0-9])(?:" + b"|".join(re.escape(v.encode()) for v in dates) + rb")(?![0-9])"
        )
        self.token_re = re.compile(TOKEN_RE.pattern.encode())
        self.uid_re = re.compile(re.escape(UID_PREFIX.encode()) + rb"[0-9.]*[0-9]")

    def find(self, data: bytes) -> set[str]:
        hits: set[str] = set()
        # NULs dropped too: a UTF-16 token ("P\0H\0I\0...") is still the token.
        for blob in (data, data.replace(b"\0", b"")):
            hits.update(m.decode() for m in self.token_re.findall(blob) if m.decode() in self.names)
        for m in self.uid_re.finditer(data):
            run = m.group().decode()
            cuts = [i for i, c in enumerate(run) if c == "."] + [len(run)]
            hits.update(run[:i] for i in cuts if run[:i] in self.uids)
        hits.update(m.decode() for m in self.dates.findall(data))
        return hits


TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)


def decoded_text(path: Path, limit: int = 200_000) -> bytes | None:
    """Every text value of a file as a DICOM reader shows it; None if pydicom cannot read it.

    Catches identifiers that are only whole after decoding (an ISO 2022 escape pair or
    another character set splitting the raw bytes).
    """
    from pydicom import dcmread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            parts: list[str] = []
            stack: list[Dataset] = [ds, ds.file_meta]  # iterative: outputs may be deep
            seen = 0
            while stack and seen < limit:
                for elem in stack.pop():
                    seen += 1
                    if elem.VR == "SQ":
                        stack.extend(elem.value)
                    elif elem.VR in TEXT_VRS and elem.value is not None:
                        parts.append(str(elem.value))
            return "\n".join(parts).encode("utf-8", "surrogateescape")
    except Exception:
        return None


def exception_summary(log: Path | None) -> dict[str, Any]:
    """Tracebacks in the node's log and the exception type that ended each."""
    if log is None or not log.exists():
        return {"log": None, "tracebacks": 0, "types": {}}
    lines = log.read_text(errors="replace").splitlines()
    types: Counter[str] = Counter()
    count = 0
    end_re = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\w*)(?::|$)")
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            count += 1
            for later in lines[i + 1 : i + 400]:
                m = end_re.match(later)
                if m:
                    types[m.group(1)] += 1
                    break
    return {"log": str(log), "tracebacks": count, "types": dict(types)}


# --------------------------------------------------------------------------------------------
# Final checks and the report
# --------------------------------------------------------------------------------------------


def pseudo_sop(target: Target, uid: str) -> str | None:
    if target.key is None or target.scope is None:
        return None
    from deid_node.deid.pseudonym import pseudo_uid

    return pseudo_uid(target.key, target.scope, uid)


def final_store(gen: Generator, target: Target, workdir: Path, limit: float) -> dict[str, Any]:
    """After the storm: a valid object must still get 0x0000 and be written."""
    out: dict[str, Any] = {"status": None, "written": False}
    uid = f"{object_uid(gen.seed, 10**9)}.{int(time.time())}"  # fresh: never a duplicate
    base = gen.controls[0]
    obj = FuzzObject(
        -1,
        CONTROL,
        base.name,
        "final",
        VALID,
        base.sop_class,
        uid,
        ExplicitVRLittleEndian,
        Draft(base, uid).body(),
        (uid,),
    )
    before = max_audit_id(target.db_path)
    ae = make_ae(target.calling_ae, 30)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae)
    if not assoc.is_established:
        out["status"] = "association-failed"
        return out
    res = Result(-1, CONTROL, base.name, "final", VALID, (uid,), len(obj.body))
    sender = Sender(
        gen,
        target,
        [],
        associations=1,
        per_association=1,
        request_timeout=30,
        deadline=limit,
        workdir=workdir,
        progress=False,
    )
    try:
        sender.send_one(assoc, obj, res, workdir / "final.bin", msg_id=1)
    finally:
        _RAW_META.pop(os.fspath(workdir / "final.bin"), None)
        if assoc.is_established:
            assoc.release()
    out["status"] = res.status
    out["result"] = res  # popped before the report is written
    if res.status != "0x0000":
        return out
    pseudo = pseudo_sop(target, uid)
    while time.monotonic() < limit:
        if pseudo and target.output_dir and any(target.output_dir.rglob(f"{pseudo}.dcm")):
            out["written"] = True
            break
        if pseudo is None:  # no key: a newly stored row will do
            rows = audit_rows(target.db_path, target.calling_ae, before)
            if rows is None:
                out["written"] = None  # cannot tell
                break
            if any(r["status"] in ("stored", "duplicate") for r in rows):
                out["written"] = True
                break
        time.sleep(0.3)
    out["pseudo_sop_uid"] = pseudo
    return out


def summarise(
    gen: Generator,
    target: Target,
    results: dict[int, Result],
    schedule: list[int],
    after_id: int,
    final: Result | None = None,
) -> dict[str, Any]:
    """Join statuses, audit rows and output files into counts and per-object outcomes.

    `final` is the valid object sent after the run: its row and file are known, not counted.
    """
    report: dict[str, Any] = {}
    for oid in schedule:  # objects never reached before the deadline
        if oid not in results:
            kind = gen.kind_of(oid)
            results[oid] = Result(oid, kind, "", "", "", (), 0)
    pseudo_to_oid: dict[str, int] = {}
    for res in [*results.values(), *([final] if final else [])]:
        for u in res.uids:
            p = pseudo_sop(target, u)
            if p:
                pseudo_to_oid[p] = res.oid
    rows = audit_rows(target.db_path, target.calling_ae, after_id)
    stored_oids: dict[int, str] = {}
    audit: dict[str, Any] = {"available": rows is not None}
    if rows is not None:
        audit["rows"] = len(rows)
        audit["by_status"] = dict(Counter(r["status"] for r in rows))
        reasons = Counter(
            (r["status"], re.sub(r"\d+", "N", r["reason"] or "")) for r in rows if r["reason"]
        )
        audit["top_reasons"] = [[s, r, n] for (s, r), n in reasons.most_common(12)]
        unmapped = 0
        for r in rows:
            if r["status"] in ("stored", "duplicate"):
                mapped = pseudo_to_oid.get(r["pseudo_sop_uid"] or "")
                if mapped is None:
                    unmapped += 1
                else:
                    stored_oids[mapped] = r["status"]
        audit["stored_rows_not_mapped"] = unmapped
    accepted = sum(1 for r in results.values() if is_success(r.status) and r.oid >= 0)
    audit["accepted_objects"] = accepted
    if rows is not None:
        final_rows = 1 if final is not None and is_success(final.status) else 0
        audit["rows_for_accepted"] = (
            sum(1 for r in rows if r["status"] in ACCEPTED_ROW) - final_rows
        )

    for res in results.values():
        if is_success(res.status):
            if res.oid in stored_oids:
                res.outcome = "stored"
            else:
                res.outcome = "quarantined" if target.key and rows is not None else "accepted"
        elif res.status.startswith("0x"):
            res.outcome = "failed"
        else:
            res.outcome = "unaccounted"

    # Output files: every one is scanned for every planted value.
    scanner = PhiScanner(gen.tokens, {u for r in results.values() for u in r.uids})
    output: dict[str, Any] = {"dir": str(target.output_dir) if target.output_dir else None}
    leaked: list[dict[str, Any]] = []
    unreadable: list[str] = []  # output that pydicom cannot read is not valid Part-10
    from_kind: Counter[str] = Counter()
    files = 0
    if target.output_dir and target.output_dir.exists():
        for path in sorted(target.output_dir.rglob("*")):
            if not path.is_file():
                continue
            files += 1
            owner_oid = pseudo_to_oid.get(path.stem, -2)
            owner = results.get(owner_oid)
            origin = owner.kind if owner else "final" if owner_oid == -1 else "unknown"
            if owner and owner.expect == MALFORMED:
                origin = f"{origin} (malformed)"
            from_kind[origin] += 1
            hits = scanner.find(path.read_bytes())
            decoded = decoded_text(path) if path.suffix == ".dcm" else b""
            if decoded is None:
                unreadable.append(str(path.relative_to(target.output_dir)))
            else:
                hits |= scanner.find(decoded)
            if hits:
                leaked.append(
                    {
                        "file": str(path.relative_to(target.output_dir)),
                        "oid": owner.oid if owner else None,
                        "variant": owner.variant if owner else None,
                        "origin": origin,
                        "values": sorted(hits)[:8],
                        "kinds": sorted(
                            {gen.tokens.kind_of(h) if h in gen.tokens else "uid" for h in hits}
                        ),
                    }
                )
    output.update(
        files=files, by_origin=dict(from_kind), leaked_files=leaked, unreadable_files=unreadable
    )
    output["from_malformed"] = sum(n for k, n in from_kind.items() if k.endswith("(malformed)"))
    if target.data_dir:
        output["quarantine_files"] = count_files(target.data_dir / "quarantine")
        output["spool_files_left"] = count_files(target.data_dir / "spool")

    # The node must not write PHI to its log or (without linkage) its audit database.
    phi_elsewhere: dict[str, Any] = {}
    if target.log_path and target.log_path.exists():
        phi_elsewhere["node_log"] = sorted(scanner.find(target.log_path.read_bytes()))[:8]
    if target.db_path and target.db_path.exists() and not target.record_linkage:
        blob = b"".join(
            p.read_bytes()
            for p in target.db_path.parent.glob(target.db_path.name + "*")
            if p.is_file()
        )
        phi_elsewhere["audit_db"] = sorted(scanner.find(blob))[:8]

    report.update(audit=audit, output=output, phi_elsewhere=phi_elsewhere)
    report["stored_by_oid"] = stored_oids
    return report


def per_kind_table(results: dict[int, Result]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for res in sorted(results.values(), key=lambda r: r.oid):
        row = table.setdefault(
            res.kind,
            {
                "sent": 0,
                "success": 0,
                "failed": 0,
                "unaccounted": 0,
                "stored": 0,
                "stored_malformed": 0,
                "stored_well_formed": 0,
                "quarantined": 0,
                "statuses": Counter(),
                "stored_variants": Counter(),
            },
        )
        if res.status.startswith("0x") or res.status in ("abort", "no-response"):
            row["sent"] += 1
        row["statuses"][res.status] += 1
        if res.outcome == "stored":
            row["stored"] += 1
            row["stored_variants"][res.variant] += 1
            if res.expect == MALFORMED:
                row["stored_malformed"] += 1
            elif res.expect == WELL_FORMED:
                row["stored_well_formed"] += 1
        row["success"] += is_success(res.status)
        row["failed"] += res.outcome == "failed"
        row["unaccounted"] += res.outcome == "unaccounted"
        row["quarantined"] += res.outcome == "quarantined"
    for row in table.values():
        row["statuses"] = dict(row["statuses"].most_common())
        row["stored_variants"] = dict(row["stored_variants"].most_common())
    return table


def check_invariants(
    report: dict[str, Any], results: dict[int, Result]
) -> dict[str, dict[str, Any]]:
    inv: dict[str, dict[str, Any]] = {}

    def put(name: str, ok: bool, detail: str) -> None:
        inv[name] = {"ok": bool(ok), "detail": detail}

    final = report["final"]
    put(
        "node_serving",
        final["echo"]
        and final["store"]["status"] == "0x0000"
        and final["store"]["written"] is not False
        and not report["node"].get("died_during_run")
        and not report.get("node_down_during_send"),
        f"C-ECHO {'ok' if final['echo'] else 'FAILED'}, valid C-STORE {final['store']['status']},"
        f" written {final['store']['written']},"
        f" node died/wedged {len(report['node'].get('crashes', []))} time(s),"
        f" refused associations mid-run: {'yes' if report.get('node_down_during_send') else 'no'}",
    )
    peak = report["node"].get("peak_rss_mb")
    limit = report.get("max_node_rss_mb", 0)
    if peak is not None and limit:
        put(
            "node_memory_bounded",
            peak <= limit,
            f"peak RSS {peak} MiB (node and workers), limit {limit} MiB",
        )
    not_sent = [r for r in results.values() if r.status.startswith(("not-sent", "error"))]
    put(
        "all_sent",
        not not_sent,
        f"{len(not_sent)} object(s) not sent (deadline, context or node down)",
    )
    lost = [r for r in results.values() if r.status in ("abort", "no-response")]
    audit = report["audit"]
    counts_ok = True
    detail = f"{len(lost)} object(s) without a DIMSE status (abort/no response)"
    if audit["available"]:
        counts_ok = audit.get("rows_for_accepted", 0) == audit["accepted_objects"]
        detail += (
            f"; {audit['accepted_objects']} accepted vs {audit.get('rows_for_accepted', 0)}"
            " stored/duplicate/quarantined audit rows"
        )
    put("every_object_accounted", not lost and counts_ok, detail)
    exc = report["exceptions"]
    c211 = sum(1 for r in results.values() if r.status == "0xC211")
    put(
        "no_escaped_exceptions",
        exc["tracebacks"] == 0 and c211 == 0,
        f"{exc['tracebacks']} traceback(s) in node log {exc['types']}, {c211} x 0xC211",
    )
    out = report["output"]
    elsewhere = report["phi_elsewhere"]
    put(
        "no_phi_leak",
        not out["leaked_files"] and not any(elsewhere.values()),
        f"{len(out['leaked_files'])} output file(s) with planted values;"
        f" log {len(elsewhere.get('node_log', []))}, audit db {len(elsewhere.get('audit_db', []))}",
    )
    put(
        "outputs_readable",
        not out.get("unreadable_files"),
        f"{len(out.get('unreadable_files', []))} output file(s) pydicom cannot read",
    )
    malformed_stored = [
        r for r in results.values() if r.outcome == "stored" and r.expect == MALFORMED
    ]
    put(
        "no_malformed_stored",
        not malformed_stored and out.get("from_malformed", 0) == 0,
        f"{len(malformed_stored)} malformed object(s) stored",
    )
    controls = [r for r in results.values() if r.kind == CONTROL]
    bad_controls = [r for r in controls if r.status != "0x0000" or r.outcome == "quarantined"]
    put(
        "controls_stored",
        not bad_controls,
        f"{len(controls) - len(bad_controls)}/{len(controls)} controls stored",
    )
    return inv


def print_summary(report: dict[str, Any]) -> None:
    r = report
    a, o, n = r["audit"], r["output"], r["node"]
    st: Counter[str] = Counter()
    for row in r["kinds"].values():
        for s, c in row["statuses"].items():
            st[s] += c
    ok = sum(c for s, c in st.items() if is_success(s))
    contract = sum(c for s, c in st.items() if is_contract_failure(s))
    other = sum(
        c
        for s, c in st.items()
        if s.startswith("0x") and not is_success(s) and not is_contract_failure(s)
    )
    print(
        f"deid-node fuzz: {r['count']} malformed + {r['controls']} control objects,"
        f" seed {r['seed']},"
        f" {r['associations']} association(s), {r['seconds']:.0f} s;"
        f" node {n['host']}:{n['port']} ({'started here' if n['started_here'] else 'external'})"
    )
    code = n.get("code")
    if code:
        dirty = f", uncommitted: {', '.join(code['uncommitted'])}" if code["uncommitted"] else ""
        print(f"  node code   {code['commit']}{dirty}")
    print(
        f"  statuses    success {ok} | failure 0xA7xx/0xCxxx {contract} | other failure {other}"
        f" | abort {st['abort']} | no response {st['no-response']}"
        f" | not sent {sum(c for s, c in st.items() if s.startswith(('not-sent', 'error')))}"
    )
    top = ", ".join(f"{s} x{c}" for s, c in st.most_common(6))
    print(f"  top         {top}")
    if a["available"]:
        print(
            f"  audit       {a['by_status']} ; rows for accepted objects"
            f" {a.get('rows_for_accepted')}/{a['accepted_objects']}"
        )
    else:
        print("  audit       not readable (no data dir / not SQLite)")
    print(
        f"  output      {o['files']} file(s), with planted PHI {len(o['leaked_files'])},"
        f" from malformed objects {o.get('from_malformed', 0)}, by origin {o['by_origin']};"
        f" quarantine {o.get('quarantine_files', '?')}, spool left {o.get('spool_files_left', '?')}"
    )
    e = r["exceptions"]
    print(
        f"  exceptions  tracebacks {e['tracebacks']} {e['types'] or ''};"
        f" PHI in log {len(r['phi_elsewhere'].get('node_log', []))},"
        f" in audit db {len(r['phi_elsewhere'].get('audit_db', []))}"
    )
    f = r["final"]
    print(
        f"  final       C-ECHO {'ok' if f['echo'] else 'FAILED'},"
        f" valid C-STORE {f['store']['status']},"
        f" written {f['store']['written']}; node peak RSS {n.get('peak_rss_mb', '?')} MiB,"
        f" stop {n.get('stopped', '-')}"
    )
    print()
    print(
        f"  {'kind':26}{'sent':>6}{'succ':>6}{'fail':>6}{'lost':>6}"
        f"{'stored':>7}{'st.mal':>7}{'quar':>6}  top status"
    )
    for kind, row in r["kinds"].items():
        top1 = max(row["statuses"].items(), key=lambda kv: kv[1])[0] if row["statuses"] else "-"
        print(
            f"  {kind:26}{row['sent']:>6}{row['success']:>6}{row['failed']:>6}"
            f"{row['unaccounted']:>6}"
            f"{row['stored']:>7}{row['stored_malformed']:>7}{row['quarantined']:>6}  {top1}"
        )
    if a.get("top_reasons"):
        print("\n  top audit reasons:")
        for status, reason, count in a["top_reasons"][:6]:
            print(f"    {count:>6} {status}: {reason[:90]}")
    print()
    for name, v in r["invariants"].items():
        print(f"  {'PASS' if v['ok'] else 'FAIL'}  {name}: {v['detail']}")
    print(f"\n  {'OK: every invariant holds' if r['ok'] else 'FAILED'}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000, help="malformed objects to send")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="config of a running node (else we start our own)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="port of a running node (else we start our own)")
    p.add_argument("--called-ae", help="the node's AE title [DEID_NODE]")
    p.add_argument("--calling-ae", help="our AE title [FUZZER, or the config's first source]")
    p.add_argument("--data-dir", help="with --port: the node's data dir (audit.db, output/)")
    p.add_argument("--profile", help="with --port: the sender's profile (pseudonym scope)")
    p.add_argument("--node-log", help="with --config/--port: the node's log, for tracebacks")
    p.add_argument("--associations", type=int, default=4, choices=range(1, 9), metavar="1..8")
    p.add_argument("--per-association", type=int, default=100, help="objects per association")
    p.add_argument(
        "--control-every", type=int, default=100, help="a valid control after N (0: none)"
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per C-STORE")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="total time limit")
    p.add_argument("--kinds", help="only these kinds, comma-separated (object ids unchanged)")
    p.add_argument("--oid", type=int, action="append", help="only this object id (repeatable)")
    p.add_argument(
        "--node-memory-mb",
        type=int,
        default=4096,
        help="address-space limit of our own node's processes (0: none)",
    )
    p.add_argument(
        "--restart-on-crash",
        action="store_true",
        help="restart our own node when it dies or wedges, and carry on (crashes are reported)",
    )
    p.add_argument("--max-restarts", type=int, default=20)
    p.add_argument(
        "--max-node-rss-mb",
        type=int,
        default=2048,
        help="invariant: our node's peak RSS (main + workers) stays below this (0: no check)",
    )
    p.add_argument(
        "--drain-stall",
        type=float,
        default=90.0,
        help="stop waiting for the spool to drain after this long without progress",
    )
    p.add_argument(
        "--stop-grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL"
    )
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--keep", action="store_true", help="keep our node's temp folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.count < 0:
        p.error("--count must be >= 0")
    unknown = set(args.kinds.split(",")) - set(KINDS) if args.kinds else set()
    if unknown:
        p.error(f"unknown kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    if args.config and args.port:
        p.error("--config and --port exclude each other")
    return args


def crash_record(target: Target, sender: Sender, state: str) -> dict[str, Any]:
    """What we know about a node that died or stopped answering."""
    proc = target.proc
    lost = sorted(r.oid for r in sender.results.values() if r.status in ("abort", "no-response"))
    return {
        "state": state,
        "exit_code": proc.returncode if proc is not None else None,
        "inflight": sorted(sender.inflight.values()),
        "lost_so_far": lost[-8:],
        "at_seconds": round(time.monotonic() - sender.started, 1),
    }


def make_recover(
    target: Target, crashes: list[dict[str, Any]], args: argparse.Namespace
) -> Callable[[Sender], bool]:
    """A callback that restarts our node (same data dir and port) after it died or wedged."""

    def recover(sender: Sender) -> bool:
        proc = target.proc
        if proc is not None and proc.poll() is None:
            if echo(target.host, target.port, target.called_ae, target.calling_ae):
                return True  # only busy
            record = crash_record(target, sender, "wedged")
            record["peak_rss_mb"] = peak_rss_mb(proc.pid)
            stop_node(target, grace=10)
            record["exit_code"] = proc.returncode
        else:
            record = crash_record(target, sender, "died")
        crashes.append(record)
        if len(crashes) > args.max_restarts:
            return False
        # The node drains what is left in its spool before it serves again (DESIGN.md).
        wait = max(60.0, sender.deadline - time.monotonic())
        try:
            launch_node(target, args.node_memory_mb, timeout=min(wait, 900.0))
        except RuntimeError:
            return False
        record["restarted_in_s"] = round(
            time.monotonic() - sender.started - record["at_seconds"], 1
        )
        return True

    return recover


def node_code_version() -> dict[str, Any]:
    """The commit our own node runs from, and node files changed since (others edit them)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "deid_node")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": [line[3:] for line in dirty.splitlines()],
    }


def make_schedule(
    count: int, control_every: int, kinds: set[str] | None = None, oids: list[int] | None = None
) -> tuple[list[int], int]:
    """Send order: malformed oids 0..count-1 with a control oid after every N of them.

    Filters keep object ids (so `--oid 209` is the same object as in the full run).
    """
    order: list[int] = []
    controls = 0
    for oid in range(count):
        wanted_kind = kinds is None or KINDS[oid % len(KINDS)] in kinds
        if wanted_kind and (oids is None or oid in oids):
            order.append(oid)
        if control_every and (oid + 1) % control_every == 0:
            order.append(count + controls)
            controls += 1
    return order, controls


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    limit = t_start + args.max_seconds
    install_raw_sender()
    from deid_node.logs import quiet_libraries

    quiet_libraries()  # pynetdicom would log every abort we provoke
    gen = Generator(args.seed, args.count)
    kinds = set(args.kinds.split(",")) if args.kinds else None
    schedule, controls = make_schedule(args.count, args.control_every, kinds, args.oid)
    workdir = Path(tempfile.mkdtemp(prefix="deid-fuzz-"))
    own = args.config is None and args.port is None
    target: Target | None = None
    report: dict[str, Any] = {
        "count": args.count,
        "controls": controls,
        "seed": args.seed,
        "associations": args.associations,
        "max_node_rss_mb": args.max_node_rss_mb,
        "kinds_cycled": list(KINDS),
        "objects_columns": [
            "oid",
            "kind",
            "base",
            "variant",
            "expect",
            "status",
            "outcome",
            "bytes",
            "seconds",
        ],
    }
    try:
        crashes: list[dict[str, Any]] = []
        recover: Callable[[Sender], bool] | None = None
        if own:
            target = prepare_node(
                workdir, args.calling_ae or "FUZZER", args.called_ae or "DEID_NODE"
            )
            launch_node(target, args.node_memory_mb, timeout=60)
            if args.restart_on_crash:
                recover = make_recover(target, crashes, args)
        else:
            target = external_target(args)
        after_id = max_audit_id(target.db_path)
        report["node"] = {
            "host": target.host,
            "port": target.port,
            "called_ae": target.called_ae,
            "calling_ae": target.calling_ae,
            "started_here": own,
            "key_known": target.key is not None,
            "data_dir": str(target.data_dir),
        }
        if own:
            report["node"]["code"] = node_code_version()
        # Keep a quarter of the time (at most 5 min) for the drain and final checks.
        send_deadline = limit - min(300.0, args.max_seconds / 4)
        sender = Sender(
            gen,
            target,
            schedule,
            associations=args.associations,
            per_association=args.per_association,
            request_timeout=args.request_timeout,
            deadline=send_deadline,
            workdir=workdir,
            progress=not args.quiet,
            recover=recover,
        )
        sender.run()
        if own and target.proc is not None and target.proc.poll() is not None:
            crashes.append(crash_record(target, sender, "died"))
        report["node"]["crashes"] = crashes
        report["sending_seconds"] = round(time.monotonic() - t_start, 1)
        report["associations_opened"] = sender.associations_opened
        report["association_failures"] = sender.association_failures
        report["node_down_during_send"] = sender.node_down
        accepted = sum(1 for r in sender.results.values() if is_success(r.status))
        # A node that stopped answering will not drain either: do not wait long for it.
        stall = 10.0 if sender.node_down else args.drain_stall
        report["drain_seconds"] = round(
            wait_for_drain(target, accepted, after_id, limit - 60, stall=stall), 1
        )
        if crashes:
            report["node"]["died_during_run"] = [c["exit_code"] for c in crashes]
        echo_ok = echo(target.host, target.port, target.called_ae, target.calling_ae)
        store = final_store(gen, target, workdir, min(limit, time.monotonic() + 60))
        report["final"] = {"echo": echo_ok, "store": store}
        if store.get("status") == "0x0000":  # let its audit row land before counting
            wait_for_drain(target, accepted + 1, after_id, min(limit, time.monotonic() + 30))
        report["node"].update(stop_node(target, grace=args.stop_grace))
        if own:  # a node we restarted had its own peak before it was killed
            peaks = [c.get("peak_rss_mb", 0.0) for c in crashes]
            report["node"]["peak_rss_mb"] = max([report["node"]["peak_rss_mb"], *peaks])
        results = sender.results
        final_res = store.pop("result", None)
        report.update(summarise(gen, target, results, schedule, after_id, final_res))
        report["exceptions"] = exception_summary(target.log_path)
        report["exceptions"]["status_0xC211"] = sum(
            1 for r in results.values() if r.status == "0xC211"
        )
        report["kinds"] = per_kind_table(results)
        report["invariants"] = check_invariants(report, results)
        report["ok"] = all(v["ok"] for v in report["invariants"].values())
        report["seconds"] = round(time.monotonic() - t_start, 1)
        report["objects"] = [
            [
                r.oid,
                r.kind,
                r.base,
                r.variant,
                r.expect,
                r.status,
                r.outcome,
                r.size,
                round(r.seconds, 2),
            ]
            for r in sorted(results.values(), key=lambda r: r.oid)
        ]
        report.pop("stored_by_oid", None)
        return report
    finally:
        if target is not None and target.proc is not None and target.proc.poll() is None:
            stop_node(target)
        if own and args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
