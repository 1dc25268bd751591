"""Mutations that keep a data set's structure but lie in its values.

SOP class, character set, repeated and out-of-order tags, missing UIDs, odd lengths,
embedded NULs, huge value multiplicities, and the unmutated control.
"""

from __future__ import annotations

import random
import struct
from typing import Final

from pydicom.uid import UID, ExplicitVRLittleEndian

from deid_node.testing.fuzz.draft import (
    MALFORMED,
    STORAGE_CLASSES,
    VALID,
    WELL_FORMED,
    Base,
    Draft,
    Mutation,
    patient_elements,
    phi_text,
)
from deid_node.testing.fuzz.encoding import (
    PIXEL_DATA,
    REQUIRED_UIDS,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARSET,
    item,
    kw,
    sequence,
    text,
    uid_value,
)

__all__ = [
    "mut_charset_lie",
    "mut_control",
    "mut_duplicate_tag",
    "mut_embedded_nul",
    "mut_huge_vm",
    "mut_missing_sop_instance_uid",
    "mut_odd_length",
    "mut_out_of_order",
    "mut_sop_class_mismatch",
]


def mut_sop_class_mismatch(rng: random.Random, base: Base, uid: str) -> Mutation:
    """A data set whose SOP class is not the context's, unknown, or missing."""
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


CHARSET_TERMS: Final = (
    "ISO_IR 999",
    "UTF-8",
    "latin1",
    "ISO-8859-1",
    "ISO_IR 100\\ISO_IR 999",
    "\x1b%G",
)


def mut_charset_lie(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Text bytes that the declared Specific Character Set cannot (or can only just) read."""
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
    """A tag twice, the two values differing (which one would a reader keep?)."""
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
        real_name, decoy_name = text(base.patient_name), text("DOE^JOHN")
        first, second = (
            (real_name, decoy_name) if "real-then" in variant else (decoy_name, real_name)
        )
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
        content = patient_elements(d) + pid_el
        tag = kw("OtherPatientIDsSequence")
        d.put_raw(tag, sequence(tag, [item(content)], explicit=d.explicit, defined=False))
    # Two names are both read and scrubbed and equal copies written once (dicom/repair.py);
    # two patient IDs, UIDs, character sets or numbers have no sure reading: refused.
    repaired = variant.startswith("PatientName") or variant in (
        "PixelData-twice",
        "in-sequence-item",
    )
    expect = WELL_FORMED if repaired else MALFORMED
    return Mutation(d.body(), variant, expect, explicit=d.explicit, extra_uids=extra)


def mut_out_of_order(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Elements out of ascending tag order, or a file meta element in the body."""
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
    """SOP Instance UID (and other UIDs) removed, empty or blank."""
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
    """A value of odd length, in text, UIDs, pixel data and LUTs."""
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    variant = rng.choice(
        ["PatientName", "StudyDescription", "SOPInstanceUID", "PixelData", "StudyDate", "LUT-OW"]
    )
    extra: tuple[str, ...] = ()
    if variant == "PatientName":
        raw = base.patient_name.encode()
        d.put(kw("PatientName"), "PN", raw if len(raw) % 2 else raw + b"X")
    elif variant == "StudyDescription":
        d.put(kw("StudyDescription"), "LO", phi_text(base).encode()[: 2 * 10 + 1])
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
    # An odd length is padded (dicom/repair.py): stored, or quarantined for what the
    # padded value means (pixel data a byte too long, a date of seven digits).
    return Mutation(d.body(), variant, WELL_FORMED, explicit=d.explicit, extra_uids=extra)


def mut_embedded_nul(rng: random.Random, base: Base, uid: str) -> Mutation:
    """NUL bytes inside text and UID values."""
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
    # A NUL inside free text or a name is a space (dicom/repair.py); in a UID or a code
    # it has no sure reading.
    repaired = variant not in ("SOPInstanceUID-inner-nul", "ImageType-nul-separator")
    expect = WELL_FORMED if repaired else MALFORMED
    return Mutation(d.body(), variant, expect, explicit=d.explicit, extra_uids=extra)


def mut_huge_vm(rng: random.Random, base: Base, uid: str) -> Mutation:
    """Thousands of values in one element, within and beyond what the dictionary allows."""
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
    """The base unchanged: a valid object the node must store."""
    d = Draft(base, uid, explicit=rng.random() < 0.8)
    return Mutation(d.body(), "unmutated", VALID, explicit=d.explicit)
