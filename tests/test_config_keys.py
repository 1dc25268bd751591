"""The config keys: each declared once; errors, defaults and the README's table follow from it."""

# ruff: noqa: E501  (each message whole, as a user sees it and greps for it)

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deid_node.cli.app import app
from deid_node.config import (
    BurnedInPolicy,
    DestinationConfig,
    Durability,
    NodeConfig,
    ProfileConfig,
    RetryConfig,
    WebConfig,
    parse_config,
)
from deid_node.config_keys import KEYS, TABLES, Key, with_readme_tables
from deid_node.errors import ConfigError

PROFILE = "[profiles.p]\n"
SOURCE = '[[sources]]\nae_title = "A"\nprofile = "p"\n'
DEST = '[[destinations]]\nname = "d"\nae_title = "D"\nhost = "10.0.0.1"\n'

# Every message as it was before the keys were declared in one place: word for word.
MESSAGES = [
    ("[node]\nport = 70000\n", "node.port: expected an integer from 0 to 65535, got 70000"),
    ('[node]\nport = "x"\n', "node.port: expected an integer, got str"),
    ("[node]\nport = true\n", "node.port: expected an integer, got a boolean"),
    ("[node]\nport = 1.5\n", "node.port: expected an integer, got float"),
    (
        '[node]\nae_title = "A\\\\B"\n',
        "node.ae_title: expected an AE title: 1 to 16 printable characters, no backslash",
    ),
    (
        '[node]\nae_title = "  "\n',
        "node.ae_title: expected an AE title: 1 to 16 printable characters, no backslash",
    ),
    (
        '[node]\nae_title = "ABCDEFGHIJKLMNOPQ"\n',
        "node.ae_title: expected an AE title: 1 to 16 printable characters, no backslash",
    ),
    (
        '[node]\nhost = "example.org"\n',
        "node.host: expected an IP address to bind, such as 127.0.0.1",
    ),
    (
        '[node]\ndurability = "sometimes"\n',
        "node.durability: expected one of 'os', 'fsync', got 'sometimes'",
    ),
    ("[node]\ndurability = 1\n", "node.durability: expected a string, got int"),
    ("[node]\nnetwork_timeout = 0.5\n", "node.network_timeout: expected a number >= 1.0, got 0.5"),
    ("[node]\nacse_timeout = nan\n", "node.acse_timeout: expected a number >= 1.0, got nan"),
    ("[node]\ndimse_timeout = inf\n", "node.dimse_timeout: expected a number >= 1.0, got inf"),
    ("[node]\nrequest_timeout = 0.1\n", "node.request_timeout: expected a number >= 0.5, got 0.1"),
    ("[node]\nrequest_timeout = false\n", "node.request_timeout: expected a number, got a boolean"),
    (
        "[node]\nmax_object_bytes = 10\n",
        "node.max_object_bytes: expected an integer from 1024 to 1125899906842624, got 10",
    ),
    (
        "[node]\nspool_max_bytes = 1024\n",
        "node.spool_max_bytes: expected an integer from 1048576 to 1152921504606846976, got 1024",
    ),
    ("[node]\nworkers = 300\n", "node.workers: expected an integer from 0 to 256, got 300"),
    ("[node]\nreceivers = -1\n", "node.receivers: expected an integer from 0 to 64, got -1"),
    (
        "[node]\nmax_associations = 0\n",
        "node.max_associations: expected an integer from 1 to 1000, got 0",
    ),
    ("[node]\ndata_dir = 5\n", "node.data_dir: expected a string, got int"),
    ("[node]\noutput_dir = []\n", "node.output_dir: expected a string, got list"),
    (
        "[node]\ncolour = 1\n",
        "node.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("node = 5\n", "node: expected a table, got int"),
    ('[node.tls]\nkey = "k"\n', "node.tls.certificate: is required (a string)"),
    ('[node.tls]\ncertificate = "c"\n', "node.tls.key: is required (a string)"),
    (
        '[node.tls]\ncertificate = "c"\nkey = "k"\nrequire_client_cert = true\n',
        "node.tls.ca_bundle: is required when require_client_cert = true",
    ),
    (
        '[node.tls]\ncertificate = "c"\nkey = "k"\nrequire_client_cert = "yes"\n',
        "node.tls.require_client_cert: expected true or false, got str",
    ),
    (
        '[node.tls]\ncertificate = "c"\nkey = "k"\ncolour = 1\n',
        "node.tls.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("[database]\nurl = 5\n", "database.url: expected a string, got int"),
    (
        "[database]\ncolour = 1\n",
        "database.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("sources = 5\n", "sources: expected an array of tables [[sources]], got int"),
    ("sources = [5]\n[profiles.p]\n", "sources[0]: expected a table [[sources]]"),
    (PROFILE + SOURCE + SOURCE, "sources[1].ae_title: 'A' is configured twice"),
    (
        PROFILE + '[[sources]]\nae_title = "A"\nprofile = "q"\n',
        "sources[0].profile: unknown profile 'q'; configured profiles: p",
    ),
    (PROFILE + '[[sources]]\nprofile = "p"\n', "sources[0].ae_title: is required (a string)"),
    (PROFILE + '[[sources]]\nae_title = "A"\n', "sources[0].profile: is required (a string)"),
    (
        PROFILE + SOURCE + 'hosts = ["nowhere"]\n',
        "sources[0].hosts[0]: 'nowhere' is not an IP address or CIDR like 10.0.0.0/8",
    ),
    (
        PROFILE + SOURCE + 'hosts = "10.0.0.1"\n',
        "sources[0].hosts: expected a list of strings, got str",
    ),
    (
        PROFILE + SOURCE + "colour = 1\n",
        "sources[0].colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (
        PROFILE + '[unknown_sources]\naction = "nope"\n',
        "unknown_sources.action: expected 'reject' or a profile name, got 'nope'",
    ),
    (
        '[unknown_sources]\naction = "nope"\n',
        "unknown_sources.action: expected 'reject' or a profile name, got 'nope'",
    ),
    (
        "[unknown_sources]\ncolour = 1\n",
        "unknown_sources.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("[profiles]\np = 5\n", "profiles.p: expected a table [profiles.NAME]"),
    (
        '[profiles."bad name"]\n',
        "profiles.bad name: profile names use letters, digits, '-' and '_' only",
    ),
    ("profiles = 5\n", "profiles: expected a table, got int"),
    (
        PROFILE + 'options = ["retain-foo"]\n',
        "profiles.p.options[0]: unknown option 'retain-foo'; expected one of: retain-safe-private, retain-uids, retain-device-identity, retain-institution-identity, retain-patient-characteristics, retain-longitudinal-full-dates, retain-longitudinal-modified-dates, clean-descriptors, clean-structured-content, clean-graphics, clean-pixel-data",
    ),
    (
        PROFILE + 'options = "retain-uids"\n',
        "profiles.p.options: expected a list of strings, got str",
    ),
    (PROFILE + "options = [1]\n", "profiles.p.options[0]: expected a string, got int"),
    (
        PROFILE
        + 'options = ["retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"]\n',
        "profiles.p.options: retain-longitudinal-full-dates and retain-longitudinal-modified-dates exclude each other; keep one",
    ),
    (
        PROFILE + 'patient_id_prefix = "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"\n',
        "profiles.p.patient_id_prefix: expected at most 32 characters, no backslash",
    ),
    (
        PROFILE + 'patient_id_prefix = "A\\\\B"\n',
        "profiles.p.patient_id_prefix: expected at most 32 characters, no backslash",
    ),
    (
        PROFILE + "patient_id_prefix = 5\n",
        "profiles.p.patient_id_prefix: expected a string, got int",
    ),
    (
        PROFILE + 'burned_in_annotation = "sometimes"\n',
        "profiles.p.burned_in_annotation: expected one of 'quarantine', 'clean', 'allow', got 'sometimes'",
    ),
    (
        PROFILE + "record_linkage = 1\n",
        "profiles.p.record_linkage: expected true or false, got int",
    ),
    (
        PROFILE + 'look_at_every_image = "no"\n',
        "profiles.p.look_at_every_image: expected true or false, got str",
    ),
    (
        PROFILE + 'keep = ["NotAKeyword"]\n',
        "profiles.p.keep[0]: 'NotAKeyword' is not a DICOM keyword or a tag like \"(0010,0010)\"",
    ),
    (
        PROFILE + 'remove = ["(0010,001"]\n',
        "profiles.p.remove[0]: '(0010,001' is not a DICOM keyword or a tag like \"(0010,0010)\"",
    ),
    (
        PROFILE + 'replace = { NotAKeyword = "x" }\n',
        'profiles.p.replace.NotAKeyword: not a DICOM keyword or a tag like "(0010,0010)"',
    ),
    (
        PROFILE + "replace = { StudyDescription = 5 }\n",
        "profiles.p.replace.StudyDescription: expected a string value",
    ),
    (
        PROFILE + 'replace = { ReferencedImageSequence = "x" }\n',
        "profiles.p.replace.ReferencedImageSequence: cannot replace ReferencedImageSequence (VR SQ) by text",
    ),
    (PROFILE + 'replace = "x"\n', "profiles.p.replace: expected a table, got str"),
    (
        PROFILE + 'keep = ["PatientName"]\nremove = ["(0010,0010)"]\n',
        "profiles.p.keep: PatientName is also in remove or replace",
    ),
    (
        PROFILE + 'keep = ["StudyDescription"]\nreplace = { StudyDescription = "R" }\n',
        "profiles.p.keep: StudyDescription is also in remove or replace",
    ),
    (
        PROFILE + "keep_output = false\n",
        "profiles.p.keep_output: false deletes output once forwarded: it needs forward_to",
    ),
    (
        PROFILE + 'forward_to = ["nowhere"]\n',
        "profiles.p.forward_to[0]: unknown destination 'nowhere'; configured destinations: none",
    ),
    (
        PROFILE
        + 'forward_to = ["nowhere"]\n[[destinations]]\nname = "d"\nae_title = "D"\nhost = "10.0.0.1"\n',
        "profiles.p.forward_to[0]: unknown destination 'nowhere'; configured destinations: d",
    ),
    (
        PROFILE + 'allow_words = ["two words"]\n',
        "profiles.p.allow_words[0]: expected one word of letters and digits",
    ),
    (
        PROFILE + 'allow_words = [""]\n',
        "profiles.p.allow_words[0]: expected one word of letters and digits",
    ),
    (PROFILE + "scope = 5\n", "profiles.p.scope: expected a string, got int"),
    (
        PROFILE + "shipped_pixel_rules = 0\n",
        "profiles.p.shipped_pixel_rules: expected true or false, got int",
    ),
    (
        PROFILE + 'ultrasound_regions = "x"\n',
        "profiles.p.ultrasound_regions: expected true or false, got str",
    ),
    (
        PROFILE + "colour = 1\n",
        "profiles.p.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (
        PROFILE + '[profiles.p.trial]\nprotocol_id = "P"\n',
        "profiles.p.trial.sponsor: is required (a string)",
    ),
    (
        PROFILE + '[profiles.p.trial]\nsponsor = "S"\n',
        "profiles.p.trial.protocol_id: is required (a string)",
    ),
    (
        PROFILE + '[profiles.p.trial]\nsponsor = "S"\nprotocol_id = "P"\ncolour = 1\n',
        "profiles.p.trial.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (PROFILE + "trial = 5\n", "profiles.p.trial: expected a table, got int"),
    (
        PROFILE + "pixel_rules = 5\n",
        "profiles.p.pixel_rules: expected a list of tables ([[profiles.NAME.pixel_rules]]), got int",
    ),
    (
        PROFILE + "pixel_rules = [5]\n",
        "profiles.p.pixel_rules[0]: expected a table with match and regions",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nmatch = { NotAKeyword = "x" }\nregions = [[0, 0, 1, 1]]\n',
        "profiles.p.pixel_rules[0].match.NotAKeyword: not a DICOM keyword",
    ),
    (
        PROFILE
        + "[[profiles.p.pixel_rules]]\nmatch = { Modality = true }\nregions = [[0, 0, 1, 1]]\n",
        "profiles.p.pixel_rules[0].match.Modality: expected a pattern, a number or a list of them",
    ),
    (
        PROFILE
        + "[[profiles.p.pixel_rules]]\nmatch = { Modality = [] }\nregions = [[0, 0, 1, 1]]\n",
        "profiles.p.pixel_rules[0].match.Modality: expected a pattern, a number or a list of them",
    ),
    (
        PROFILE + "[[profiles.p.pixel_rules]]\nregions = [[0, 0, 1, 1]]\n",
        "profiles.p.pixel_rules[0].match: is required: at least one attribute to match on",
    ),
    (
        PROFILE + '[[profiles.p.pixel_rules]]\nmatch = { Modality = "US" }\n',
        "profiles.p.pixel_rules[0].regions: is required: at least one rectangle",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nmatch = { Modality = "US" }\nregions = [[0, 0, 1]]\n',
        "profiles.p.pixel_rules[0].regions[0]: expected [left, top, width, height] as integers",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nmatch = { Modality = "US" }\nregions = [[0, 0, 0, 1]]\n',
        "profiles.p.pixel_rules[0].regions[0]: width and height must be positive",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nmatch = { Modality = "US" }\nregions = [[0, 0, 70000, 1]]\n',
        "profiles.p.pixel_rules[0].regions[0]: expected [left, top, width, height] as integers",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nname = 5\nmatch = { Modality = "US" }\nregions = [[0, 0, 1, 1]]\n',
        "profiles.p.pixel_rules[0].name: expected a string, got int",
    ),
    (
        PROFILE
        + '[[profiles.p.pixel_rules]]\nmatch = { Modality = "US" }\nregions = [[0, 0, 1, 1]]\ncolour = 1\n',
        "profiles.p.pixel_rules[0].colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("destinations = 5\n", "destinations: expected an array of tables [[destinations]], got int"),
    ("destinations = [5]\n", "destinations[0]: expected a table [[destinations]]"),
    (
        '[[destinations]]\nae_title = "D"\nhost = "h"\n',
        "destinations[0].name: is required (a string)",
    ),
    (
        '[[destinations]]\nname = "a b"\nae_title = "D"\nhost = "h"\n',
        "destinations[0].name: destination names use letters, digits, '-' and '_' only",
    ),
    (DEST + DEST, "destinations[1].name: 'd' is configured twice"),
    (
        '[[destinations]]\nname = "d"\nae_title = "D"\nhost = "a b"\n',
        "destinations[0].host: expected a host name or an IP address",
    ),
    (
        '[[destinations]]\nname = "d"\nae_title = "D"\nhost = " "\n',
        "destinations[0].host: expected a host name or an IP address",
    ),
    (
        '[[destinations]]\nname = "d"\nae_title = "D"\n',
        "destinations[0].host: is required (a string)",
    ),
    (
        '[[destinations]]\nname = "d"\nhost = "h"\n',
        "destinations[0].ae_title: is required (a string)",
    ),
    (
        DEST + 'calling_ae = ""\n',
        "destinations[0].calling_ae: expected an AE title: 1 to 16 printable characters, no backslash",
    ),
    (DEST + "port = 0\n", "destinations[0].port: expected an integer from 1 to 65535, got 0"),
    (
        DEST + "max_associations = 17\n",
        "destinations[0].max_associations: expected an integer from 1 to 16, got 17",
    ),
    (DEST + "timeout = 0\n", "destinations[0].timeout: expected a number >= 0.1, got 0.0"),
    (
        DEST + "idle_release = -1\n",
        "destinations[0].idle_release: expected a number >= 0.0, got -1.0",
    ),
    (
        DEST + 'accept_warnings = "yes"\n',
        "destinations[0].accept_warnings: expected true or false, got str",
    ),
    (
        DEST + "colour = 1\n",
        "destinations[0].colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (
        DEST + "[destinations.retry]\ndelay = 10\nmax_delay = 5\n",
        "destinations[0].retry.max_delay: must be at least delay (10 s)",
    ),
    (
        DEST + "[destinations.retry]\nmultiplier = 0.5\n",
        "destinations[0].retry.multiplier: expected a number >= 1.0, got 0.5",
    ),
    (
        DEST + "[destinations.retry]\ndelay = 0\n",
        "destinations[0].retry.delay: expected a number >= 0.01, got 0.0",
    ),
    (
        DEST + "[destinations.retry]\nmax_retries = 0\n",
        "destinations[0].retry.max_retries: expected an integer from 1 to 1000, got 0",
    ),
    (
        DEST + "[destinations.retry]\ncolour = 1\n",
        "destinations[0].retry.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (DEST + "retry = 5\n", "destinations[0].retry: expected a table, got int"),
    (
        DEST + '[destinations.tls]\ncertificate = "c"\n',
        "destinations[0].tls.key: certificate and key go together: give both or neither",
    ),
    (
        DEST + '[destinations.tls]\nkey = "k"\n',
        "destinations[0].tls.key: certificate and key go together: give both or neither",
    ),
    (
        DEST + "[destinations.tls]\nserver_name = 5\n",
        "destinations[0].tls.server_name: expected a string, got int",
    ),
    (
        DEST + "[destinations.tls]\ncolour = 1\n",
        "destinations[0].tls.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    (
        '[web]\nhost = "example.org"\n',
        "web.host: expected an IP address to bind, such as 127.0.0.1",
    ),
    ("[web]\nport = 65536\n", "web.port: expected an integer from 0 to 65535, got 65536"),
    ("[web]\nsession_hours = 0\n", "web.session_hours: expected a number >= 0.01, got 0.0"),
    (
        "[web]\nmax_upload_bytes = 1\n",
        "web.max_upload_bytes: expected an integer from 1024 to 1125899906842624, got 1",
    ),
    ("[web]\nmax_files = 0\n", "web.max_files: expected an integer from 1 to 10000000, got 0"),
    (
        '[web]\ntrusted_proxies = ["x"]\n',
        "web.trusted_proxies[0]: 'x' is not an IP address or CIDR like 10.0.0.0/8",
    ),
    (
        "[web]\ncolour = 1\n",
        "web.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ('[web.tls]\ncertificate = "c"\n', "web.tls.key: is required (a string)"),
    ('[web.tls]\nkey = "k"\n', "web.tls.certificate: is required (a string)"),
    (
        '[web.tls]\ncertificate = "c"\nkey = "k"\ncolour = 1\n',
        "web.tls.colour: unknown key (check the spelling; see README 'Configuration')",
    ),
    ("web = 5\n", "web: expected a table, got int"),
    (
        "[node]\nport = 11112\n[metrics]\nport = 11112\n",
        "metrics.port: 11112 is node.port too: metrics need a port of their own",
    ),
    (
        "[web]\nport = 9000\n[metrics]\nport = 9000\n",
        "metrics.port: 9000 is web.port too: metrics need a port of their own",
    ),
    (
        "[node]\nport = 11112\n[web]\nport = 11112\n",
        "web.port: 11112 is node.port too: the console needs a port of its own",
    ),
    (
        '[node]\nport = 11112\nhost = "0.0.0.0"\n[web]\nport = 11112\n',
        "web.port: 11112 is node.port too: the console needs a port of its own",
    ),
    ("colour = 1\n", "colour: unknown key (check the spelling; see README 'Configuration')"),
]


@pytest.mark.parametrize(("text", "message"), MESSAGES)
def test_each_error_names_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), base_dir=Path("/base"), source=Path("c.toml"))
    assert str(caught.value) == f"c.toml: {message}"


def test_check_config_prints_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text("[node]\nport = 70000\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {config}: node.port: expected an integer from 0 to 65535, got 70000\n"
    )


def test_an_empty_table_gets_every_default() -> None:
    raw = {
        "profiles": {"p": {"forward_to": ["d"]}},
        "destinations": [{"name": "d", "ae_title": "D", "host": "h"}],
    }
    cfg = parse_config(raw, base_dir=Path("/base"))
    assert cfg.node == NodeConfig(
        ae_title="DEID_NODE",
        host="127.0.0.1",
        port=11112,
        data_dir=Path("/base/var"),
        output_dir=None,
        max_associations=16,
        durability=Durability.OS,
        workers=0,
        receivers=0,
        max_object_bytes=4 * 1024**3,
        spool_max_bytes=20 * 1024**3,
        network_timeout=60.0,
        acse_timeout=30.0,
        dimse_timeout=120.0,
        request_timeout=5.0,
        tls=None,
    )
    assert cfg.database_url == "sqlite:////base/var/audit.db"
    assert cfg.unknown_action == "reject"
    assert cfg.web == WebConfig(
        host="127.0.0.1",
        port=8080,
        certificate=None,
        key=None,
        session_hours=8.0,
        max_upload_bytes=2 * 1024**3,
        max_files=10000,
        trusted_proxies=(),
    )
    assert cfg.profiles["p"] == ProfileConfig(
        name="p",
        options=frozenset(),
        patient_id_prefix="",
        record_linkage=False,
        burned_in_annotation=BurnedInPolicy.QUARANTINE,
        keep=(),
        remove=(),
        replace=(),
        scope="",
        trial=None,
        pixel_rules=(),
        shipped_pixel_rules=True,
        ultrasound_regions=False,
        look_at_every_image=False,
        allow_words=(),
        forward_to=("d",),
        keep_output=True,
    )
    assert cfg.destinations["d"] == DestinationConfig(
        name="d",
        ae_title="D",
        host="h",
        port=104,
        calling_ae="",
        max_associations=1,
        accept_warnings=True,
        retry=RetryConfig(delay=2.0, multiplier=2.0, max_delay=120.0, max_retries=3),
        tls=None,
        timeout=30.0,
        idle_release=5.0,
    )


def test_the_dataclass_defaults_are_the_parsed_ones() -> None:
    raw = {"profiles": {"p": {}}, "destinations": [{"name": "d", "ae_title": "D", "host": "h"}]}
    cfg = parse_config(raw, base_dir=Path("."))
    assert cfg.node == replace(NodeConfig(), data_dir=Path("var"))
    assert cfg.web == WebConfig()
    assert cfg.profiles["p"] == ProfileConfig("p")
    assert cfg.destinations["d"] == DestinationConfig("d", "D", "h", 104)
    assert DestinationConfig("d", "D", "h", 104).retry == RetryConfig()


# --------------------------------------------------------------------------------------------
# One declaration: the parser reads every declared key, the README lists every one of them


def _valid() -> dict[str, Any]:
    """A document with every required key, every table present once."""
    return {
        "node": {"tls": {"certificate": "c.pem", "key": "k.pem"}},
        "database": {},
        "sources": [{"ae_title": "A", "profile": "p"}],
        "unknown_sources": {},
        "profiles": {
            "p": {
                "forward_to": ["d"],
                "trial": {"sponsor": "S", "protocol_id": "P"},
                "pixel_rules": [{"match": {"Modality": "US"}, "regions": [[0, 0, 1, 1]]}],
            }
        },
        "destinations": [
            {"name": "d", "ae_title": "D", "host": "h", "retry": {}, "tls": {}},
        ],
        "web": {"tls": {"certificate": "c.pem", "key": "k.pem"}},
        "metrics": {},
    }


# Where each declared table sits in that document.
PLACES: dict[str, tuple[str | int, ...]] = {
    "node": ("node",),
    "node.tls": ("node", "tls"),
    "database": ("database",),
    "sources": ("sources", 0),
    "unknown_sources": ("unknown_sources",),
    "profiles.NAME": ("profiles", "p"),
    "profiles.NAME.trial": ("profiles", "p", "trial"),
    "profiles.NAME.pixel_rules": ("profiles", "p", "pixel_rules", 0),
    "destinations": ("destinations", 0),
    "destinations.retry": ("destinations", 0, "retry"),
    "destinations.tls": ("destinations", 0, "tls"),
    "web": ("web",),
    "web.tls": ("web", "tls"),
    "metrics": ("metrics",),
}


def test_every_declared_table_has_a_place() -> None:
    assert set(PLACES) == set(TABLES)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.dotted)
def test_the_parser_reads_every_declared_key(key: Key) -> None:
    document = _valid()
    table: Any = document
    spelled = ""
    for step in PLACES[key.table]:
        table = table[step]
        spelled += f"[{step}]" if isinstance(step, int) else f".{step}" if spelled else step
    table[key.name] = date(1979, 5, 27)  # no kind takes a date
    with pytest.raises(ConfigError) as caught:
        parse_config(document, base_dir=Path("/base"), source=Path("c.toml"))
    message = str(caught.value)
    assert message.startswith(f"c.toml: {spelled}.{key.name}: expected "), message
    assert message.endswith("got date"), message


def test_the_valid_document_is_valid() -> None:
    parse_config(_valid(), base_dir=Path("/base"))


def test_the_readme_tables_are_the_declared_keys() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert with_readme_tables(readme) == readme, "run scripts/config_table.py --write"
    documented = re.findall(r"^\| `([a-z_.A-Z]+)` \| ", readme, flags=re.M)
    assert sorted(k for k in documented if "." in k) == sorted(k.dotted for k in KEYS)
