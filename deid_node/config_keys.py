"""Every config key, declared once: its table, its kind (type and bounds), default and meaning.

config.py takes its dataclass defaults from here (:func:`default`) and reads each table
through these declarations (:func:`read_table`); the README's key tables are printed from
them (:func:`markdown_table`, ``scripts/config_table.py``) and a test keeps them equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from socket import gethostname
from typing import Any

from deid_node.config_kinds import (
    REQUIRED,
    AeTitle,
    BindAddress,
    Choice,
    ChoiceSet,
    FilePath,
    Flag,
    HostName,
    Integer,
    Kind,
    Match,
    Name,
    Names,
    Networks,
    Number,
    Rectangles,
    Replacements,
    TableReader,
    Tables,
    Tags,
    Text,
    Words,
)


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
class Key:
    """One config key. `shown` replaces the default in the README when the value misleads."""

    table: str  # dotted, as the README names it: "node", "profiles.NAME.trial", "destinations"
    name: str
    kind: Kind
    default: Any
    meaning: str
    shown: str = ""

    @property
    def dotted(self) -> str:
        """`table.name`, as the README's table lists the key."""
        return f"{self.table}.{self.name}"


GiB = 1024**3
_LIMITS = "[Limits and hostile senders](#limits-and-hostile-senders)"

# fmt: off
KEYS: tuple[Key, ...] = (
    # [node]
    Key("node", "name", Text(64), gethostname()[:64],
        "this node's name on every association, object and forward row, so that several "
        "nodes can share one database; `audit --node` and the console filter by it",
        shown="the host name"),
    Key("node", "ae_title", AeTitle(), "DEID_NODE",
        "our AE title; associations calling another title are rejected"),
    Key("node", "host", BindAddress(), "127.0.0.1", "address to listen on"),
    Key("node", "port", Integer(0, 65535), 11112, "port to listen on"),
    Key("node", "data_dir", FilePath(optional=False), Path("var"),
        "holds `spool/`, `quarantine/` (both 0700, PHI), `output/`, `audit.db`, `secret.key`, "
        "`node.id` (the name this data_dir last ran as), the "
        "console's `web-session.key` and `jobs/`"),
    Key("node", "output_dir", FilePath(), None,
        "de-identified output root (same filesystem as `data_dir` is fastest)",
        shown="`<data_dir>/output`"),
    Key("node", "output_shared", Flag(), False,
        "`true`: `output_dir` is storage every node reads at the same path, so any node's "
        "forwarder may send what this node wrote; `false`: only this node forwards its own "
        "output, see [Forwarding](#forwarding)"),
    Key("node", "max_associations", Integer(1, 1000), 16,
        f"concurrent associations, for the node as a whole; one more is rejected, see {_LIMITS}"),
    Key("node", "durability", Choice(Durability), Durability.OS,
        "`os`: acknowledged objects survive a crash of the node; `fsync`: also a power loss"),
    Key("node", "workers", Integer(0, 256), 0, "de-identification processes; 0 = CPU count"),
    Key("node", "receivers", Integer(0, 64), 0,
        "receiving processes, all accepting on the one port; 0 = min(2, CPU count)"),
    Key("node", "max_object_bytes", Integer(1024, 2**50, "bytes"), 4 * GiB,
        "largest object; a bigger one is answered 0xA700 while it arrives"),
    Key("node", "spool_max_bytes", Integer(1024**2, 2**60, "bytes"), 20 * GiB,
        "bytes waiting in spool/, for the node as a whole; above it C-STORE answers 0xA700"),
    Key("node", "network_timeout", Number(1.0, "s"), 60.0,
        "a peer that stalls mid-message or idles in an association is dropped after this; "
        "it also bounds a TLS handshake"),
    Key("node", "acse_timeout", Number(1.0, "s"), 30.0,
        "how long to wait for a peer's association negotiation and release messages"),
    Key("node", "dimse_timeout", Number(1.0, "s"), 120.0,
        "how long to wait for the next DIMSE message (a C-STORE's data) of a peer"),
    Key("node", "request_timeout", Number(0.5, "s"), 5.0,
        "a new connection's time to send its A-ASSOCIATE-RQ (a TLS handshake included), "
        f"see {_LIMITS}"),
    # [node.tls]
    Key("node.tls", "certificate", FilePath(optional=False), REQUIRED,
        "PEM server certificate (chain), relative to the config file"),
    Key("node.tls", "key", FilePath(optional=False), REQUIRED,
        "its PEM private key (unencrypted)"),
    Key("node.tls", "ca_bundle", FilePath(), None,
        "PEM CA certificates client certificates must chain to; without it none are asked for"),
    Key("node.tls", "require_client_cert", Flag(), False,
        "`true`: mutual TLS, senders without a certificate from `ca_bundle` are refused "
        "(needs `ca_bundle`)"),
    # [database]
    Key("database", "url", Text(), None,
        "any SQLAlchemy URL (PostgreSQL for several nodes); a relative SQLite file resolves "
        "against the config file's folder",
        shown="`sqlite:///<data_dir>/audit.db`"),
    # [[sources]]
    Key("sources", "ae_title", AeTitle(), REQUIRED,
        "a sender's calling AE title (one `[[sources]]` table per sender)"),
    Key("sources", "profile", Text(), REQUIRED, "the profile its objects get"),
    Key("sources", "hosts", Networks(), (),
        "the addresses or CIDRs allowed to use that AE title; none listed: any"),
    # [unknown_sources]
    Key("unknown_sources", "action", Text(), "reject",
        "`reject`, or a profile name to apply to any other sender"),
    # [profiles.NAME]
    Key("profiles.NAME", "options", ChoiceSet(Option, "option"), frozenset(),
        "PS3.15 options, see below"),
    Key("profiles.NAME", "patient_id_prefix", Text(limit=32), "",
        "prefix of pseudonymous patient IDs"),
    Key("profiles.NAME", "burned_in_annotation", Choice(BurnedInPolicy),
        BurnedInPolicy.QUARANTINE,
        "what becomes of objects that may carry burned-in text: `quarantine`, `clean` (found "
        "and blanked, see [Burned-in text](#burned-in-text)) or `allow`"),
    Key("profiles.NAME", "record_linkage", Flag(), False,
        "keep original identifiers (patient ID and name, accession number, study/series/SOP "
        "UIDs) and the date shift in days (`retain-longitudinal-modified-dates`; empty when "
        "dates are not shifted) in the separate `linkage` table, beside the pseudonyms"),
    Key("profiles.NAME", "look_at_every_image", Flag(), False,
        "also look at ORIGINAL\\PRIMARY images of kinds without text (CT, MR, PET, ...): "
        "every frame of every image"),
    Key("profiles.NAME", "keep", Tags(), (),
        "kept untouched, overriding the table"),
    Key("profiles.NAME", "remove", Tags(), (), "removed, overriding the table"),
    Key("profiles.NAME", "replace", Replacements(), (),
        '`{ Keyword = "value" }`: written with that text, overriding the table'),
    Key("profiles.NAME", "scope", Text(), "",
        "pseudonym scope: two scopes give unlinkable pseudonyms",
        shown="the profile name"),
    Key("profiles.NAME", "pixel_rules", Tables("[[profiles.NAME.pixel_rules]]"), (),
        "where your equipment burns text in: every matching rule is blanked"),
    Key("profiles.NAME", "shipped_pixel_rules", Flag(), True,
        "whether the rules in `deid_node/data/pixel_rules.toml` apply too"),
    Key("profiles.NAME", "ultrasound_regions", Flag(), False,
        "blank everything outside the SequenceOfUltrasoundRegions data regions"),
    Key("profiles.NAME", "allow_words", Words(), (),
        "words (letters and digits, any case) the free-text cleaner keeps besides its "
        "vocabulary, see [Free text](#free-text-what-a-researcher-loses)"),
    Key("profiles.NAME", "forward_to", Names(), (),
        "destination names: every object this profile stores is forwarded to each, see "
        "[Forwarding](#forwarding)"),
    Key("profiles.NAME", "keep_output", Flag(), True,
        "`false`: the output file is deleted once every destination has it (needs `forward_to`)"),
    # [profiles.NAME.trial]
    Key("profiles.NAME.trial", "sponsor", Text(), REQUIRED,
        "with this table, the Clinical Trial Subject/Study/Series modules are written to every "
        "object: Clinical Trial Sponsor Name"),
    Key("profiles.NAME.trial", "protocol_id", Text(), REQUIRED, "Clinical Trial Protocol ID"),
    Key("profiles.NAME.trial", "protocol_name", Text(), "", "Clinical Trial Protocol Name"),
    Key("profiles.NAME.trial", "site_id", Text(), "", "Clinical Trial Site ID"),
    Key("profiles.NAME.trial", "site_name", Text(), "", "Clinical Trial Site Name"),
    Key("profiles.NAME.trial", "coordinating_center", Text(), "",
        "Clinical Trial Coordinating Center Name"),
    # [[profiles.NAME.pixel_rules]]
    Key("profiles.NAME.pixel_rules", "name", Text(), REQUIRED,
        "the rule's name, given in the audit reason of what it blanked",
        shown="`rule N`"),
    Key("profiles.NAME.pixel_rules", "match", Match(), REQUIRED,
        '`{ Keyword = "pattern" or [patterns] }`: case-insensitive, `*` and `?` wildcards; '
        "each attribute must match one of its patterns"),
    Key("profiles.NAME.pixel_rules", "regions", Rectangles(), REQUIRED,
        "`[[left, top, width, height], ...]` in pixels, blanked in every frame; a negative "
        "left or top counts from the far edge"),
    # [[destinations]]
    Key("destinations", "name", Name("destination"), REQUIRED,
        "what profiles' `forward_to` call it (one `[[destinations]]` table per C-STORE SCP "
        "to forward to)"),
    Key("destinations", "ae_title", AeTitle(), REQUIRED, "its AE title"),
    Key("destinations", "host", HostName(), REQUIRED, "its host name or IP address"),
    Key("destinations", "port", Integer(1, 65535), 104, "its port"),
    Key("destinations", "calling_ae", AeTitle(), "", "our AE title towards it",
        shown="`node.ae_title`"),
    Key("destinations", "max_associations", Integer(1, 16), 1,
        "associations sending to it in parallel"),
    Key("destinations", "accept_warnings", Flag(), True,
        "a C-STORE warning (0xB000, 0xB006, 0xB007) counts as sent"),
    Key("destinations", "timeout", Number(0.1, "s"), 30.0,
        "connection, ACSE and DIMSE timeout"),
    Key("destinations", "idle_release", Number(0.0, "s"), 5.0,
        "an association with nothing to send is released after this"),
    # [destinations.retry]
    Key("destinations.retry", "delay", Number(0.01, "s"), 2.0,
        "wait after a transient failure (no association, an abort, a timeout, 0xA7xx); "
        "attempt n waits `delay * multiplier^(n-1)`, and is retried for as long as it takes"),
    Key("destinations.retry", "multiplier", Number(1.0), 2.0,
        "growth of the wait from one attempt to the next"),
    Key("destinations.retry", "max_delay", Number(0.01, "s"), 120.0,
        "longest wait between attempts (at least `delay`)"),
    Key("destinations.retry", "max_retries", Integer(1, 1000), 3,
        "attempts after which a permanent failure (0xA9xx, 0xCxxx, a refused SOP class) "
        "fails for good"),
    # [destinations.tls]
    Key("destinations.tls", "ca_bundle", FilePath(), None,
        "with this table, DICOM TLS to it: the CA its certificate must chain to (none: the "
        "system's)"),
    Key("destinations.tls", "certificate", FilePath(), None,
        "our certificate, if it asks for one (with `key`)"),
    Key("destinations.tls", "key", FilePath(), None, "the certificate's private key"),
    Key("destinations.tls", "server_name", Text(), "", "the name its certificate must carry",
        shown="`host`"),
    # [web]
    Key("web", "host", BindAddress(), "127.0.0.1", "where `deid-node web` listens"),
    Key("web", "port", Integer(0, 65535), 8080, "the console's port"),
    Key("web", "session_hours", Number(0.01, "h"), 8.0, "how long a login lasts"),
    Key("web", "max_upload_bytes", Integer(1024, 2**50, "bytes"), 2 * GiB,
        "bound of one job's upload (ZIP contents included)"),
    Key("web", "max_files", Integer(1, 10**7), 10000,
        "files in one job (ZIP members included)"),
    Key("web", "trusted_proxies", Networks(), (),
        "addresses or CIDRs of reverse proxies whose `X-Forwarded-For` (and `-Proto`) names "
        "the client; from any other peer, loopback included, the header is ignored"),
    # [web.tls]
    Key("web.tls", "certificate", FilePath(optional=False), REQUIRED,
        "with this table, the console serves HTTPS (the session cookie is then Secure): "
        "PEM certificate (chain)"),
    Key("web.tls", "key", FilePath(optional=False), REQUIRED, "its PEM private key"),
    # [metrics]
    Key("metrics", "host", BindAddress(), "127.0.0.1",
        "with this table, the node serves `GET /health` and `GET /metrics` (Prometheus) here; "
        "no table: not served"),
    Key("metrics", "port", Integer(0, 65535), 9112, "their port"),
)
# fmt: on

_BY_KEY = {(k.table, k.name): k for k in KEYS}
TABLES = tuple(dict.fromkeys(k.table for k in KEYS))


def default(table: str, name: str) -> Any:
    """The declared default of a key (for a dataclass field)."""
    key = _BY_KEY[(table, name)]
    if key.default is REQUIRED:
        raise KeyError(f"{table}.{name} is required: it has no default")
    return key.default


def read_table(
    reader: TableReader, table: str, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every declared key of `table`, read and checked in order: name -> value.

    `defaults` gives those that depend on the rest (the database next to `data_dir`).
    """
    values = {}
    for key in KEYS:
        if key.table == table:
            given = (defaults or {}).get(key.name, key.default)
            values[key.name] = key.kind.read(reader, key.name, given)
    return values


def check_unknown(reader: TableReader, table: str) -> None:
    """Refuse keys not declared for `table` (its declared sub-tables are allowed)."""
    depth = table.count(".") + 1
    subtables = tuple(
        t.split(".")[depth] for t in TABLES if t.startswith(table + ".") and t.count(".") == depth
    )
    reader.check_unknown(subtables)


# --------------------------------------------------------------------------------------------
# The README's tables

README_TABLES: dict[str, tuple[str, ...]] = {
    "node.tls": ("node.tls",),  # under "DICOM TLS"
    "keys": tuple(t for t in TABLES if t != "node.tls"),  # under "Configuration"
}


def markdown_table(tables: Iterable[str]) -> str:
    """The README's table of these tables' keys: key, default, what it takes, meaning."""
    wanted = tuple(tables)
    lines = ["| key | default | accepts | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        if key.table in wanted:
            shown = key.shown or key.kind.show(key.default)
            lines.append(f"| `{key.dotted}` | {shown} | {key.kind.accepts()} | {key.meaning} |")
    return "\n".join(lines) + "\n"


_BEGIN = "<!-- config keys: {name} (printed by scripts/config_table.py; do not edit by hand) -->\n"
_END = "<!-- end of config keys -->\n"


def with_readme_tables(readme: str) -> str:
    """The README with each marked key table printed afresh from the declarations.

    ValueError if a table in README_TABLES has no marked place in it.
    """
    for name, tables in README_TABLES.items():
        begin = _BEGIN.format(name=name)
        start = readme.find(begin)
        end = readme.find(_END, start)
        if start < 0 or end < 0:
            raise ValueError(f"the README has no place for the '{name}' key table: {begin!r}")
        start += len(begin)
        readme = readme[:start] + markdown_table(tables) + readme[end:]
    return readme
