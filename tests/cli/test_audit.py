"""`deid-node audit` and `deid-node export-csv` on an audit database a real node filled."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import _config
from typer.testing import CliRunner

from deid_node.audit.schema import LINKAGE_COLUMNS, OBJECT_COLUMNS
from deid_node.cli.app import app
from deid_node.config import Config, load_config
from deid_node.deid.pseudonym import date_offset_days, pseudo_uid
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    us_multiframe,
    write_bad_files,
)
from tests.support.node import node_table
from tests.support.scu import associate, store

runner = CliRunner()

CONFIG = (
    node_table()
    + """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[[sources]]
ae_title = "TRIAL_PACS"
profile = "trial"

[profiles.research]
record_linkage = true
options = ["retain-longitudinal-modified-dates"]

[profiles.trial]
options = ["retain-longitudinal-modified-dates"]
"""
)


@dataclass
class Sent:
    """What the module's node received, and its config."""

    cfg: Config
    config: Path
    ct: list[Dataset]  # CT_SCANNER -> research, two studies
    trial: list[Dataset]  # TRIAL_PACS -> trial
    burned: Dataset  # TRIAL_PACS -> trial, quarantined
    patient: SyntheticPatient


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    folder = tmp_path_factory.mktemp("cli-audit")
    config = folder / "deid-node.toml"
    config.write_text(CONFIG, encoding="utf-8")
    cfg = load_config(config)
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=1)
    ct = ct_series(4, patient=patient, rows=16, cols=16, seed=1) + ct_series(
        3, patient=patient, rows=16, cols=16, seed=2
    )
    other = SyntheticPatient.make(tokens, seed=2)
    trial = ct_series(3, patient=other, rows=16, cols=16, seed=3)
    burned = us_multiframe(other, burned_in="YES", frames=1, rows=16, cols=16)
    node = Node(cfg, port=0)
    node.start()
    try:
        assert store(node.address, ct, "CT_SCANNER") == [0] * 7
        assert store(node.address, [*trial, burned], "TRIAL_PACS") == [0] * 4
        truncated = write_bad_files(folder / "bad")["truncated"]
        assoc = associate(
            node.address, "TRIAL_PACS", [CTImageStorage], transfer_syntaxes=[ExplicitVRLittleEndian]
        )
        _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
        try:
            assert assoc.send_c_store(truncated).Status == 0xC210  # refused at intake
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        assert associate(node.address, "STRANGER").is_rejected  # not a configured source
        assert node.wait_idle(60)
    finally:
        node.stop(timeout=60)
    yield Sent(cfg, config, ct, trial, burned, patient)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def export(sent: Sent, *args: str) -> list[dict[str, str]]:
    code, out, err = run("export-csv", "--config", str(sent.config), *args)
    assert code == 0, err
    reader = csv.DictReader(io.StringIO(out, newline=""))
    columns = LINKAGE_COLUMNS if "--linkage" in args else OBJECT_COLUMNS
    assert tuple(reader.fieldnames or ()) == columns
    return list(reader)


def pseudo(sent: Sent, profile: str, datasets: list[Dataset]) -> set[str]:
    key = sent.cfg.node.secret_path.read_bytes()
    return {pseudo_uid(key, profile, str(ds.SOPInstanceUID)) for ds in datasets}


# --------------------------------------------------------------------------------------------
# export-csv


def test_export_csv_has_a_row_per_object_sent(sent: Sent) -> None:
    rows = export(sent)
    assert len(rows) == 12
    assert Counter((r["calling_ae"], r["profile"], r["status"]) for r in rows) == {
        ("CT_SCANNER", "research", "stored"): 7,
        ("TRIAL_PACS", "trial", "stored"): 3,
        ("TRIAL_PACS", "trial", "quarantined"): 1,
        ("TRIAL_PACS", "trial", "rejected"): 1,
    }
    stored = {r["pseudo_sop_uid"] for r in rows if r["status"] == "stored"}
    assert stored == pseudo(sent, "research", sent.ct) | pseudo(sent, "trial", sent.trial)
    quarantined = next(r for r in rows if r["status"] == "quarantined")
    assert quarantined["reason"] and Path(quarantined["quarantine_path"]).is_file()
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)


@pytest.mark.parametrize(
    ("option", "value", "column"),
    [
        ("--calling-ae", "TRIAL_PACS", "calling_ae"),
        ("--profile", "research", "profile"),
        ("--status", "quarantined", "status"),
        ("--status", "stored", "status"),
    ],
)
def test_export_csv_filters_by_column(sent: Sent, option: str, value: str, column: str) -> None:
    everything = export(sent)
    expected = [r for r in everything if r[column] == value]
    assert expected  # the filter selects something, and not everything
    assert len(expected) < len(everything)
    assert export(sent, option, value) == expected


def test_export_csv_filters_by_study_and_time(sent: Sent) -> None:
    everything = export(sent)
    # Not simply the first row: an object refused at intake has no study, and its row can
    # be written before any worker's (the receiving process audits it at once).
    study = next(r["pseudo_study_uid"] for r in everything if r["pseudo_study_uid"])
    in_study = [r for r in everything if r["pseudo_study_uid"] == study]
    assert 0 < len(in_study) < len(everything)
    assert export(sent, "--study", study) == in_study

    times = sorted({r["received_at"] for r in everything})
    middle = times[len(times) // 2]
    since = [r for r in everything if r["received_at"] >= middle]
    until = [r for r in everything if r["received_at"] < middle]
    assert since and until
    assert export(sent, "--since", middle) == since
    assert export(sent, "--until", middle) == until
    assert export(sent, "--since", times[0], "--until", middle, "--calling-ae", "CT_SCANNER") == [
        r for r in until if r["calling_ae"] == "CT_SCANNER"
    ]


def test_export_csv_to_a_file_matches_stdout(sent: Sent, tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    code, out, err = run("export-csv", "--config", str(sent.config), "--output", str(target))
    assert code == 0 and out == ""
    assert "12 row(s)" in err
    data = target.read_bytes()
    assert data.startswith(b"id,received_at,") and b"\r\n" in data  # RFC 4180 line ends
    with target.open(newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == export(sent)


def test_export_csv_linkage_warns_and_links_originals(sent: Sent, tmp_path: Path) -> None:
    target = tmp_path / "linkage.csv"
    code, _, err = run(
        "export-csv", "--config", str(sent.config), "--linkage", "--output", str(target)
    )
    assert code == 0
    assert "Warning:" in err and "PHI" in err
    assert target.stat().st_mode & 0o077 == 0  # written for the owner only
    rows = export(sent, "--linkage")
    # Only the profile with record_linkage has linkage rows.
    assert {r["profile"] for r in rows} == {"research"}
    assert {r["original_sop_uid"] for r in rows} == {str(ds.SOPInstanceUID) for ds in sent.ct}
    assert {r["original_patient_id"] for r in rows} == {sent.patient.patient_id}
    accession = {r["original_sop_uid"]: r["original_accession_number"] for r in rows}
    assert accession == {str(ds.SOPInstanceUID): str(ds.AccessionNumber) for ds in sent.ct}
    key = sent.cfg.node.secret_path.read_bytes()
    # The offset the node shifted this patient's dates by: a re-identification needs it.
    days = date_offset_days(key, "research", "id:" + sent.patient.patient_id)
    assert {r["date_shift_days"] for r in rows} == {str(days)}
    by_original = {r["original_sop_uid"]: r["pseudo_sop_uid"] for r in rows}
    assert all(pseudo_uid(key, "research", o) == p for o, p in by_original.items())
    filtered = export(sent, "--linkage", "--study", rows[0]["pseudo_study_uid"])
    assert 0 < len(filtered) < len(rows)


def test_export_csv_linkage_of_a_profile_that_never_recorded_it_is_an_error(
    sent: Sent, tmp_path: Path
) -> None:
    target = tmp_path / "linkage.csv"
    args = ["--linkage", "--profile", "trial", "--output", str(target)]
    code, out, err = run("export-csv", "--config", str(sent.config), *args)
    assert code == 1 and out == ""
    assert err.strip() == (
        "Error: profile 'trial' has record_linkage = false, so its objects have no linkage "
        "rows: set profiles.trial.record_linkage = true to record them from then on"
    )
    assert not target.exists()  # no file that looks like a (PHI) export
    code, _, err = run("export-csv", "--config", str(sent.config), "--linkage")
    assert code == 0 and "Note:" not in err  # research records linkage: nothing to explain


def test_export_csv_linkage_says_why_once_no_profile_records_it(sent: Sent, tmp_path: Path) -> None:
    # The same database, after record_linkage was turned off everywhere.
    config = tmp_path / "no-linkage.toml"
    text = CONFIG.replace("record_linkage = true", "record_linkage = false")
    config.write_text(
        text.replace('data_dir = "var"', f'data_dir = "{sent.cfg.node.data_dir}"'),
        encoding="utf-8",
    )
    code, out, err = run("export-csv", "--config", str(config), "--linkage")
    assert code == 0
    note, warning = err.strip().splitlines()
    assert note.startswith("Note: no configured profile has record_linkage = true, so no ")
    assert warning.startswith("Warning:")
    assert len(out.splitlines()) == 1 + len(sent.ct)  # the rows recorded while it was on
    code, out, err = run("export-csv", "-c", str(config), "--linkage", "--profile", "research")
    assert code == 0 and len(out.splitlines()) == 1 + len(sent.ct)
    assert err.startswith(
        "Note: profile 'research' has record_linkage = false: only rows recorded before"
    )


def test_export_csv_without_linkage_holds_no_original_identifier(sent: Sent) -> None:
    code, out, _ = run("export-csv", "--config", str(sent.config))
    assert code == 0
    for ds in [*sent.ct, *sent.trial]:
        assert str(ds.SOPInstanceUID) not in out
        assert str(ds.PatientID) not in out


# --------------------------------------------------------------------------------------------
# audit


def test_audit_json_objects_matches_the_export(sent: Sent) -> None:
    code, out, err = run("audit", "--config", str(sent.config), "--objects", "--json")
    assert code == 0, err
    objects = json.loads(out)
    exported = export(sent)  # oldest first, the audit newest first
    assert len(objects) == len(exported)
    received = [o["received_at"] for o in objects]
    assert received == sorted(received, reverse=True)
    by_id = {row["id"]: row for row in exported}
    assert set(by_id) == {str(o["id"]) for o in objects}
    for obj in objects:
        row = by_id[str(obj["id"])]
        assert set(obj) == set(OBJECT_COLUMNS)
        for column in OBJECT_COLUMNS:
            value = obj[column]
            assert ("" if value is None else str(value)) == row[column], column


def test_audit_json_studies_count_per_status(sent: Sent) -> None:
    code, out, err = run("audit", "--config", str(sent.config), "--json")
    assert code == 0, err
    studies = json.loads(out)
    exported = export(sent)

    def group(study: str | None, association: str | None) -> str:
        # Objects without a study are summarised per association.
        return study or f"association {association}"

    expected = Counter(
        (group(r["pseudo_study_uid"], r["association_id"]), r["status"]) for r in exported
    )
    assert len(studies) == len({key[0] for key in expected})
    for s in studies:
        for status in ("stored", "quarantined", "duplicate", "rejected"):
            assert (
                s[status] == expected[(group(s["pseudo_study_uid"], s["association_id"]), status)]
            )
        datetime.fromisoformat(s["first_received_at"])  # ISO 8601 text
    last = [s["last_received_at"] for s in studies]
    assert last == sorted(last, reverse=True)  # newest first
    without_study = [s for s in studies if s["pseudo_study_uid"] is None]
    assert len(without_study) == 2  # the quarantined object and the refused one
    assert len({s["association_id"] for s in without_study}) == 2
    ct_studies = [s for s in studies if s["calling_ae"] == "CT_SCANNER"]
    assert sorted(s["stored"] for s in ct_studies) == [3, 4]


def test_audit_filters_and_limit(sent: Sent) -> None:
    code, out, _ = run("audit", "--config", str(sent.config), "--objects", "--json", "--limit", "2")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = run(
        "audit", "--config", str(sent.config), "--json", "--calling-ae", "TRIAL_PACS"
    )
    assert code == 0
    assert {s["calling_ae"] for s in json.loads(out)} == {"TRIAL_PACS"}


def test_audit_objects_limit_shows_the_newest(sent: Sent) -> None:
    latest = max(export(sent), key=lambda r: r["received_at"])
    code, out, _ = run("audit", "--config", str(sent.config), "--objects", "--json", "--limit", "1")
    assert code == 0
    [newest] = json.loads(out)
    assert str(newest["id"]) == latest["id"] and newest["status"] == "rejected"  # sent last


def test_audit_associations_show_rejections_newest_first(sent: Sent) -> None:
    code, out, err = run("audit", "--config", str(sent.config), "--associations", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    assert rows[0]["calling_ae"] == "STRANGER" and rows[0]["outcome"] == "rejected"
    assert "not a configured source" in rows[0]["reason"]
    assert Counter(r["outcome"] for r in rows) == {"released": 3, "rejected": 1}
    assert sum(r["objects"] for r in rows) == 12

    code, out, _ = run(
        "audit", "--config", str(sent.config), "--associations", "--outcome", "rejected", "--json"
    )
    assert code == 0 and [r["calling_ae"] for r in json.loads(out)] == ["STRANGER"]
    code, out, _ = run(
        "audit", "--config", str(sent.config), "--associations", "--calling-ae", "TRIAL_PACS"
    )
    assert code == 0
    assert out.count("TRIAL_PACS") == 2 and "released" in out and "STRANGER" not in out


@pytest.mark.parametrize("mode", [[], ["--objects"], ["--associations"]])
def test_an_empty_result_says_so(sent: Sent, mode: list[str]) -> None:
    code, out, _ = run("audit", "--config", str(sent.config), *mode, "--calling-ae", "NOBODY")
    assert (code, out) == (0, "0 rows\n")
    code, out, _ = run(
        "audit", "--config", str(sent.config), *mode, "--calling-ae", "NOBODY", "--json"
    )
    assert (code, json.loads(out)) == (0, [])


def test_audit_tables_show_studies_and_objects(sent: Sent) -> None:
    code, out, _ = run("audit", "--config", str(sent.config))
    assert code == 0
    assert "CT_SCANNER" in out and "TRIAL_PACS" in out and "quarantined" in out
    assert out.count("- (association ") == 2  # per association, not one "-" for all
    code, out, _ = run("audit", "--config", str(sent.config), "--objects", "--status", "stored")
    assert code == 0
    assert out.count("stored") == 10 and "quarantined" not in out


# The views as subcommands, and the flag forms scripts in the field call

SAME_VIEW = [
    (["studies"], []),
    (["studies", "--calling-ae", "TRIAL_PACS", "--limit", "2"],
     ["--limit", "2", "--calling-ae", "TRIAL_PACS"]),
    (["objects"], ["--objects"]),
    (["objects", "--status", "stored", "--limit", "3"],
     ["--status", "stored", "--objects", "--limit", "3"]),
    (["associations"], ["--associations"]),
    (["associations", "--outcome", "rejected"], ["--outcome", "rejected", "--associations"]),
    (["forwards", "--calling-ae", "CT_SCANNER"], ["--calling-ae", "CT_SCANNER", "--forwards"]),
]  # fmt: skip


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["table", "json"])
@pytest.mark.parametrize(("subcommand", "flags"), SAME_VIEW)
def test_each_view_and_its_flag_form_print_the_same(
    sent: Sent, subcommand: list[str], flags: list[str], as_json: list[str]
) -> None:
    config = ["--config", str(sent.config)]
    code, out, err = run("audit", *subcommand, *config, *as_json)
    assert code == 0, err
    assert out != "0 rows\n" or subcommand[0] == "forwards"  # no destinations here
    assert run("audit", *flags, *config, *as_json) == (0, out, "")
    assert run("audit", *config, *flags, *as_json) == (0, out, "")  # options in any order


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["associations", "--status", "stored"],
         "--status does not apply to audit associations "
         "(use --since, --until, --calling-ae, --outcome or --node)"),
        (["objects", "--outcome", "rejected"], "--outcome applies to audit associations only"),
        (["studies", "--forwards"],
         "--forwards is the flag form of 'audit forwards': use it without a subcommand"),
        (["--forwards", "--objects"], "choose one of --objects, --associations and --forwards"),
        (["--outcome=rejected"], "--outcome applies to --associations only"),
    ],
)  # fmt: skip
def test_a_filter_of_another_view_is_one_error_line(
    sent: Sent, args: list[str], message: str
) -> None:
    code, out, err = run("audit", *args, "--config", str(sent.config))
    assert (code, out, err) == (1, "", f"Error: {message}\n")


def test_audit_help_lists_the_views() -> None:
    code, out, _ = run("audit", "--help")
    assert code == 0 and "Example: deid-node audit objects" in out
    for view in ("studies", "objects", "associations", "forwards"):
        assert view in out
    code, out, _ = run("audit", "--associations", "--help")
    assert code == 0 and "--outcome" in out and "--status" not in out


# --------------------------------------------------------------------------------------------
# Errors and docs


def test_export_csv_lf_ends_lines_with_lf(sent: Sent, tmp_path: Path) -> None:
    crlf, lf = tmp_path / "crlf.csv", tmp_path / "lf.csv"
    assert run("export-csv", "--config", str(sent.config), "--output", str(crlf))[0] == 0
    assert run("export-csv", "--config", str(sent.config), "--output", str(lf), "--lf")[0] == 0
    assert crlf.read_bytes().count(b"\r\n") == 13  # the header and 12 rows
    assert b"\r" not in lf.read_bytes()
    assert lf.read_bytes() == crlf.read_bytes().replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--associations", "--status", "stored"], "--status does not apply to --associations"),
        (["--associations", "--objects"], "choose one of --objects, --associations and --forwards"),
        (["--outcome", "rejected"], "--outcome applies to --associations only"),
        (["--associations", "--outcome", "lost"], "invalid outcome filter 'lost'"),
    ],
)
def test_bad_audit_options_are_one_error_line(sent: Sent, args: list[str], message: str) -> None:
    code, out, err = run("audit", "--config", str(sent.config), *args)
    assert code == 1
    assert err.startswith("Error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "invalid time 'yesterday'"),
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--status", "lost"], "invalid status filter 'lost'"),
        (["--since", "2030-01-02", "--until", "2030-01-01"], "invalid time range"),
    ],
)
@pytest.mark.parametrize("command", ["audit", "export-csv"])
def test_bad_filters_are_one_error_line(
    sent: Sent, command: str, args: list[str], message: str
) -> None:
    code, out, err = run(command, "--config", str(sent.config), *args)
    assert code == 1
    assert err.startswith("Error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


@pytest.mark.parametrize("command", ["audit", "export-csv"])
def test_missing_database_is_one_error_line(tmp_path: Path, command: str) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text(CONFIG, encoding="utf-8")
    code, _, err = run(command, "--config", str(config))
    assert code == 1
    assert err.startswith("Error: audit database ") and "not found" in err
    assert not (tmp_path / "var" / "audit.db").exists()  # reading never creates it


def _commands(typer_app: typer.Typer, prefix: str = "") -> dict[str, Callable[..., Any]]:
    """Every command of the CLI, sub-commands included: "quarantine list" -> callback."""
    found = {}
    for c in typer_app.registered_commands:
        assert c.callback is not None
        found[prefix + (c.name or c.callback.__name__.replace("_", "-"))] = c.callback
    for group in typer_app.registered_groups:
        assert group.name and group.typer_instance is not None
        found |= _commands(group.typer_instance, f"{prefix}{group.name} ")
    return found


def test_every_command_is_covered_below() -> None:
    assert set(_commands(app)) == set(COMMANDS)


COMMANDS = [
    "check-config",
    "deidentify",
    "serve",
    "audit studies",
    "audit objects",
    "audit associations",
    "audit forwards",
    "export-csv",
    "profiles list",
    "profiles show",
    "quarantine list",
    "quarantine retry",
    "quarantine purge",
    "forward status",
    "forward retry",
    "forward purge",
    "users add",
    "users list",
    "users remove",
    "users password",
    "users logout",
    "users token",
    "web",
]


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_document_an_example(name: str) -> None:
    callback = _commands(app)[name]
    assert callback.__doc__
    last = callback.__doc__.strip().splitlines()[-1].strip()
    assert last.startswith(f"Example: deid-node {name}")
    code, out, _ = run(*name.split(), "--help")
    assert code == 0 and "Example:" in out
    assert "<bool>" not in out  # flags take no value (typer 0.29 showed one)


def test_version() -> None:
    from deid_node import __version__

    code, out, _ = run("--version")
    assert code == 0
    assert out.startswith(f"deid-node {__version__} (pydicom 3.") and "pynetdicom 3." in out
