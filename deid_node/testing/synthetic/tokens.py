"""PHI tokens: made-up identifying values, each recorded with where it was planted.

Every identifying value a generator plants is a *token* recorded in a :class:`PhiTokens`,
with the place it was planted (a tag path such as
``RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0].PersonName``) and its kind:

``text``
    a free-text token ``PHI`` + 5 digits + ``Z`` (e.g. ``PHI00042Z``), also used inside binary
    (OB/OW/UN) values, AE titles and code strings;
``id``
    the same shape, planted in an identifier attribute (PatientID, AccessionNumber, StudyID...);
``name``
    the family and the given component of a person name ``PHI00001Z^PHI00002Z`` (each component
    is recorded, never the whole name);
``date``
    a valid DA (``YYYYMMDD``), TM (``HHMMSS.ffffff``) or DT (``YYYYMMDDHHMMSS.ffffff``) value;
``uid``
    an original UID made by :func:`pydicom.uid.generate_uid` (root ``1.2.826.0.1.3680043.8.498.``,
    never ``2.25.``, so it cannot be mistaken for the pseudonyms a de-identifier produces).

All values recorded in one :class:`PhiTokens` are distinct and none is a substring of another,
so a test can search the bytes of an output file for every value and attribute each hit.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from pydicom.uid import generate_uid

__all__ = ["KINDS", "TOKEN_RE", "UID_PREFIX", "PhiTokens", "PlantedToken"]

#: UID root of every UID made here (pydicom's own root, as generate_uid uses by default).
UID_PREFIX: Final = "1.2.826.0.1.3680043.8.498."

KINDS: Final = ("text", "name", "id", "date", "uid")
TOKEN_RE: Final = re.compile(r"PHI\d{5}Z")

_T = TypeVar("_T")


@dataclass(frozen=True)
class PlantedToken:
    """One planting: ``value`` was written at ``path``; ``kind`` is one of :data:`KINDS`."""

    value: str
    path: str
    kind: str


class PhiTokens:
    """Makes PHI tokens and records every place one was planted.

    A value may be planted in several places (the patient's name tokens reappear in free text);
    each place is one :class:`PlantedToken` in :attr:`records`.  New values are guaranteed
    distinct from, and neither a substring nor a superstring of, every value already recorded.
    """

    def __init__(self, start: int = 1) -> None:
        if not 0 < start < 100_000:
            raise ValueError("start must be in 1..99999")
        self._counter = start
        self._records: list[PlantedToken] = []
        self._seen: set[tuple[str, str]] = set()
        self._kind: dict[str, str] = {}  # value -> kind, in first-planting order
        self._non_token: list[str] = []  # dates and UIDs, for the substring check
        self._memo: dict[tuple[object, ...], object] = {}
        self._uid_attempt = 0

    # ---- queries ---------------------------------------------------------------------------

    @property
    def records(self) -> list[PlantedToken]:
        """Every planting, in order."""
        return list(self._records)

    def values(self, kind: str | None = None) -> list[str]:
        """Distinct planted values (of one kind if given), in first-planting order."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return [v for v, k in self._kind.items() if kind is None or k == kind]

    def kind_of(self, value: str) -> str:
        """The kind a value was first recorded with."""
        return self._kind[value]

    def paths(self, value: str) -> list[str]:
        """Every path where ``value`` was planted."""
        return [r.path for r in self._records if r.value == value]

    def find_in(self, data: bytes | str) -> list[str]:
        """The planted values that occur in ``data`` (e.g. the bytes of an output file)."""
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        found = {m for m in TOKEN_RE.findall(text) if m in self._kind}
        found.update(v for v in self._non_token if v in text)
        return [v for v in self._kind if v in found]

    def __len__(self) -> int:
        return len(self._kind)

    def __contains__(self, value: object) -> bool:
        return value in self._kind

    def __iter__(self) -> Iterator[PlantedToken]:
        return iter(self._records)

    def __repr__(self) -> str:
        counts = {k: len(self.values(k)) for k in KINDS}
        return f"PhiTokens({len(self)} values, {len(self._records)} plantings, {counts})"

    # ---- planting --------------------------------------------------------------------------

    def record(self, value: str, path: str, kind: str) -> str:
        """Record that ``value`` (already known, or made elsewhere) was planted at ``path``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        known = self._kind.get(value)
        if known is None:
            self._kind[value] = kind
            if not TOKEN_RE.fullmatch(value):
                self._non_token.append(value)
        elif known != kind:
            raise ValueError(f"{value!r} was recorded as {known}, not {kind}")
        if (value, path) not in self._seen:
            self._seen.add((value, path))
            self._records.append(PlantedToken(value, path, kind))
        return value

    def new_token(self, path: str, kind: str = "text") -> str:
        """A fresh ``PHInnnnnZ`` token planted at ``path``."""
        if self._counter > 99_999:
            raise RuntimeError("PhiTokens ran out of 5-digit tokens")
        token = f"PHI{self._counter:05d}Z"
        self._counter += 1
        return self.record(token, path, kind)

    def new_name(self, path: str) -> str:
        """A fresh PN value ``FAMILY^GIVEN`` made of two tokens (both recorded as ``name``)."""
        family = self.new_token(f"{path}^family", "name")
        given = self.new_token(f"{path}^given", "name")
        return f"{family}^{given}"

    def new_date(self, path: str, *, start: dt.date = dt.date(1960, 1, 1)) -> str:
        """A fresh valid DA value on or after ``start``."""

        def candidates() -> Iterator[str]:
            day = start
            while True:
                yield day.strftime("%Y%m%d")
                day += dt.timedelta(days=1)

        return self._fresh(candidates(), path)

    def new_time(self, path: str, *, start: dt.time = dt.time(8, 0)) -> str:
        """A fresh valid TM value ``HHMMSS.ffffff`` (the fraction keeps it distinctive)."""
        base = start.hour * 3600 + start.minute * 60 + start.second

        def candidates() -> Iterator[str]:
            k = 0
            while True:
                secs = (base + 97 * k) % 86_400
                frac = (104_729 * (k + 1) + len(self._kind)) % 1_000_000
                yield f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.{frac:06d}"
                k += 1

        return self._fresh(candidates(), path)

    def new_datetime(self, path: str, *, start: dt.date = dt.date(1971, 1, 1)) -> str:
        """A fresh valid DT value ``YYYYMMDDHHMMSS.ffffff``."""

        def candidates() -> Iterator[str]:
            k = 0
            while True:
                day = start + dt.timedelta(days=k)
                secs = (9 * 3600 + 613 * k) % 86_400
                frac = (7_919 * (k + 1)) % 1_000_000
                yield (
                    f"{day:%Y%m%d}{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.{frac:06d}"
                )
                k += 1

        return self._fresh(candidates(), path)

    def new_uid(self, path: str, *entropy: object) -> str:
        """A fresh original UID, deterministic for the given entropy and token state."""

        def candidates() -> Iterator[str]:
            attempt = 0
            while True:
                srcs = [str(e) for e in entropy] + [path, str(attempt)]
                yield generate_uid(prefix=UID_PREFIX, entropy_srcs=srcs)
                attempt += 1

        return self._fresh(candidates(), path, kind="uid")

    def _fresh(self, candidates: Iterator[str], path: str, kind: str = "date") -> str:
        for value in candidates:
            if value in self._kind:
                continue
            if any(value in other or other in value for other in self._non_token):
                continue
            return self.record(value, path, kind)
        raise AssertionError("unreachable")  # pragma: no cover

    def memo(self, key: tuple[object, ...], factory: Callable[[], _T]) -> _T:
        """Per-registry cache, so objects of one study share study-level values."""
        if key not in self._memo:
            self._memo[key] = factory()
        # Each key is always made by the same factory, so it holds that factory's type.
        return cast(_T, self._memo[key])
