"""Load and validate the TOML configuration into frozen dataclasses.

Each key is declared once in config_keys.py (kind, bounds, default, meaning): the
dataclass defaults below and the reading in parse_config come from there. Every error
names the file and the key, says what was expected, and never echoes a value that could
be PHI (config files hold none, but we stay strict anyway).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from pydicom.datadict import keyword_for_tag

from deid_node.config_keys import BurnedInPolicy as BurnedInPolicy
from deid_node.config_keys import Durability as Durability
from deid_node.config_keys import Option as Option
from deid_node.config_keys import check_unknown, default, read_table
from deid_node.config_kinds import IPNetwork, TableReader
from deid_node.config_kinds import parse_tag as parse_tag
from deid_node.errors import ConfigError

DEFAULT_CONFIG = Path("config/deid-node.toml")
CONFIG_ENV = "DEID_NODE_CONFIG"

_PROFILE = "profiles.NAME"
_TRIAL = "profiles.NAME.trial"
_RULE = "profiles.NAME.pixel_rules"
_DEST = "destinations"
_RETRY = "destinations.retry"
_CLIENT_TLS = "destinations.tls"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class TrialConfig:
    """Clinical Trial Subject/Study/Series module values written into every object."""

    sponsor: str
    protocol_id: str
    protocol_name: str = default(_TRIAL, "protocol_name")
    site_id: str = default(_TRIAL, "site_id")
    site_name: str = default(_TRIAL, "site_name")
    coordinating_center: str = default(_TRIAL, "coordinating_center")


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
    options: frozenset[Option] = default(_PROFILE, "options")
    patient_id_prefix: str = default(_PROFILE, "patient_id_prefix")
    record_linkage: bool = default(_PROFILE, "record_linkage")
    burned_in_annotation: BurnedInPolicy = default(_PROFILE, "burned_in_annotation")
    keep: tuple[int, ...] = default(_PROFILE, "keep")
    remove: tuple[int, ...] = default(_PROFILE, "remove")
    # (tag, value) pairs; a tuple keeps it hashable
    replace: tuple[tuple[int, str], ...] = default(_PROFILE, "replace")
    scope: str = default(_PROFILE, "scope")
    trial: TrialConfig | None = None  # no [profiles.NAME.trial] table
    pixel_rules: tuple[RegionRule, ...] = default(_PROFILE, "pixel_rules")
    shipped_pixel_rules: bool = default(_PROFILE, "shipped_pixel_rules")
    ultrasound_regions: bool = default(_PROFILE, "ultrasound_regions")
    look_at_every_image: bool = default(_PROFILE, "look_at_every_image")
    allow_words: tuple[str, ...] = default(_PROFILE, "allow_words")  # lower case, sorted
    forward_to: tuple[str, ...] = default(_PROFILE, "forward_to")  # destination names
    keep_output: bool = default(_PROFILE, "keep_output")

    @property
    def pseudonym_scope(self) -> str:
        """The HMAC scope: two scopes give unlinkable pseudonyms."""
        return self.scope or self.name


@dataclass(frozen=True)
class SourceConfig:
    """A sender allowed to associate, and the profile its objects get."""

    ae_title: str
    profile: str
    hosts: tuple[IPNetwork, ...] = default("sources", "hosts")

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
    ca_bundle: Path | None = default("node.tls", "ca_bundle")
    require_client_cert: bool = default("node.tls", "require_client_cert")


@dataclass(frozen=True)
class RetryConfig:
    """[destinations.retry]: when to try a job again (dcm4chee's vocabulary).

    A transient failure (no association, an abort, a timeout, 0xA7xx) is retried for as
    long as it takes, `delay` * `multiplier` ** (attempt - 1) seconds later, at most
    `max_delay`; a permanent one (0xA9xx, 0xCxxx, a refused SOP class) fails for good
    after `max_retries` attempts.
    """

    delay: float = default(_RETRY, "delay")
    multiplier: float = default(_RETRY, "multiplier")
    max_delay: float = default(_RETRY, "max_delay")
    max_retries: int = default(_RETRY, "max_retries")

    def pause(self, attempts: int) -> float:
        """Seconds to wait after the given number of failed attempts."""
        exponent = min(max(attempts - 1, 0), 60)  # no float overflow after many failures
        return float(min(self.max_delay, self.delay * self.multiplier**exponent))


@dataclass(frozen=True)
class ClientTlsConfig:
    """[destinations.tls]: DICOM TLS towards a destination."""

    ca_bundle: Path | None = default(_CLIENT_TLS, "ca_bundle")  # None: the system's
    certificate: Path | None = default(_CLIENT_TLS, "certificate")
    key: Path | None = default(_CLIENT_TLS, "key")
    server_name: str = default(_CLIENT_TLS, "server_name")  # "": host


@dataclass(frozen=True)
class DestinationConfig:
    """A [[destinations]] entry: a C-STORE SCP that stored objects are forwarded to."""

    name: str
    ae_title: str
    host: str
    port: int = default(_DEST, "port")
    calling_ae: str = default(_DEST, "calling_ae")  # "": node.ae_title
    max_associations: int = default(_DEST, "max_associations")
    accept_warnings: bool = default(_DEST, "accept_warnings")
    retry: RetryConfig = RetryConfig()
    tls: ClientTlsConfig | None = None  # no [destinations.tls] table
    timeout: float = default(_DEST, "timeout")
    idle_release: float = default(_DEST, "idle_release")


@dataclass(frozen=True)
class WebConfig:
    """[web]: the web console's own address (`deid-node web`), HTTPS with [web.tls]."""

    host: str = default("web", "host")
    port: int = default("web", "port")
    certificate: Path | None = None  # no [web.tls] table
    key: Path | None = None
    session_hours: float = default("web", "session_hours")
    max_upload_bytes: int = default("web", "max_upload_bytes")
    max_files: int = default("web", "max_files")
    trusted_proxies: tuple[IPNetwork, ...] = default("web", "trusted_proxies")

    @property
    def https(self) -> bool:
        """Whether the console serves HTTPS."""
        return self.certificate is not None


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: where the node serves /health and /metrics (no table: not served)."""

    host: str = default("metrics", "host")
    port: int = default("metrics", "port")


@dataclass(frozen=True)
class NodeConfig:
    """The [node] table."""

    name: str = default("node", "name")
    ae_title: str = default("node", "ae_title")
    host: str = default("node", "host")
    port: int = default("node", "port")
    data_dir: Path = default("node", "data_dir")
    output_dir: Path | None = default("node", "output_dir")
    output_shared: bool = default("node", "output_shared")
    max_associations: int = default("node", "max_associations")
    durability: Durability = default("node", "durability")
    workers: int = default("node", "workers")  # 0 = CPU count
    receivers: int = default("node", "receivers")  # 0 = min(2, CPU count)
    max_object_bytes: int = default("node", "max_object_bytes")
    spool_max_bytes: int = default("node", "spool_max_bytes")
    network_timeout: float = default("node", "network_timeout")
    acse_timeout: float = default("node", "acse_timeout")
    dimse_timeout: float = default("node", "dimse_timeout")
    request_timeout: float = default("node", "request_timeout")
    tls: TlsConfig | None = None  # no [node.tls] table

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
    metrics: MetricsConfig | None = None  # no [metrics] table: /health and /metrics off

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


BUILTIN_PROFILES: Final = Path(__file__).parent / "data" / "builtin_profiles.toml"


def builtin_profiles() -> dict[str, ProfileConfig]:
    """The profiles every node has without a config file (data/builtin_profiles.toml)."""
    raw = tomllib.loads(BUILTIN_PROFILES.read_text(encoding="utf-8"))
    return dict(
        parse_config(raw, base_dir=BUILTIN_PROFILES.parent, source=BUILTIN_PROFILES).profiles
    )


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


def _profile(name: str, table: Mapping[str, Any], top: TableReader) -> ProfileConfig:
    reader = TableReader(table, f"profiles.{name}", top.source, top.base_dir)
    values = read_table(reader, _PROFILE)
    dates = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    if dates <= values["options"]:
        raise reader.error(
            "options",
            "retain-longitudinal-full-dates and retain-longitudinal-modified-dates exclude "
            "each other; keep one",
        )
    trial = None
    if "trial" in table:
        treader = reader.sub("trial", f"profiles.{name}.trial")
        trial = TrialConfig(**read_table(treader, _TRIAL))
        check_unknown(treader, _TRIAL)
    rules = parse_region_rules(
        values.pop("pixel_rules"), f"profiles.{name}.pixel_rules", top.source
    )
    profile = ProfileConfig(name=name, trial=trial, pixel_rules=rules, **values)
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
    check_unknown(reader, _PROFILE)
    return profile


def parse_region_rules(
    items: list[Any], prefix: str, source: Path | None
) -> tuple[RegionRule, ...]:
    """Region rules from TOML tables (a profile's `pixel_rules`, or the shipped file)."""
    rules = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}{prefix}[{i}]: expected a table with match and regions")
        reader = TableReader(item, f"{prefix}[{i}]", source)
        values = read_table(reader, _RULE, defaults={"name": f"rule {i + 1}"})
        check_unknown(reader, _RULE)
        rules.append(RegionRule(**values))
    return tuple(rules)


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
    top = TableReader(raw, "", source, base_dir)
    node = _node(top)

    from deid_node.database_url import sqlite_url  # see _database_url

    d = top.sub("database", "database")
    default_url = sqlite_url((node.data_dir / "audit.db").resolve())
    database_url = _database_url(read_table(d, "database", {"url": default_url})["url"], base_dir)
    check_unknown(d, "database")

    profiles: dict[str, ProfileConfig] = {}
    for name, table in top.table_of("profiles").items():
        if not isinstance(table, dict):
            raise top.error(f"profiles.{name}", "expected a table [profiles.NAME]")
        if not _NAME_RE.match(name):
            raise top.error(
                f"profiles.{name}", "profile names use letters, digits, '-' and '_' only"
            )
        profiles[name] = _profile(name, table, top)

    sources = _sources(top, profiles)
    destinations = _destinations(top)
    for name, prof in profiles.items():
        for i, dest in enumerate(prof.forward_to):
            if dest not in destinations:
                known = ", ".join(sorted(destinations)) or "none"
                raise top.error(
                    f"profiles.{name}.forward_to[{i}]",
                    f"unknown destination '{dest}'; configured destinations: {known}",
                )

    web = _web(top)
    if web.port and web.port == node.port and _may_share(web.host, node.host):
        # Whichever starts second could not listen: said now, not at the second start.
        raise top.sub("web", "web").error(
            "port", f"{web.port} is node.port too: the console needs a port of its own"
        )
    metrics = None
    if "metrics" in top.table:
        m = top.sub("metrics", "metrics")
        metrics = MetricsConfig(**read_table(m, "metrics"))
        check_unknown(m, "metrics")
        for other, host, table in ((node.port, node.host, "node"), (web.port, web.host, "web")):
            if metrics.port and metrics.port == other and _may_share(metrics.host, host):
                raise m.error(
                    "port", f"{metrics.port} is {table}.port too: metrics need a port of their own"
                )

    u = top.sub("unknown_sources", "unknown_sources")
    unknown_action = read_table(u, "unknown_sources")["action"]
    if unknown_action != "reject" and unknown_action not in profiles:
        raise u.error("action", f"expected 'reject' or a profile name, got '{unknown_action}'")
    check_unknown(u, "unknown_sources")
    top.check_unknown()
    return Config(
        path=source,
        node=node,
        database_url=database_url,
        sources=sources,
        unknown_action=unknown_action,
        profiles=profiles,
        destinations=destinations,
        web=web,
        metrics=metrics,
    )


def _may_share(a: str, b: str) -> bool:
    """Whether two listening hosts may claim the same address (one of them all)."""
    anywhere = {"", "0.0.0.0", "::"}
    return a == b or a in anywhere or b in anywhere


def _node(top: TableReader) -> NodeConfig:
    n = top.sub("node", "node")
    node = NodeConfig(**read_table(n, "node"))
    if not node.name.strip():
        raise n.error("name", "expected a name for this node, e.g. its host name")
    if "tls" in n.table:
        t = n.sub("tls", "node.tls")
        tls = TlsConfig(**read_table(t, "node.tls"))
        if tls.require_client_cert and tls.ca_bundle is None:
            raise t.error("ca_bundle", "is required when require_client_cert = true")
        check_unknown(t, "node.tls")
        node = replace(node, tls=tls)
    check_unknown(n, "node")
    return node


def _sources(top: TableReader, profiles: Mapping[str, ProfileConfig]) -> tuple[SourceConfig, ...]:
    entries = top.get("sources", list, [], "an array of tables [[sources]]")
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise top.error(f"sources[{i}]", "expected a table [[sources]]")
        s = TableReader(entry, f"sources[{i}]", top.source, top.base_dir)
        src = SourceConfig(**read_table(s, "sources"))
        if src.ae_title in seen:
            raise s.error("ae_title", f"'{src.ae_title}' is configured twice")
        seen.add(src.ae_title)
        if src.profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise s.error(
                "profile", f"unknown profile '{src.profile}'; configured profiles: {known}"
            )
        check_unknown(s, "sources")
        sources.append(src)
    return tuple(sources)


def _web(top: TableReader) -> WebConfig:
    w = top.sub("web", "web")
    web = WebConfig(**read_table(w, "web"))
    if "tls" in w.table:
        t = w.sub("tls", "web.tls")
        web = replace(web, **read_table(t, "web.tls"))
        check_unknown(t, "web.tls")
    check_unknown(w, "web")
    return web


def _destinations(top: TableReader) -> dict[str, DestinationConfig]:
    out: dict[str, DestinationConfig] = {}
    entries = top.get("destinations", list, [], "an array of tables [[destinations]]")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise top.error(f"destinations[{i}]", "expected a table [[destinations]]")
        d = TableReader(entry, f"destinations[{i}]", top.source, top.base_dir)
        values = read_table(d, _DEST)
        if values["name"] in out:
            raise d.error("name", f"'{values['name']}' is configured twice")
        r = d.sub("retry", f"destinations[{i}].retry")
        retry = RetryConfig(**read_table(r, _RETRY))
        if retry.max_delay < retry.delay:
            raise r.error("max_delay", f"must be at least delay ({retry.delay:g} s)")
        check_unknown(r, _RETRY)
        tls = None
        if "tls" in entry:
            t = d.sub("tls", f"destinations[{i}].tls")
            tls = ClientTlsConfig(**read_table(t, _CLIENT_TLS))
            if (tls.certificate is None) != (tls.key is None):
                raise t.error("key", "certificate and key go together: give both or neither")
            check_unknown(t, _CLIENT_TLS)
        out[values["name"]] = DestinationConfig(retry=retry, tls=tls, **values)
        check_unknown(d, _DEST)
    return out
