"""Finding planted values in what the node wrote: raw bytes, and text as a reader decodes it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset

from deid_node.testing.synthetic import TOKEN_RE, UID_PREFIX, PhiTokens

__all__ = ["TEXT_VRS", "PhiScanner", "decoded_text"]


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
        """Every planted value in `data` (also with NULs dropped, for UTF-16)."""
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


TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)


def decoded_text(path: Path, limit: int = 200_000) -> bytes | None:
    """Every text value of a file as a DICOM reader shows it; None if pydicom cannot read it.

    Catches identifiers that are only whole after decoding (an ISO 2022 escape pair or
    another character set splitting the raw bytes).
    """

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
