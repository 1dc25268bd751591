"""The object's own identifiers, as they may be drawn in its pixels.

Burned-in text is mostly the header drawn into the image: the patient's name, ID, birth
date, the accession number, the hospital. Read words that match one of them are text
whatever a detector thought of them (small, faint, on speckle), and their boxes are
blanked. Only whether a word matches leaves this module, never which value it matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_node.deid.values import text_of

MIN_WORD: Final = 3  # shorter name parts (initials, "LI") match too much read noise
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NAME_KEYWORDS: Final = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "ResponsiblePerson",
)
_ID_KEYWORDS: Final = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "IssuerOfPatientID",
    "InstitutionName",
    "StationName",
    "StudyID",
)
_DATE_KEYWORDS: Final = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate")


@dataclass(frozen=True)
class Identifiers:
    """Words and digit runs of an object's identifying values, casefolded."""

    words: frozenset[str]
    digits: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.words or self.digits)

    def matches(self, text: str) -> bool:
        """Whether read text holds one of the identifiers (words, joined words, digits)."""
        tokens = [t.casefold() for t in _WORD.findall(text)]
        if any(t in self.words for t in tokens):
            return True
        joined = "".join(tokens)
        if len(joined) >= MIN_WORD + 2 and any(w in joined for w in self.words if len(w) >= 5):
            return True  # names run together, or read without the space between them
        if any(len(t) >= 5 and _near_miss(t, self.words) for t in tokens):
            return True  # one letter read wrong
        digits = "".join(c for c in text if c.isdigit())
        return any(d in digits for d in self.digits)


def identifiers_of(ds: Dataset) -> Identifiers:
    """The identifiers of the object as it arrived (its header before de-identification)."""
    words: set[str] = set()
    digits: set[str] = set()
    for keyword in _NAME_KEYWORDS:
        for value in _values(ds, keyword):
            words.update(_words(value.replace("^", " ").replace("=", " ")))
    for keyword in _ID_KEYWORDS:
        for value in _values(ds, keyword):
            words.update(_words(value))
            run = "".join(c for c in value if c.isdigit())
            if len(run) >= 4:
                digits.add(run)
    for keyword in _DATE_KEYWORDS:
        for value in _values(ds, keyword):
            digits.update(_date_spellings(value.strip()))
    return Identifiers(frozenset(words), frozenset(digits))


def _values(ds: Dataset, keyword: str) -> Iterator[str]:
    try:
        value = ds.get(keyword)
    except Exception:  # an unreadable value: the engine refuses the object anyway
        return
    if value is None:
        return
    for v in value if isinstance(value, MultiValue | list | tuple) else [value]:
        text = text_of(v).strip()
        if text:
            yield text


def _words(text: str) -> Iterable[str]:
    return (w.casefold() for w in _WORD.findall(text) if len(w) >= MIN_WORD)


def _date_spellings(date: str) -> set[str]:
    """YYYYMMDD as it is commonly printed, digits only: 19410202, 02021941, 020241, ..."""
    if len(date) != 8 or not date.isdigit():
        return set()
    y, m, d = date[:4], date[4:6], date[6:]
    return {y + m + d, d + m + y, m + d + y, d + m + y[2:], m + d + y[2:], y[2:] + m + d}


def _near_miss(token: str, words: frozenset[str]) -> bool:
    """One substitution, insertion or deletion away from a word of five letters or more."""
    for w in words:
        if len(w) < 5 or abs(len(w) - len(token)) > 1:
            continue
        if _one_edit(token, w):
            return True
    return False


def _one_edit(a: str, b: str) -> bool:
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]
