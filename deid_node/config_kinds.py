"""How a config value is read and checked: a typed reader per TOML table, and one kind per shape.

A kind knows its type and bounds, reads a key through a :class:`TableReader` (every error
names the file and the dotted key, and never echoes more of a value than the rule needs),
and says in words what it accepts and how its default reads, for the README's key table.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from deid_node.errors import ConfigError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control chars
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_SIDE = 65535  # Rows and Columns are US (16-bit)


class Required:
    """The default of a key that has none: leaving it out is an error."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = Required()

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TableReader:
    """Typed access to one TOML table with errors naming the dotted key."""

    def __init__(
        self,
        table: Mapping[str, Any],
        prefix: str,
        source: Path | None,
        base_dir: Path | None = None,
    ) -> None:
        self.table = table
        self.prefix = prefix
        self.source = source
        self.base_dir = base_dir or Path(".")
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for this key: `file: table.key: message`."""
        where = f"{self.source}: " if self.source else ""
        dotted = f"{self.prefix}.{key}" if self.prefix else key
        return ConfigError(f"{where}{dotted}: {message}")

    def sub(self, key: str, prefix: str) -> TableReader:
        """A reader for the sub-table `key` (empty if absent), its errors under `prefix`."""
        return TableReader(self.table_of(key), prefix, self.source, self.base_dir)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
        """The value if present and of the TOML type wanted, else the default."""
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        # bool is an int subclass; never accept true where a number is expected
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"expected {expected}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {expected}, got {type(value).__name__}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key, str, default, "a string")
        if value is None:
            raise self.error(key, "is required (a string)")
        return str(value)

    def strings(self, key: str) -> list[str]:
        value = self.get(key, list, [], "a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {type(item).__name__}")
        return list(value)

    def table_of(self, key: str) -> Mapping[str, Any]:
        return dict(self.get(key, dict, {}, "a table"))

    def check_unknown(self, allowed_extra: tuple[str, ...] = ()) -> None:
        """Refuse any key not read (a typo would otherwise be ignored silently)."""
        for key in self.table:
            if key not in self.used and key not in allowed_extra:
                raise self.error(
                    key, "unknown key (check the spelling; see README 'Configuration')"
                )


def resolve_path(base_dir: Path, value: str) -> Path:
    """A config path: `~` expanded, relative ones against the config file's folder."""
    # normpath, not resolve(): "config/../var" reads badly in audit rows, but symlinks an
    # operator set up are theirs to keep.
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base_dir / p))


def parse_tag(text: str) -> int:
    """A DICOM keyword or "(gggg,eeee)" as an integer tag; ValueError if neither."""
    match = _TAG_RE.match(text.strip())
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ValueError(text)
    return int(tag)


def _text_default(default: Any) -> str | None:
    return None if default is REQUIRED else "" if default is None else str(default)


# --------------------------------------------------------------------------------------------
# Kinds


class Kind:
    """The shape of a key's value: read and checked by `read`, described by `accepts`."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        raise NotImplementedError

    def accepts(self) -> str:
        """What a user may write, in a few words (the README's table)."""
        raise NotImplementedError

    def show(self, default: Any) -> str:
        """The default as the README's table shows it."""
        if default is REQUIRED:
            return "required"
        if default is None:
            return "none"
        if isinstance(default, bool):
            return f"`{str(default).lower()}`"
        if isinstance(default, tuple | frozenset):
            return "`[]`" if not default else f"`{list(default)}`"
        if isinstance(default, str) and not default:
            return '`""`'
        return f"`{default}`"


@dataclass(frozen=True)
class Text(Kind):
    """A string; with `limit`, at most that many characters and no backslash."""

    limit: int = 0

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, _text_default(default))
        if self.limit and (len(value) > self.limit or "\\" in value):
            raise r.error(key, f"expected at most {self.limit} characters, no backslash")
        return value

    def accepts(self) -> str:
        return f"text, at most {self.limit} characters" if self.limit else "text"


@dataclass(frozen=True)
class Flag(Kind):
    """true or false."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        return bool(r.get(key, bool, default, "true or false"))

    def accepts(self) -> str:
        return "`true`, `false`"


def _size(value: int) -> str:
    for unit, size in zip(
        ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"), (1024**k for k in range(6, 0, -1)), strict=True
    ):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


@dataclass(frozen=True)
class Integer(Kind):
    """An integer from `low` to `high`; `unit` "bytes" shows sizes in GiB."""

    low: int
    high: int
    unit: str = ""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = int(r.get(key, int, default, "an integer"))
        if not self.low <= value <= self.high:
            raise r.error(key, f"expected an integer from {self.low} to {self.high}, got {value}")
        return value

    def accepts(self) -> str:
        if self.unit == "bytes":
            return f"{_size(self.low)} to {_size(self.high)}"
        return f"{self.low} to {self.high}"

    def show(self, default: Any) -> str:
        return _size(default) if self.unit == "bytes" else str(default)


@dataclass(frozen=True)
class Number(Kind):
    """A finite number at least `low`, in `unit` ("s" for seconds)."""

    low: float
    unit: str = ""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = float(r.get(key, (int, float), default, "a number"))
        if not value >= self.low or math.isinf(value):  # NaN compares false
            raise r.error(key, f"expected a number >= {self.low}, got {value}")
        return value

    def accepts(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"at least {self.low:g}{unit}"

    def show(self, default: Any) -> str:
        return f"{default:g} {self.unit}" if self.unit else f"{default:g}"


@dataclass(frozen=True)
class Choice(Kind):
    """One of an enumeration's values."""

    enum: type[StrEnum]

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, str(default))
        try:
            return self.enum(value)
        except ValueError:
            allowed = ", ".join(f"'{m.value}'" for m in self.enum)
            raise r.error(key, f"expected one of {allowed}, got '{value}'") from None

    def accepts(self) -> str:
        return ", ".join(f"`{m.value}`" for m in self.enum)

    def show(self, default: Any) -> str:
        return f"`{default.value}`"


@dataclass(frozen=True)
class ChoiceSet(Kind):
    """A list of an enumeration's values, as a frozenset."""

    enum: type[StrEnum]
    noun: str

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        chosen = set()
        for i, text in enumerate(r.strings(key)):
            try:
                chosen.add(self.enum(text))
            except ValueError:
                allowed = ", ".join(m.value for m in self.enum)
                raise r.error(
                    f"{key}[{i}]", f"unknown {self.noun} '{text}'; expected one of: {allowed}"
                ) from None
        return frozenset(chosen)

    def accepts(self) -> str:
        return f"list of {self.noun}s"


@dataclass(frozen=True)
class AeTitle(Kind):
    """An AE title (PS3.5): 1 to 16 printable characters, no backslash; spaces trimmed."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        if key not in r.table and default is not REQUIRED:
            r.used.add(key)
            return default
        value = r.string(key, _text_default(default))
        if not _AE_RE.match(value) or not value.strip():
            raise r.error(key, "expected an AE title: 1 to 16 printable characters, no backslash")
        return value.strip()

    def accepts(self) -> str:
        return "AE title"


@dataclass(frozen=True)
class BindAddress(Kind):
    """An IP address to listen on, or `localhost`."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, _text_default(default))
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if value != "localhost":
                raise r.error(key, "expected an IP address to bind, such as 127.0.0.1") from None
        return value

    def accepts(self) -> str:
        return "IP address, `localhost`"


@dataclass(frozen=True)
class HostName(Kind):
    """A host name or an IP address to connect to."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, _text_default(default))
        if not value.strip() or any(c.isspace() for c in value):
            raise r.error(key, "expected a host name or an IP address")
        return value.strip()

    def accepts(self) -> str:
        return "host name, IP address"


@dataclass(frozen=True)
class Name(Kind):
    """A name others refer to: letters, digits, '-' and '_'."""

    what: str  # "destination"

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, _text_default(default))
        if not _NAME_RE.match(value):
            raise r.error(key, f"{self.what} names use letters, digits, '-' and '_' only")
        return value

    def accepts(self) -> str:
        return "letters, digits, `-`, `_`"


@dataclass(frozen=True)
class Names(Kind):
    """A list of names, duplicates dropped (first kept)."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        return tuple(dict.fromkeys(r.strings(key)))

    def accepts(self) -> str:
        return "list of names"


@dataclass(frozen=True)
class FilePath(Kind):
    """A path, relative to the config file's folder; `optional`: empty or absent is None."""

    optional: bool = True

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        value = r.string(key, _text_default(default))
        if self.optional and not value:
            return None
        return resolve_path(r.base_dir, value)

    def accepts(self) -> str:
        return "path"


@dataclass(frozen=True)
class Networks(Kind):
    """A list of IP addresses or CIDRs."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        out: list[IPNetwork] = []
        for j, h in enumerate(r.strings(key)):
            try:
                out.append(ipaddress.ip_network(h, strict=False))
            except ValueError:
                raise r.error(
                    f"{key}[{j}]", f"'{h}' is not an IP address or CIDR like 10.0.0.0/8"
                ) from None
        return tuple(out)

    def accepts(self) -> str:
        return "list of addresses, CIDRs"


@dataclass(frozen=True)
class Tags(Kind):
    """A list of DICOM keywords or "(gggg,eeee)" tags, as integers."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        tags = []
        for i, item in enumerate(r.strings(key)):
            try:
                tags.append(parse_tag(item))
            except ValueError:
                raise r.error(
                    f"{key}[{i}]", f"'{item}' is not a DICOM keyword or a tag like \"(0010,0010)\""
                ) from None
        return tuple(tags)

    def accepts(self) -> str:
        return 'list of keywords, `"(gggg,eeee)"`'


@dataclass(frozen=True)
class Replacements(Kind):
    """A table of keyword or tag = text, as sorted (tag, text) pairs."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        out: dict[int, str] = {}
        for name, value in r.table_of(key).items():
            try:
                tag = parse_tag(name)
            except ValueError:
                raise r.error(
                    f"{key}.{name}", 'not a DICOM keyword or a tag like "(0010,0010)"'
                ) from None
            if not isinstance(value, str):
                raise r.error(f"{key}.{name}", "expected a string value")
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = ""
            if vr in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", ""):
                what = keyword_for_tag(tag) or name
                raise r.error(f"{key}.{name}", f"cannot replace {what} (VR {vr or '?'}) by text")
            out[tag] = value
        return tuple(sorted(out.items()))

    def accepts(self) -> str:
        return "table of keyword = text"

    def show(self, default: Any) -> str:
        return "`{}`"


@dataclass(frozen=True)
class Words(Kind):
    """A list of single words of letters and digits, lower-cased and sorted."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        words = set()
        for i, word in enumerate(r.strings(key)):
            w = word.strip().lower()
            if not w or not all(c.isalnum() for c in w):
                raise r.error(f"{key}[{i}]", "expected one word of letters and digits")
            words.add(w)
        return tuple(sorted(words))

    def accepts(self) -> str:
        return "list of words"


@dataclass(frozen=True)
class Tables(Kind):
    """An array of tables, each read by the caller against its own declared keys."""

    table: str  # as the TOML spells it: "[[profiles.NAME.pixel_rules]]"

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        return list(r.get(key, list, [], f"a list of tables ({self.table})"))

    def accepts(self) -> str:
        return f"`{self.table}` tables"


@dataclass(frozen=True)
class Match(Kind):
    """A table of DICOM keyword = pattern, number or list of them (at least one)."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        match = []
        for keyword, value in r.table_of(key).items():
            if tag_for_keyword(keyword) is None:
                raise r.error(f"{key}.{keyword}", "not a DICOM keyword")
            patterns = value if isinstance(value, list) else [value]
            kinds_ok = all(isinstance(v, str | int) and not isinstance(v, bool) for v in patterns)
            if not patterns or not kinds_ok:
                raise r.error(f"{key}.{keyword}", "expected a pattern, a number or a list of them")
            match.append((keyword, tuple(str(v) for v in patterns)))
        if not match:
            raise r.error(key, "is required: at least one attribute to match on")
        return tuple(sorted(match))

    def accepts(self) -> str:
        return "table of keyword = patterns"


@dataclass(frozen=True)
class Rectangles(Kind):
    """A list of [left, top, width, height] in pixels (at least one)."""

    def read(self, r: TableReader, key: str, default: Any) -> Any:
        regions = []
        raw = r.get(key, list, [], "a list of [left, top, width, height]")
        for j, region in enumerate(raw):
            ok = isinstance(region, list) and len(region) == 4
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in region)
            if not ok or not all(-_MAX_SIDE <= v <= _MAX_SIDE for v in region):
                raise r.error(f"{key}[{j}]", "expected [left, top, width, height] as integers")
            if region[2] <= 0 or region[3] <= 0:
                raise r.error(f"{key}[{j}]", "width and height must be positive")
            regions.append((region[0], region[1], region[2], region[3]))
        if not regions:
            raise r.error(key, "is required: at least one rectangle")
        return tuple(regions)

    def accepts(self) -> str:
        return "list of `[left, top, width, height]`"
