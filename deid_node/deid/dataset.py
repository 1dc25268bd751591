"""Apply a compiled profile to one dataset: recursive, keyed, fail-closed.

`deidentify_dataset()` changes the dataset in place and returns what the caller needs
(pseudonyms for the layout and audit, originals for linkage, and the byte strings that
must never appear in the output, for `verify_clean()`). Anything unexpected raises
DeidError whose message names a tag or a rule, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pydicom.config
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from deid_node.config import BurnedInPolicy, Option
from deid_node.deid.burned_in import suspicion
from deid_node.deid.decisions import CLEANED_VRS, ID_TAGS, dictionary_vr, op_table
from deid_node.deid.marks import mark, new_meta, write_trial
from deid_node.deid.private import (
    Kind,
    has_shape,
    kind_for,
    listed_kinds,
    sent_vr,
    strings_of,
    whole_units,
)
from deid_node.deid.profiles import (
    TEXT_VRS,
    CompiledProfile,
    Op,
    safe_private_vrs,
)
from deid_node.deid.pseudonym import (
    date_offset_days,
    pseudo_patient_id,
    pseudo_uid,
    shift_date,
    shift_datetime,
)
from deid_node.deid.text import (
    CODE_TAGS,
    CODE_VALUE_TAG,
    DESIGNATOR_TAG,
    MEANING_TAG,
    STANDARD_SCHEMES,
    cleaner,
    fit,
    known_meaning,
)
from deid_node.deid.values import (
    DUMMIES,
    DUMMY_TEXT,
    EAST_ASIAN,
    EMPTY,
    JOINER,
    MAX_LENGTH,
    MIN_SCRUB_LEN,
    date_forms,
    joined_names,
    name_parts,
    text_of,
    values_of,
)
from deid_node.deid.verify import Needles, make_needles, written_by
from deid_node.dicom.encoding import MAX_SEQUENCE_DEPTH
from deid_node.dicom.part10 import transfer_syntax_of
from deid_node.dicom.pydicom_compat import is_dictionary_uid
from deid_node.errors import DeidError

# Values that fail validation must never reach a log or a warning: they may be PHI.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

_REMOVING_OPS = frozenset(
    {Op.REMOVE, Op.EMPTY, Op.DUMMY, Op.UID, Op.PATIENT_ID, Op.PATIENT_NAME, Op.REPLACE}
)
_ADDRESS_TAGS = frozenset({0x00101040, 0x00080081, 0x00080092, 0x00102154, 0x00102150, 0x00102152})
# Identifiers checked for in the output bytes (patient ID, other IDs, accession number).
_NEEDLEID_TAGS = frozenset({0x00100020, 0x00101000, 0x00080050})
_PATIENT_NAME_TAGS = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})
_MIN_NEEDLE_LEN = 4
_MIN_NUMERIC_NEEDLE_LEN = 6
_MIN_JOINED_NEEDLE_LEN = 6  # names run together: HAZELCOOK, H.COOK
_UNSPACED = re.compile(r"[^\W_]+")  # names run together with no separator
_MIN_UID_NEEDLE_LEN = 8  # shorter 'UIDs' are junk values, not identifiers


@dataclass(frozen=True)
class Originals:
    """Original identifiers, kept only for the linkage table. PHI: never log."""

    patient_id: str
    patient_name: str
    accession_number: str
    study_uid: str
    series_uid: str
    sop_uid: str
    date_shift_days: int | None  # the keyed offset applied to every date, None if unshifted


@dataclass(frozen=True)
class DeidResult:
    """What de-identifying one dataset produced."""

    dataset: Dataset
    pseudo_patient_id: str
    pseudo_study_uid: str
    pseudo_series_uid: str
    pseudo_sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    originals: Originals
    needles: Needles = field(repr=False)  # must not occur in the output
    # The pixels may carry burned-in text and the profile cleans it: the caller must
    # (pixels/release.py), then mark the object (marks.mark_pixels), or not write it.
    pixels_to_clean: bool = False
    # Under `quarantine`: the pixels are only checked; text found means the object is withheld.
    pixels_check_only: bool = False
    pixels_reason: str | None = None  # why the pixels are looked at (no value in it)


def _raw_vr(ds: Dataset, tag: int) -> str:
    """The element's VR without converting its value (dictionary VR for implicit/UN)."""
    elem = ds.get_item(tag)
    vr = elem.VR if isinstance(elem, RawDataElement | DataElement) else None
    if vr and vr != "UN" and " or " not in vr:
        return str(vr)
    return dictionary_vr(tag) or (str(vr) if vr else "UN")


def _elem(ds: Dataset, tag: int) -> DataElement:
    try:
        return ds[tag]
    except Exception as exc:  # a value pydicom cannot convert: never guess, never echo it
        raise DeidError(f"unreadable value in {_tag_name(tag)} ({type(exc).__name__})") from None


def _tag_name(tag: int) -> str:
    kw = keyword_for_tag(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + kw if kw else ''}"


class _Deidentifier:
    """One object's walk: keyed context, identifier scrubber and needles."""

    def __init__(self, profile: CompiledProfile, key: bytes, patient_identity: str) -> None:
        self.profile = profile
        self.ops = profile.ops
        self.key = key
        self.scope = profile.config.pseudonym_scope
        self.days = date_offset_days(key, self.scope, patient_identity)
        self.retain_uids = profile.has(Option.RETAIN_UIDS)
        self.full_dates = profile.has(Option.RETAIN_LONGITUDINAL_FULL_DATES)
        self.modified_dates = profile.has(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        self.scrub: re.Pattern[str] | None = None
        self.needles: set[str] = set()  # names, IDs, dates that must not survive
        self.uid_needles: set[str] = set()  # original UIDs that were replaced
        self.uid_cache: dict[str, str] = {}
        self.pseudo_pid = ""
        self.written = written_by(profile.config)
        self.table = op_table(profile)
        self.text = cleaner(profile.config.allow_words)
        # Attributes whose value held a NUL inside (dicom/repair.py): cleaned as free text.
        self.text_tags: frozenset[int] = frozenset()

    # -- identifiers ------------------------------------------------------------
    def collect(self, ds: Dataset) -> None:
        """Gather every identifying value of the object before anything changes."""
        words: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        self._collect(ds, words, pairs)
        words = {w for w in words if self.written.may_identify(w)}
        if words or pairs:
            # Same values, same pattern text: re's cache compiles it once per patient.
            patterns = {re.escape(w) for w in words}
            patterns |= {re.escape(a) + JOINER + re.escape(b) for a, b in pairs}
            alternatives = "|".join(sorted(patterns, key=lambda w: (-len(w), w)))
            self.scrub = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.I)

    def _collect(
        self, ds: Dataset, words: set[str], pairs: set[tuple[str, str]], depth: int = 0
    ) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            # Nothing real nests this deep, and pydicom's writer degrades badly on it.
            raise DeidError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
        for tag in list(ds.keys()):
            t = int(tag)
            if t >> 16 & 1:
                continue  # private values are removed or known safe, never scrub sources
            vr = _raw_vr(ds, t)
            if vr == "SQ":
                for item in _elem(ds, t).value or ():
                    self._collect(item, words, pairs, depth + 1)
            elif vr == "PN":
                value = _elem(ds, t).value
                if self.ops.get(t, Op.EMPTY) in _REMOVING_OPS:
                    words.update(name_parts(value))
                    pairs.update(joined_names(value))  # HAZELCOOK in a kernel name
                # Only the patient's own names are checked in the output: other names are
                # emptied anyway, and short common words there give false alarms.
                if t in _PATIENT_NAME_TAGS and self.ops.get(t) is not Op.KEEP_VERBATIM:
                    self.needles.update(p for p in name_parts(value) if len(p) >= _MIN_NEEDLE_LEN)
                    joined = {a + b for a, b in joined_names(value)}
                    self.needles.update(
                        j
                        for j in joined
                        if _UNSPACED.fullmatch(j)
                        and (len(j) >= _MIN_JOINED_NEEDLE_LEN or EAST_ASIAN.search(j))
                    )
            elif vr == "DA":
                for v in values_of(_elem(ds, t).value):
                    words.update(date_forms(v))
                    if t == 0x00100030 and not self.full_dates:
                        self.needles.update(date_forms(v)[:1])
            elif t in ID_TAGS and self.ops.get(t) in _REMOVING_OPS:
                # Only identifiers this profile takes out: a kept InstitutionName (retain
                # institution identity) must not be scrubbed from itself.
                for v in values_of(_elem(ds, t).value):
                    v = v.strip()
                    if len(v) >= MIN_SCRUB_LEN:
                        words.add(v)
                        # Short numbers also occur as IS/DS values: checking them in the
                        # output would quarantine clean objects.
                        long_enough = len(v) >= (
                            _MIN_NUMERIC_NEEDLE_LEN if v.isdigit() else _MIN_NEEDLE_LEN
                        )
                        if long_enough and t in _NEEDLEID_TAGS:
                            self.needles.add(v)
                    if t in _ADDRESS_TAGS:
                        words.update(w for w in re.split(r"[\s,;^]+", v) if len(w) >= 3)

    def clean_text(self, text: str) -> str:
        """Remove the object's own identifying values from free text."""
        return self.scrub.sub("***", text) if self.scrub else text

    # -- pseudonyms ---------------------------------------------------------------
    def uid(self, value: str) -> str:
        """Keyed UID for an instance UID; registered (well-known) UIDs are kept."""
        value = value.strip("\0 ")
        if not value or is_dictionary_uid(value):
            return value
        new = self.uid_cache.get(value)
        if new is None:
            new = pseudo_uid(self.key, self.scope, value)
            self.uid_cache[value] = new
            if len(value) >= _MIN_UID_NEEDLE_LEN:
                self.uid_needles.add(value)
        return new

    # -- the walk -----------------------------------------------------------------
    def walk(self, ds: Dataset, dummy_mode: bool = False, *, item: bool = False) -> None:
        """Apply the profile to every element of ds, recursing into sequences (`item`:
        ds is a sequence item, not the object)."""
        kept_blocks: set[tuple[int, int]] = set()
        creators: list[int] = []
        # A coded entry of a standard scheme keeps its code and meaning as sent.
        standard_code = item and _designator(ds) in STANDARD_SCHEMES
        for tag in list(ds.keys()):
            t = int(tag)
            group = t >> 16
            if group & 1:
                if 0x0010 <= (t & 0xFFFF) <= 0x00FF:
                    creators.append(t)
                elif self._private(ds, t, dummy_mode):
                    kept_blocks.add((group, (t >> 8) & 0xFF))
                continue
            if (t & 0xFFFF) == 0 or group == 0x0002:
                del ds[t]  # group lengths go stale; file meta never belongs in a body
                continue
            op = self.table.op(t, dummy_mode)
            # In a standard item a meaning is kept if the cleaner keeps it whole or the
            # scheme gives it to that code; any other meaning is cleaned like the rest.
            if (
                standard_code
                and op is Op.CLEAN
                and t in CODE_TAGS
                and (t != MEANING_TAG or self._standard_meaning(ds))
            ):
                op = Op.KEEP
            self.apply(ds, t, op, dummy_mode)
        for t in creators:
            if (t >> 16, t & 0xFF) not in kept_blocks:
                del ds[t]

    def _private(self, ds: Dataset, t: int, dummy_mode: bool) -> bool:
        """Keep a private element only if it is known safe; True if kept."""
        group, elem = t >> 16, t & 0xFFFF
        if t in self.profile.verbatim:
            return True
        if (
            not self.profile.keep_safe_private
            or elem < 0x1000
            or group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF)
        ):
            del ds[t]
            return False
        creator_tag = (group << 16) | (elem >> 8)
        creator = ds.get(creator_tag)
        name = text_of(creator.value).strip().lower() if creator is not None else ""
        listed = safe_private_vrs().get((group, name, elem & 0xFF)) if name else None
        if listed is None:
            del ds[t]
            return False
        sent = sent_vr(ds, t)
        if sent == "SQ":
            for item in _elem(ds, t).value or ():
                self.walk(item, dummy_mode, item=True)
            return True
        if self._kept_private(ds, t, sent, listed_kinds(listed)):
            return True
        del ds[t]
        return False

    def _kept_private(self, ds: Dataset, t: int, sent: str, listed: frozenset[str]) -> bool:
        """Keep a safe-listed value only if it has the listed kind; free text is cleaned."""
        kind, vr = kind_for(sent, listed)
        if kind is Kind.NONE:
            return False
        if kind is Kind.BINARY:
            value = ds.get_item(t).value
            return sent != "UN" or whole_units(vr, len(value) if isinstance(value, bytes) else 0)
        strings = strings_of(ds, t)
        if strings is None:
            return False  # not text at all
        if kind is Kind.SHAPED:
            # A code or a number that is the patient's identifier is no code: removed.
            scrub = self.scrub
            return has_shape(vr, strings) and not (scrub and any(map(scrub.search, strings)))
        # Free text: read as the listed VR, then cleaned like any kept free text.
        value = strings[0] if len(strings) == 1 else strings
        ds[t] = DataElement(t, vr, value)
        self._clean(ds, t, free_text=True)
        return True

    def apply(self, ds: Dataset, t: int, op: Op, dummy_mode: bool) -> None:
        """Carry out one operation on element t of ds."""
        if op is Op.KEEP_VERBATIM:
            return
        if op is Op.REMOVE:
            del ds[t]
            return
        if op is Op.KEEP or op is Op.CLEAN:
            vr = _raw_vr(ds, t)
            if vr in TEXT_VRS or (vr in CLEANED_VRS and op is Op.CLEAN):
                self._clean(ds, t, free_text=op is Op.CLEAN or t in self.text_tags)
            elif vr == "SQ":
                self._recurse(ds, t, dummy_mode)
            return
        if op is Op.RECURSE:
            self._recurse(ds, t, dummy_mode)
            return
        if op is Op.DUMMY_SEQUENCE:
            for item in _elem(ds, t).value or ():
                self.walk(item, True, item=True)
            return
        elem = _elem(ds, t)
        vr = elem.VR.split(" or ")[0]
        if op is Op.EMPTY:
            self._set(ds, t, vr, Sequence() if vr == "SQ" else EMPTY.get(vr))
        elif op is Op.DUMMY:
            if vr == "SQ":
                for item in elem.value or ():
                    self.walk(item, True, item=True)
            elif vr == "UI":
                self._set(ds, t, vr, self._map_uids(elem.value))
            else:
                self._set(ds, t, vr, DUMMIES.get(vr, DUMMY_TEXT if vr in TEXT_VRS else None))
        elif op is Op.UID:
            if vr != "UI":
                raise DeidError(f"{_tag_name(t)} should hold a UID but has VR {vr}")
            self._set(ds, t, vr, self._map_uids(elem.value))
        elif op is Op.SHIFT:
            self._shift(ds, t, elem)
        elif op is Op.PATIENT_ID:
            self._set(ds, t, "LO", self.pseudo_pid)
        elif op is Op.PATIENT_NAME:
            self._set(ds, t, "PN", self.pseudo_pid)
        elif op is Op.REPLACE:
            self._set(ds, t, vr, self.profile.replace[t])
        else:  # pragma: no cover - every Op is handled above
            raise DeidError(f"no handler for operation {op}")

    def _recurse(self, ds: Dataset, t: int, dummy_mode: bool) -> None:
        keyword = keyword_for_tag(t)
        # Coded entries keep their meaning: code values are not free text.
        inner = False if keyword.endswith("CodeSequence") else dummy_mode
        for item in _elem(ds, t).value or ():
            self.walk(item, inner, item=True)

    def _standard_meaning(self, ds: Dataset) -> bool:
        meaning = _text_at(ds, MEANING_TAG)
        if self.text.clean(meaning) == meaning:
            return True
        code = _text_at(ds, CODE_VALUE_TAG)
        return known_meaning(_designator(ds), code, meaning)

    def _clean(self, ds: Dataset, t: int, *, free_text: bool) -> None:
        """Scrub the object's identifiers from a text; with free_text, keep known words only."""
        if self.scrub is None and not free_text:
            return
        elem = _elem(ds, t)
        value = elem.value
        if not value:
            return
        if isinstance(value, PersonName):
            value = str(value)
        if isinstance(value, str):
            values = [value]
        elif isinstance(value, MultiValue | list):
            values = [str(v) for v in value]
        else:
            return
        limit = MAX_LENGTH.get(elem.VR)
        cleaned = []
        for v in values:
            new = self.clean_text(v)
            if free_text:
                new = self.text.clean(new)
            # Each value of the VR has its maximum length; an unchanged one stays as sent.
            cleaned.append(fit(new, limit) if limit and new != v else new)
        if cleaned != values:
            elem.value = cleaned[0] if isinstance(value, str) else cleaned

    def _map_uids(self, value: object) -> object:
        vals = values_of(value)
        if not vals:
            return value
        mapped = [self.uid(v) for v in vals]
        return mapped if len(mapped) > 1 else mapped[0]

    def _shift(self, ds: Dataset, t: int, elem: DataElement) -> None:
        vr = elem.VR
        shifted: list[str] = []
        for v in values_of(elem.value):
            new = (shift_date if vr == "DA" else shift_datetime)(v, self.days) if v else ""
            if new is None:
                # A value we cannot parse as a date cannot be shifted: empty it.
                self._set(ds, t, vr, None)
                return
            shifted.append(new)
        self._set(ds, t, vr, shifted if len(shifted) > 1 else (shifted[0] if shifted else None))

    @staticmethod
    def _set(ds: Dataset, t: int, vr: str, value: object) -> None:
        ds[t] = DataElement(t, vr, value)


def _text_at(ds: Dataset, tag: int) -> str:
    try:
        return text_of(ds[tag].value) if tag in ds else ""
    except Exception:  # unreadable: no text to trust
        return ""


def _designator(ds: Dataset) -> str:
    return _text_at(ds, DESIGNATOR_TAG).strip().upper()


def patient_identity(ds: Dataset) -> str:
    """The original value pseudonyms and date offsets are keyed on (PHI)."""
    pid = text_of(ds.get("PatientID", "")).strip() if "PatientID" in ds else ""
    if pid:
        return "id:" + pid
    name = text_of(ds.get("PatientName", "")).strip()
    birth = text_of(ds.get("PatientBirthDate", "")).strip()
    return f"name:{name}|{birth}"


def _required_uid(ds: Dataset, keyword: str) -> str:
    value = text_of(ds.get(keyword, "")).strip("\0 ") if keyword in ds else ""
    if not value:
        raise DeidError(f"missing {keyword}")
    return value


def deidentify_dataset(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    *,
    has_pixels: bool | None = None,
    after_collect: Callable[[re.Pattern[str] | None], None] | None = None,
    cleans_pixels: bool = False,
    text_tags: frozenset[int] = frozenset(),
) -> DeidResult:
    """De-identify ds in place with the profile; raise DeidError if that is not certain.

    `has_pixels` says the object has pixel data that ds does not hold (read up to it).
    `after_collect` is called with the scrubber once the identifying values are known,
    before anything changes (the stream engine takes back elements it can leave alone).
    `cleans_pixels` says the caller cleans burned-in text when the result asks it to
    (`pixels_to_clean`); without it, a `clean` profile refuses such an object.
    `text_tags`: attributes cleaned as free text even where the profile keeps text (a
    repaired NUL showed that their value is text a reader could have hidden).
    """
    try:
        return _deidentify(ds, profile, key, has_pixels, after_collect, cleans_pixels, text_tags)
    except DeidError:
        raise
    except Exception as exc:  # fail closed; the message carries no value
        raise DeidError(f"cannot de-identify: {type(exc).__name__}") from None


def _deidentify(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    has_pixels: bool | None,
    after_collect: Callable[[re.Pattern[str] | None], None] | None,
    cleans_pixels: bool,
    text_tags: frozenset[int] = frozenset(),
) -> DeidResult:
    sop_class = _required_uid(ds, "SOPClassUID")
    study_uid = _required_uid(ds, "StudyInstanceUID")
    series_uid = _required_uid(ds, "SeriesInstanceUID")
    sop_uid = _required_uid(ds, "SOPInstanceUID")
    policy = profile.config.burned_in_annotation
    found = suspicion(ds, has_pixels, every_image=profile.config.look_at_every_image)
    to_look = found is not None and policy is not BurnedInPolicy.ALLOW
    if found is not None and to_look:
        if found.known and policy is BurnedInPolicy.QUARANTINE:
            raise DeidError(f"burned-in annotation: {found.reason}; profile policy is quarantine")
        if not cleans_pixels:
            raise DeidError(
                f"burned-in annotation: {found.reason}; its pixels cannot be looked at here"
            )
    ts = transfer_syntax_of(ds)

    identity = patient_identity(ds)
    walker = _Deidentifier(profile, key, identity)
    walker.text_tags = text_tags
    walker.pseudo_pid = pseudo_patient_id(
        key, profile.config.pseudonym_scope, identity, profile.config.patient_id_prefix
    )
    originals = Originals(
        patient_id=text_of(ds.get("PatientID", "")),
        patient_name=text_of(ds.get("PatientName", "")),
        accession_number=text_of(ds.get("AccessionNumber", "")),
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        date_shift_days=walker.days if walker.modified_dates else None,
    )
    walker.collect(ds)
    if after_collect is not None:
        after_collect(walker.scrub)
    try:
        walker.walk(ds)
    except DeidError:
        raise
    except Exception as exc:  # fail closed; the message carries no value
        raise DeidError(f"cannot de-identify: {type(exc).__name__} while walking") from None

    # Under "allow" an object that may carry burned-in text goes out as it is: it must not
    # claim that the patient's identity, or its pixel data, was removed.
    dates = (
        "UNMODIFIED" if walker.full_dates else "MODIFIED" if walker.modified_dates else "REMOVED"
    )
    mark(ds, profile, dates=dates, pixels_may_identify=found is not None and not to_look)
    if profile.config.trial is not None:
        write_trial(ds, profile, walker.pseudo_pid)
    new_sop = text_of(ds.get("SOPInstanceUID", "")) or originals.sop_uid
    ds.file_meta = new_meta(ds, sop_class, new_sop, ts)
    if hasattr(ds, "preamble"):
        ds.preamble = None  # written as 128 zero bytes; dual TIFF/DICOM files hide data there
    return DeidResult(
        dataset=ds,
        pseudo_patient_id=walker.pseudo_pid,
        pseudo_study_uid=text_of(ds.get("StudyInstanceUID", "")),
        pseudo_series_uid=text_of(ds.get("SeriesInstanceUID", "")),
        pseudo_sop_uid=new_sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(ts),
        originals=originals,
        needles=make_needles(
            walker.needles,
            walker.uid_needles,
            walker.written,
            {walker.pseudo_pid, *walker.uid_cache.values()},
        ),
        pixels_to_clean=to_look,
        pixels_check_only=to_look and policy is BurnedInPolicy.QUARANTINE,
        pixels_reason=found.reason if found is not None and to_look else None,
    )
