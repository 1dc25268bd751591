"""The output check: no original identifier may survive in what is written.

An object's needles (its names, IDs, accession number, birth date and replaced UIDs) are
collected before the walk; the encoded header is searched for them once; only a hit costs
a per-element search that names the attribute (never the value) or finds that the hit is
inside values the profile itself writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from deid_node.config import ProfileConfig
from deid_node.deid.marks import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, method_text
from deid_node.deid.profiles import BASIC_PROFILE_CODE, OPTION_CODES
from deid_node.deid.values import DUMMIES, DUMMY_TEXT
from deid_node.dicom.part10 import PIXEL_DATA_TAGS
from deid_node.errors import DeidError

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
    # Latin-1 drops what it cannot encode: what is left of "И.Федотова" is a lone dot.
    return sorted(
        (e for e in encoded if not e.isascii() or _ASCII_WORD.search(e)),
        key=lambda v: (-len(v), v),
    )


_ASCII_WORD = re.compile(rb"[A-Za-z0-9]")


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


def make_needles(
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
    texts = [DUMMY_TEXT, *(v for v in DUMMIES.values() if isinstance(v, str))]
    texts += [value for _, value in config.replace]
    trial = config.trial
    if trial is not None:
        texts += [trial.sponsor, trial.protocol_id, trial.protocol_name, trial.site_id]
        texts += [trial.site_name, trial.coordinating_center]
    texts += [method_text(), method_text(pixels_may_identify=True)]
    texts += ["YES", "NO", "DCM", "MODIFIED", "REMOVED", "UNMODIFIED"]
    for code in (BASIC_PROFILE_CODE, *(OPTION_CODES[o] for o in config.options)):
        texts += code
    texts += ["DICM", IMPLEMENTATION_VERSION]
    texts = [t for t in texts if t]
    return ProfileWrites(values=frozenset(t.strip().casefold() for t in texts))


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
        if top and int(tag) in PIXEL_DATA_TAGS:
            continue  # the pixel bytes are not verified; what follows them is
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
