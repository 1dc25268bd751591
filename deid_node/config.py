"""Load and validate the TOML configuration into frozen dataclasses.

Every error names the file and the key, says what was expected, and never echoes
a value that could be PHI (config files hold none, but we stay strict anyway).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from deid_node.errors import ConfigError

DEFAULT_CONFIG = Path("config/deid-node.toml")
CONFIG_ENV = "DEID_NODE_CONFIG"

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control chars
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


class Option(StrEnum):
    """PS3.15 Annex E profile options, by the names users write in the config."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_UIDS = "retain-uids"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain-longitudinal-full-dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"
    CLEAN_PIXEL_DATA = "clean-pixel-data"


class BurnedInPolicy(StrEnum):
    """What to do with an object that may carry burned-in text."""

    QUARANTINE = "quarantine"
    CLEAN = "clean"
    ALLOW = "allow"


class Durability(StrEnum):
    """How hard an acknowledged object is pushed to disk before Success is sent."""

    OS = "os"  # survives kill -9 of the node (page cache)
    FSYNC = "fsync"  # survives power loss


@dataclass(frozen=True)
class TrialConfig:
    """Clinical Trial Subject/Study/Series module values written into every object."""

    sponsor: str
    protocol_id: str
    protocol_name: str = ""
    site_id: str = ""
    site_name: str = ""
    coordinating_center: str = ""


@dataclass(frozen=True)
class RegionRule:
    """Where some equipment burns text in: rectangles blanked on every object it matches.

    `match` pairs a DICOM keyword with patterns (case-insensitive, `*` and `?`
    wildcards), any of which its value may match; every pair must hold. A region is
    (left, top, width, height) in pixels; negative left or top count from the far edge.
    """

    name: str
    match: tuple[tuple[str, tuple[str, ...]], ...]
    regions: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class ProfileConfig:
    """One named de-identification profile."""

    name: str
    options: frozenset[Option] = frozenset()
    patient_id_prefix: str = ""
    record_linkage: bool = False
    burned_in_annotation: BurnedInPolicy = BurnedInPolicy.QUARANTINE
    keep: tuple[int, ...] = ()
    remove: tuple[int, ...] = ()
    replace: tuple[tuple[int, str], ...] = ()  # (tag, value) pairs; a tuple keeps it hashable
    scope: str = ""
    trial: TrialConfig | None = None
    pixel_rules: tuple[RegionRule, ...] = ()
    shipped_pixel_rules: bool = True  # the rules in deid_node/data/pixel_rules.toml apply too
    ultrasound_regions: bool = False  # blank all outside the ultrasound data regions
    look_at_every_image: bool = False  # also ORIGINAL\\PRIMARY images of text-free kinds
    allow_words: tuple[str, ...] = ()  # kept by the free-text cleaner, lower case, sorted
    forward_to: tuple[str, ...] = ()  # destination names: every stored object is sent there
    keep_output: bool = True  # False: the output file goes once every destination has it

    @property
    def pseudonym_scope(self) -> str:
        """The HMAC scope: two scopes give unlinkable pseudonyms."""
        return self.scope or self.name


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SourceConfig:
    """A sender allowed to associate, and the profile its objects get."""

    ae_title: str
    profile: str
    hosts: tuple[IPNetwork, ...] = ()

    def allows(self, address: str) -> bool:
        """True if the peer address may use this AE title (no hosts = any)."""
        if not self.hosts:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.hosts)


@dataclass(frozen=True)
class TlsConfig:
    """[node.tls]: DICOM TLS (PS3.15 Annex B) on the listening port."""

    certificate: Path
    key: Path
    ca_bundle: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class RetryConfig:
    """[destinations.retry]: when to try a job again (dcm4chee's vocabulary).

    A transient failure (no association, an abort, a timeout, 0xA7xx) is retried for as
    long as it takes, `delay` * `multiplier` ** (attempt - 1) seconds later, at most
    `max_delay`; a permanent one (0xA9xx, 0xCxxx, a refused SOP class) fails for good
    after `max_retries` attempts.
    """

    delay: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 120.0
    max_retries: int = 3

    def pause(self, attempts: int) -> float:
        """Seconds to wait after the given number of failed attempts."""
        exponent = min(max(attempts - 1, 0), 60)  # no float overflow after many failures
        return float(min(self.max_delay, self.delay * self.multiplier**exponent))


@dataclass(frozen=True)
class ClientTlsConfig:
    """[destinations.tls]: DICOM TLS towards a destination."""

    ca_bundle: Path | None = None  # None: the system's trusted certificates
    certificate: Path | None = None  # our certificate, for destinations that ask for one
    key: Path | None = None
    server_name: str = ""  # the name its certificate must carry; default: host


@dataclass(frozen=True)
class DestinationConfig:
    """A [[destinations]] entry: a C-STORE SCP that stored objects are forwarded to."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = ""  # our AE title towards it; default node.ae_title
    max_associations: int = 1
    accept_warnings: bool = True  # a C-STORE warning (0xB000, 0xB006, 0xB007) counts as sent
    retry: RetryConfig = RetryConfig()
    tls: ClientTlsConfig | None = None
    timeout: float = 30.0  # connection, ACSE and DIMSE timeout, seconds
    idle_release: float = 5.0  # an association with nothing to send is released after this


@dataclass(frozen=True)
class WebConfig:
    """[web]: the web console's own address (`deid-node web`), HTTPS with [web.tls]."""

    host: str = "127.0.0.1"
    port: int = 8080
    certificate: Path | None = None
    key: Path | None = None
    session_hours: float = 8.0
    max_upload_bytes: int = 2 * 1024**3  # one job's upload; ZIPs unpacked count too
    max_files: int = 10000  # files in one job, ZIP members included
    # Peers whose X-Forwarded-For names the client; no one's by default.
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @property
    def https(self) -> bool:
        """Whether the console serves HTTPS."""
        return self.certificate is not None


@dataclass(frozen=True)
class NodeConfig:
    """The [node] table."""

    ae_title: str = "DEID_NODE"
    host: str = "127.0.0.1"
    port: int = 11112
    data_dir: Path = Path("var")
    output_dir: Path | None = None
    max_associations: int = 16
    durability: Durability = Durability.OS
    workers: int = 0  # 0 = CPU count
    receivers: int = 0  # receiving processes; 0 = min(2, CPU count)
    max_object_bytes: int = 4 * 1024**3
    spool_max_bytes: int = 20 * 1024**3
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    request_timeout: float = 5.0  # a new connection's time to send its A-ASSOCIATE-RQ
    tls: TlsConfig | None = None

    @property
    def output(self) -> Path:
        """Root of the de-identified output tree."""
        return self.output_dir or self.data_dir / "output"

    @property
    def spool(self) -> Path:
        """Folder of acknowledged objects waiting for de-identification (PHI)."""
        return self.data_dir / "spool"

    @property
    def quarantine(self) -> Path:
        """Folder of objects that could not be de-identified (PHI)."""
        return self.data_dir / "quarantine"

    @property
    def secret_path(self) -> Path:
        """The node's pseudonymisation key file."""
        return self.data_dir / "secret.key"

    @property
    def worker_count(self) -> int:
        """Worker processes to run (the configured number or the CPU count)."""
        return self.workers or (os.cpu_count() or 1)

    @property
    def receiver_count(self) -> int:
        """Receiving processes to run (the configured number or min(2, CPU count))."""
        return self.receivers or min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path | None
    node: NodeConfig
    database_url: str
    sources: tuple[SourceConfig, ...]
    unknown_action: str  # "reject" or a profile name
    profiles: Mapping[str, ProfileConfig]
    destinations: Mapping[str, DestinationConfig] = field(default_factory=dict)
    web: WebConfig = WebConfig()

    @property
    def forwarding(self) -> bool:
        """Whether any profile forwards what it stores."""
        return any(p.forward_to for p in self.profiles.values())

    def source_for(self, ae_title: str) -> SourceConfig | None:
        """The configured source with this calling AE title, if any."""
        for src in self.sources:
            if src.ae_title == ae_title:
                return src
        return None

    def profile(self, name: str) -> ProfileConfig:
        """A profile by name, or a ConfigError listing the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigError(f"unknown profile '{name}'; configured profiles: {known}") from None


def resolve_config_path(path: Path | None) -> Path:
    """--config, else $DEID_NODE_CONFIG, else config/deid-node.toml."""
    if path is not None:
        return path
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file; raises ConfigError naming file and key."""
    cfg_path = resolve_config_path(path)
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{cfg_path}: config file not found (pass --config or set {CONFIG_ENV})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{cfg_path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: invalid TOML: {exc}") from None
    return parse_config(raw, base_dir=cfg_path.resolve().parent, source=cfg_path)


class _Reader:
    """Typed access to one TOML table with errors naming the dotted key."""

    def __init__(self, table: Mapping[str, Any], prefix: str, source: Path | None) -> None:
        self.table = table
        self.prefix = prefix
        self.source = source
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        where = f"{self.source}: " if self.source else ""
        dotted = f"{self.prefix}.{key}" if self.prefix else key
        return ConfigError(f"{where}{dotted}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
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

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = int(self.get(key, int, default, "an integer"))
        if not low <= value <= high:
            raise self.error(key, f"expected an integer from {low} to {high}, got {value}")
        return value

    def number(self, key: str, default: float, low: float) -> float:
        value = float(self.get(key, (int, float), default, "a number"))
        if not value >= low or math.isinf(value):  # NaN compares false
            raise self.error(key, f"expected a number >= {low}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self.get(key, bool, default, "true or false"))

    def strings(self, key: str) -> list[str]:
        value = self.get(key, list, [], "a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {type(item).__name__}")
        return list(value)

    def table_of(self, key: str) -> Mapping[str, Any]:
        return dict(self.get(key, dict, {}, "a table"))

    def check_unknown(self, allowed_extra: tuple[str, ...] = ()) -> None:
        for key in self.table:
            if key not in self.used and key not in allowed_extra:
                raise self.error(
                    key, "unknown key (check the spelling; see README 'Configuration')"
                )


def _choice(reader: _Reader, key: str, enum: type[StrEnum], default: StrEnum) -> Any:
    value = reader.string(key, str(default))
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(f"'{m.value}'" for m in enum)
        raise reader.error(key, f"expected one of {allowed}, got '{value}'") from None


def _ae_title(reader: _Reader, key: str, default: str | None = None) -> str:
    value = reader.string(key, default)
    if not _AE_RE.match(value) or not value.strip():
        raise reader.error(key, "expected an AE title: 1 to 16 printable characters, no backslash")
    return value.strip()


def parse_tag(text: str) -> int:
    """A DICOM keyword or "(gggg,eeee)" as an integer tag; ValueError if neither."""
    match = _TAG_RE.match(text.strip())
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ValueError(text)
    return int(tag)


def _tags(reader: _Reader, key: str) -> tuple[int, ...]:
    tags = []
    for i, item in enumerate(reader.strings(key)):
        try:
            tags.append(parse_tag(item))
        except ValueError:
            raise reader.error(
                f"{key}[{i}]", f"'{item}' is not a DICOM keyword or a tag like \"(0010,0010)\""
            ) from None
    return tuple(tags)


def _replacements(reader: _Reader, key: str) -> tuple[tuple[int, str], ...]:
    out: dict[int, str] = {}
    for name, value in reader.table_of(key).items():
        try:
            tag = parse_tag(name)
        except ValueError:
            raise reader.error(
                f"{key}.{name}", 'not a DICOM keyword or a tag like "(0010,0010)"'
            ) from None
        if not isinstance(value, str):
            raise reader.error(f"{key}.{name}", "expected a string value")
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
        if vr in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", ""):
            what = keyword_for_tag(tag) or name
            raise reader.error(f"{key}.{name}", f"cannot replace {what} (VR {vr or '?'}) by text")
        out[tag] = value
    return tuple(sorted(out.items()))


def _profile(name: str, table: Mapping[str, Any], source: Path | None) -> ProfileConfig:
    reader = _Reader(table, f"profiles.{name}", source)
    options: set[Option] = set()
    for i, opt in enumerate(reader.strings("options")):
        try:
            options.add(Option(opt))
        except ValueError:
            allowed = ", ".join(o.value for o in Option)
            raise reader.error(
                f"options[{i}]", f"unknown option '{opt}'; expected one of: {allowed}"
            ) from None
    if {
        Option.RETAIN_LONGITUDINAL_FULL_DATES,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    } <= options:
        raise reader.error(
            "options",
            "retain-longitudinal-full-dates and retain-longitudinal-modified-dates exclude "
            "each other; keep one",
        )
    prefix = reader.string("patient_id_prefix", "")
    if len(prefix) > 32 or "\\" in prefix:
        raise reader.error("patient_id_prefix", "expected at most 32 characters, no backslash")
    policy = _choice(reader, "burned_in_annotation", BurnedInPolicy, BurnedInPolicy.QUARANTINE)
    trial = None
    if "trial" in table:
        treader = _Reader(reader.table_of("trial"), f"profiles.{name}.trial", source)
        trial = TrialConfig(
            sponsor=treader.string("sponsor"),
            protocol_id=treader.string("protocol_id"),
            protocol_name=treader.string("protocol_name", ""),
            site_id=treader.string("site_id", ""),
            site_name=treader.string("site_name", ""),
            coordinating_center=treader.string("coordinating_center", ""),
        )
        treader.check_unknown()
    profile = ProfileConfig(
        name=name,
        options=frozenset(options),
        patient_id_prefix=prefix,
        record_linkage=reader.boolean("record_linkage", False),
        burned_in_annotation=policy,
        look_at_every_image=reader.boolean("look_at_every_image", False),
        keep=_tags(reader, "keep"),
        remove=_tags(reader, "remove"),
        replace=_replacements(reader, "replace"),
        scope=reader.string("scope", ""),
        trial=trial,
        pixel_rules=parse_region_rules(
            reader.get("pixel_rules", list, [], "a list of tables ([[profiles.NAME.pixel_rules]])"),
            f"profiles.{name}.pixel_rules",
            source,
        ),
        shipped_pixel_rules=reader.boolean("shipped_pixel_rules", True),
        ultrasound_regions=reader.boolean("ultrasound_regions", False),
        allow_words=_allow_words(reader),
        forward_to=tuple(dict.fromkeys(reader.strings("forward_to"))),
        keep_output=reader.boolean("keep_output", True),
    )
    if not profile.keep_output and not profile.forward_to:
        raise reader.error(
            "keep_output", "false deletes output once forwarded: it needs forward_to"
        )
    both = set(profile.keep) & (set(profile.remove) | {t for t, _ in profile.replace})
    if both:
        tag = min(both)
        raise reader.error(
            "keep", f"{keyword_for_tag(tag) or f'{tag:08X}'} is also in remove or replace"
        )
    reader.check_unknown(("trial",))
    return profile


def _allow_words(reader: _Reader) -> tuple[str, ...]:
    words = set()
    for i, word in enumerate(reader.strings("allow_words")):
        w = word.strip().lower()
        if not w or not all(c.isalnum() for c in w):
            raise reader.error(f"allow_words[{i}]", "expected one word of letters and digits")
        words.add(w)
    return tuple(sorted(words))


_MAX_SIDE = 65535  # Rows and Columns are US (16-bit)


def parse_region_rules(
    items: list[Any], prefix: str, source: Path | None
) -> tuple[RegionRule, ...]:
    """Region rules from TOML tables (a profile's `pixel_rules`, or the shipped file)."""
    rules = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}{prefix}[{i}]: expected a table with match and regions")
        reader = _Reader(item, f"{prefix}[{i}]", source)
        name = reader.string("name", f"rule {i + 1}")
        match = []
        for keyword, value in reader.table_of("match").items():
            if tag_for_keyword(keyword) is None:
                raise reader.error(f"match.{keyword}", "not a DICOM keyword")
            patterns = value if isinstance(value, list) else [value]
            kinds_ok = all(isinstance(v, str | int) and not isinstance(v, bool) for v in patterns)
            if not patterns or not kinds_ok:
                raise reader.error(
                    f"match.{keyword}", "expected a pattern, a number or a list of them"
                )
            match.append((keyword, tuple(str(v) for v in patterns)))
        if not match:
            raise reader.error("match", "is required: at least one attribute to match on")
        regions = []
        raw_regions = reader.get("regions", list, [], "a list of [left, top, width, height]")
        for j, region in enumerate(raw_regions):
            ok = isinstance(region, list) and len(region) == 4
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in region)
            if not ok or not all(-_MAX_SIDE <= v <= _MAX_SIDE for v in region):
                raise reader.error(
                    f"regions[{j}]", "expected [left, top, width, height] as integers"
                )
            if region[2] <= 0 or region[3] <= 0:
                raise reader.error(f"regions[{j}]", "width and height must be positive")
            regions.append((region[0], region[1], region[2], region[3]))
        if not regions:
            raise reader.error("regions", "is required: at least one rectangle")
        reader.check_unknown()
        rules.append(RegionRule(name, tuple(sorted(match)), tuple(regions)))
    return tuple(rules)


def _path(base_dir: Path, value: str) -> Path:
    # normpath, not resolve(): "config/../var" reads badly in audit rows, but symlinks an
    # operator set up are theirs to keep.
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base_dir / p))


def _database_url(url: str, base_dir: Path) -> str:
    # Relative SQLite paths resolve against the config folder, like every other path.
    # Imported here: the receiving processes unpickle a Config and must not import audit/.
    from deid_node.database_url import sqlite_file, with_sqlite_file

    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    return with_sqlite_file(url, (base_dir / path).resolve())


def parse_config(raw: Mapping[str, Any], *, base_dir: Path, source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document."""
    top = _Reader(raw, "", source)
    nraw = top.table_of("node")
    n = _Reader(nraw, "node", source)
    data_dir = _path(base_dir, n.string("data_dir", "var"))
    output_dir = n.string("output_dir", "") or None
    node = NodeConfig(
        ae_title=_ae_title(n, "ae_title", "DEID_NODE"),
        host=n.string("host", "127.0.0.1"),
        port=n.integer("port", 11112, 0, 65535),
        data_dir=data_dir,
        output_dir=_path(base_dir, output_dir) if output_dir else None,
        max_associations=n.integer("max_associations", 16, 1, 1000),
        durability=_choice(n, "durability", Durability, Durability.OS),
        workers=n.integer("workers", 0, 0, 256),
        receivers=n.integer("receivers", 0, 0, 64),
        max_object_bytes=n.integer("max_object_bytes", 4 * 1024**3, 1024, 2**50),
        spool_max_bytes=n.integer("spool_max_bytes", 20 * 1024**3, 1024**2, 2**60),
        network_timeout=n.number("network_timeout", 60.0, 1.0),
        acse_timeout=n.number("acse_timeout", 30.0, 1.0),
        dimse_timeout=n.number("dimse_timeout", 120.0, 1.0),
        request_timeout=n.number("request_timeout", 5.0, 0.5),
    )
    if "tls" in nraw:
        t = _Reader(n.table_of("tls"), "node.tls", source)
        ca = t.string("ca_bundle", "")
        tls = TlsConfig(
            certificate=_path(base_dir, t.string("certificate")),
            key=_path(base_dir, t.string("key")),
            ca_bundle=_path(base_dir, ca) if ca else None,
            require_client_cert=t.boolean("require_client_cert", False),
        )
        if tls.require_client_cert and tls.ca_bundle is None:
            raise t.error("ca_bundle", "is required when require_client_cert = true")
        t.check_unknown()
        node = replace(node, tls=tls)
    try:
        ipaddress.ip_address(node.host)
    except ValueError:
        if node.host != "localhost":
            raise n.error("host", "expected an IP address to bind, such as 127.0.0.1") from None
    n.check_unknown(("tls",))

    from deid_node.database_url import sqlite_url  # see _database_url

    d = _Reader(top.table_of("database"), "database", source)
    default_url = sqlite_url((data_dir / "audit.db").resolve())
    database_url = _database_url(d.string("url", default_url), base_dir)
    d.check_unknown()

    profiles: dict[str, ProfileConfig] = {}
    for name, table in top.table_of("profiles").items():
        if not isinstance(table, dict):
            raise top.error(f"profiles.{name}", "expected a table [profiles.NAME]")
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
            raise top.error(
                f"profiles.{name}", "profile names use letters, digits, '-' and '_' only"
            )
        profiles[name] = _profile(name, table, source)

    srcs = top.get("sources", list, [], "an array of tables [[sources]]")
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(srcs):
        if not isinstance(entry, dict):
            raise top.error(f"sources[{i}]", "expected a table [[sources]]")
        s = _Reader(entry, f"sources[{i}]", source)
        ae = _ae_title(s, "ae_title")
        if ae in seen:
            raise s.error("ae_title", f"'{ae}' is configured twice")
        seen.add(ae)
        profile = s.string("profile")
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise s.error("profile", f"unknown profile '{profile}'; configured profiles: {known}")
        hosts = _networks(s, "hosts")
        s.check_unknown()
        sources.append(SourceConfig(ae_title=ae, profile=profile, hosts=hosts))

    destinations = _destinations(top, base_dir, source)
    for name, prof in profiles.items():
        for i, dest in enumerate(prof.forward_to):
            if dest not in destinations:
                known = ", ".join(sorted(destinations)) or "none"
                raise top.error(
                    f"profiles.{name}.forward_to[{i}]",
                    f"unknown destination '{dest}'; configured destinations: {known}",
                )

    web = _web(top, base_dir, source)

    u = _Reader(top.table_of("unknown_sources"), "unknown_sources", source)
    unknown_action = u.string("action", "reject")
    if unknown_action != "reject" and unknown_action not in profiles:
        raise u.error("action", f"expected 'reject' or a profile name, got '{unknown_action}'")
    u.check_unknown()
    top.check_unknown()
    return Config(
        path=source,
        node=node,
        database_url=database_url,
        sources=tuple(sources),
        unknown_action=unknown_action,
        profiles=profiles,
        destinations=destinations,
        web=web,
    )


def _networks(r: _Reader, key: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for j, h in enumerate(r.strings(key)):
        try:
            out.append(ipaddress.ip_network(h, strict=False))
        except ValueError:
            raise r.error(
                f"{key}[{j}]", f"'{h}' is not an IP address or CIDR like 10.0.0.0/8"
            ) from None
    return tuple(out)


def _web(top: _Reader, base_dir: Path, source: Path | None) -> WebConfig:
    raw = top.table_of("web")
    w = _Reader(raw, "web", source)
    web = WebConfig(
        host=w.string("host", "127.0.0.1"),
        port=w.integer("port", 8080, 0, 65535),
        session_hours=w.number("session_hours", 8.0, 0.01),
        max_upload_bytes=w.integer("max_upload_bytes", 2 * 1024**3, 1024, 2**50),
        max_files=w.integer("max_files", 10000, 1, 10**7),
        trusted_proxies=_networks(w, "trusted_proxies"),
    )
    try:
        ipaddress.ip_address(web.host)
    except ValueError:
        if web.host != "localhost":
            raise w.error("host", "expected an IP address to bind, such as 127.0.0.1") from None
    if "tls" in raw:
        t = _Reader(w.table_of("tls"), "web.tls", source)
        web = replace(
            web,
            certificate=_path(base_dir, t.string("certificate")),
            key=_path(base_dir, t.string("key")),
        )
        t.check_unknown()
    w.check_unknown(("tls",))
    return web


def _destinations(
    top: _Reader, base_dir: Path, source: Path | None
) -> dict[str, DestinationConfig]:
    out: dict[str, DestinationConfig] = {}
    entries = top.get("destinations", list, [], "an array of tables [[destinations]]")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise top.error(f"destinations[{i}]", "expected a table [[destinations]]")
        d = _Reader(entry, f"destinations[{i}]", source)
        name = d.string("name")
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
            raise d.error("name", "destination names use letters, digits, '-' and '_' only")
        if name in out:
            raise d.error("name", f"'{name}' is configured twice")
        host = d.string("host")
        if not host.strip() or any(c.isspace() for c in host):
            raise d.error("host", "expected a host name or an IP address")
        calling = _ae_title(d, "calling_ae", "DEID_NODE") if "calling_ae" in entry else ""
        r = _Reader(d.table_of("retry"), f"destinations[{i}].retry", source)
        retry = RetryConfig(
            delay=r.number("delay", 2.0, 0.01),
            multiplier=r.number("multiplier", 2.0, 1.0),
            max_delay=r.number("max_delay", 120.0, 0.01),
            max_retries=r.integer("max_retries", 3, 1, 1000),
        )
        if retry.max_delay < retry.delay:
            raise r.error("max_delay", f"must be at least delay ({retry.delay:g} s)")
        r.check_unknown()
        tls = None
        if "tls" in entry:
            t = _Reader(d.table_of("tls"), f"destinations[{i}].tls", source)

            def path_or_none(key: str, t: _Reader = t) -> Path | None:
                value = t.string(key, "")
                return _path(base_dir, value) if value else None

            tls = ClientTlsConfig(
                ca_bundle=path_or_none("ca_bundle"),
                certificate=path_or_none("certificate"),
                key=path_or_none("key"),
                server_name=t.string("server_name", ""),
            )
            if (tls.certificate is None) != (tls.key is None):
                raise t.error("key", "certificate and key go together: give both or neither")
            t.check_unknown()
        out[name] = DestinationConfig(
            name=name,
            ae_title=_ae_title(d, "ae_title"),
            host=host.strip(),
            port=d.integer("port", 104, 1, 65535),
            calling_ae=calling,
            max_associations=d.integer("max_associations", 1, 1, 16),
            accept_warnings=d.boolean("accept_warnings", True),
            retry=retry,
            tls=tls,
            timeout=d.number("timeout", 30.0, 0.1),
            idle_release=d.number("idle_release", 5.0, 0.0),
        )
        d.check_unknown(("retry", "tls"))
    return out
