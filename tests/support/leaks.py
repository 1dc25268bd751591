"""Where a planted name survives de-identification (issue 22's names, ages, joined names)."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from deid_node.deid.values import EAST_ASIAN
from deid_node.testing.synthetic import Planted

# Written by the node itself: they name the method, never the patient.
_WRITTEN = {"DeidentificationMethod", "DeidentificationMethodCodeSequence"}
_AGE = r"(?:aged?\s*{0}|{0}\s*-?\s*year|{0}\s*yo)"


def texts_in(ds: Dataset, path: str = "") -> list[tuple[str, str]]:
    """(keyword path, text) of every value in ds that can hold text, at any depth."""
    out = []
    for elem in ds:
        name = path + (elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})")
        if elem.keyword in _WRITTEN:
            continue
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                out += texts_in(item, f"{name}[{i}].")
        elif isinstance(elem.value, bytes):
            out.append((name, elem.value.decode("latin-1")))
        elif elem.value is not None:
            values = elem.value if isinstance(elem.value, list) else [elem.value]
            out += [(name, str(v)) for v in values]
    return out


def _found(word: str, text: str) -> bool:
    if EAST_ASIAN.search(word):
        return word in text
    return re.search(rf"(?<![^\W\d_]){re.escape(word)}(?![^\W\d_])", text, re.I) is not None


def name_leaks(ds: Dataset, planted: Planted) -> list[str]:
    """Where a planted name, joined name or age phrase survives (paths only)."""
    out = []
    age = re.compile(_AGE.format(planted.age), re.I)
    for where, text in texts_in(ds):
        if where == "PatientAge":
            continue  # follows the profile, as before
        words = [*planted.names, *planted.third_party]
        if any(_found(w, text) for w in words) or planted.joined.lower() in text.lower():
            out.append(where)
        elif age.search(text):
            out.append(f"{where} (age)")
    return out
