"""`deid-node quarantine list / retry / purge` on objects a real node quarantined."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.cli.app import app
from deid_node.config import Config
from deid_node.deid.pseudonym import date_offset_days
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    secondary_capture,
    us_multiframe,
)
from tests.support.files import files_under
from tests.support.node import audit_objects, node_table
from tests.support.scu import store

runner = CliRunner()

US_AE = "US_CART"
SC_AE = "SC[/]WS"  # a legal AE title that is also rich markup: tables must print it verbatim
SOURCES = """
[[sources]]
ae_title = "US_CART"
profile = "{us_profile}"

[[sources]]
ae_title = "SC[/]WS"
profile = "research"

[[sources]]
ae_title = "CT_SCANNER"
profile = "research"
"""
US_PROFILE = """
[profiles.us]
burned_in_annotation = "{policy}"
"""
RESEARCH_PROFILE = """
[profiles.research]
record_linkage = true
options = ["retain-longitudinal-modified-dates"]
burned_in_annotation = "{policy}"
"""


def config_text(policy: str = "quarantine", *, drop_us: bool = False) -> str:
    """The test config; drop_us removes profile "us" (its source moves to research)."""
    text = node_table() + SOURCES.format(us_profile="research" if drop_us else "us")
    if not drop_us:
        text += US_PROFILE.format(policy=policy)
    return text + RESEARCH_PROFILE.format(policy=policy)


@dataclass
class Held:
    """A node that quarantined three burned-in objects (and stored a CT series)."""

    cfg: Config
    config: Path
    write: Callable[[str], Config]
    us: Dataset  # sent twice by US_CART -> us: two quarantined rows
    sc: Dataset  # sent once by SC[/]WS -> research (record_linkage)
    ct: list[Dataset]  # CT_SCANNER -> research: stored, never in the quarantine
    patient: SyntheticPatient

    def rows(self) -> list[dict[str, object]]:
        """Audit rows of the quarantined objects, by id."""
        return audit_objects(self.cfg, status="quarantined")

    def ids(self, calling_ae: str) -> list[int]:
        return [int(str(r["id"])) for r in self.rows() if r["calling_ae"] == calling_ae]

    def row(self, object_id: int) -> dict[str, object]:
        with open_audit(self.cfg.database_url) as db:
            row = db.get_object(object_id)
        assert row is not None
        return row

    def held_files(self) -> list[Path]:
        return files_under(self.cfg.node.quarantine, "*.dcm")


@pytest.fixture
def held(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> Held:
    cfg = write_config(config_text())
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=3)
    us = us_multiframe(patient, burned_in="YES", frames=1, rows=16, cols=16)
    sc = secondary_capture(patient, burned_in="YES", rows=16, cols=16)
    ct = ct_series(2, patient=patient, rows=16, cols=16, seed=4)
    node = start_node(cfg)
    assert store(node.address, [us, us], US_AE) == [0, 0]
    assert store(node.address, [sc], SC_AE) == [0]
    assert store(node.address, ct, "CT_SCANNER") == [0, 0]
    assert node.wait_idle(60)
    result = Held(cfg, tmp_path / "deid-node.toml", write_config, us, sc, ct, patient)
    assert len(result.rows()) == 3 and len(result.held_files()) == 3
    return result


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def quarantine(held: Held, *args: str) -> tuple[int, str, str]:
    return run("quarantine", *args, "--config", str(held.config))


def listed(held: Held) -> list[dict[str, object]]:
    code, out, err = quarantine(held, "list", "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert isinstance(entries, list)
    return entries


def assert_no_phi_or_paths(held: Held, text: str) -> None:
    """Nothing identifying and no quarantine file name in what the command printed."""
    originals = [held.patient.patient_id, held.patient.family, held.patient.name]
    for ds in [held.us, held.sc, *held.ct]:
        originals += [str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    for value in originals:
        assert value not in text
    assert str(held.cfg.node.quarantine) not in text and "quarantine/" not in text
    for path in held.held_files():
        assert path.stem not in text


def stamp(value: object) -> str:
    assert isinstance(value, datetime)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# list


def test_list_table_has_a_line_per_held_object(held: Held) -> None:
    code, out, err = quarantine(held, "list")
    assert code == 0, err
    assert "Traceback" not in out + err
    rows = held.rows()
    lines = [ln for ln in out.splitlines() if "burned-in annotation" in ln]
    assert len(lines) == len(rows) == 3
    for row, line in zip(rows, lines, strict=True):  # oldest (lowest id) first
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells[:4] == [
            str(row["id"]),
            stamp(row["received_at"]),
            row["calling_ae"],
            row["profile"],
        ]
        assert str(row["reason"]).startswith(cells[4])
    assert SC_AE in out  # printed as text, not parsed as markup
    assert "CT_SCANNER" not in out  # stored objects are not in the quarantine
    assert_no_phi_or_paths(held, out + err)


def test_list_json_has_the_fields_of_each_held_object(held: Held) -> None:
    entries = listed(held)
    rows = held.rows()
    assert [e["id"] for e in entries] == [r["id"] for r in rows]
    for entry, row in zip(entries, rows, strict=True):
        assert set(entry) == {"id", "received_at", "calling_ae", "profile", "reason"}
        received = datetime.fromisoformat(str(entry["received_at"]))
        assert received == row["received_at"] and str(entry["received_at"]).endswith("Z")
        assert (entry["calling_ae"], entry["profile"]) in {(US_AE, "us"), (SC_AE, "research")}
        assert entry["reason"] == row["reason"]
        assert str(entry["reason"]).startswith("burned-in annotation:")
    code, out, err = quarantine(held, "list", "--json")
    assert code == 0
    assert_no_phi_or_paths(held, out + err)


def test_list_of_an_empty_quarantine_says_so(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    cfg = write_config(config_text())
    node = start_node(cfg)
    ct = ct_series(1, patient=SyntheticPatient.make(PhiTokens()), rows=16, cols=16)
    assert store(node.address, ct, "CT_SCANNER") == [0]
    assert node.wait_idle(60)
    config = str(tmp_path / "deid-node.toml")
    code, out, err = run("quarantine", "list", "--config", config)
    assert (code, out.strip(), err) == (0, "no quarantined objects", "")
    code, out, _ = run("quarantine", "list", "--config", config, "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("quarantine", "retry", "--all", "--config", config)
    assert (code, out.strip()) == (0, "no quarantined objects")


def test_markup_like_ae_titles_print_verbatim_in_audit_tables(held: Held) -> None:
    code, out, err = run("audit", "--config", str(held.config), "--objects")
    assert code == 0, err
    assert SC_AE in out
    code, out, err = run("profiles", "list", "--config", str(held.config))
    assert code == 0, err
    assert SC_AE in out


# --------------------------------------------------------------------------------------------
# retry


def test_retry_one_id_before_and_after_the_profile_fix(held: Held) -> None:
    [sc_id] = held.ids(SC_AE)
    before = held.row(sc_id)

    code, out, err = quarantine(held, "retry", str(sc_id))  # policy unchanged
    assert code == 1, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{sc_id}: still quarantined: burned-in annotation:")
    assert lines[-1] == "1 retried: 0 stored, 0 duplicate, 1 still quarantined"
    after = held.row(sc_id)
    assert after["status"] == "quarantined" and after["quarantine_path"]
    assert Path(str(after["quarantine_path"])).is_file()
    assert after["processed_at"] > before["processed_at"]  # type: ignore[operator]

    held.write(config_text("allow"))
    code, out, err = quarantine(held, "retry", str(sc_id))
    assert code == 0, err
    assert out.strip().splitlines() == [
        f"{sc_id}: stored",
        "1 retried: 1 stored, 0 duplicate, 0 still quarantined",
    ]
    assert_no_phi_or_paths(held, out + err)
    row = held.row(sc_id)
    assert row["status"] == "stored" and row["quarantine_path"] is None
    assert str(row["reason"]).startswith("retried from quarantine (burned-in annotation:")
    assert row["pseudo_sop_uid"] and Path(str(row["output_path"])).is_file()
    assert not Path(str(before["quarantine_path"])).exists()
    assert [e["id"] for e in listed(held)] == held.ids(US_AE)  # the others stay
    assert len(held.held_files()) == 2


def test_a_failed_retry_records_its_new_reason_in_the_sidecar_too(held: Held) -> None:
    [sc_id] = held.ids(SC_AE)
    path = Path(str(held.row(sc_id)["quarantine_path"]))
    old = json.loads(path.with_suffix(".json").read_text())["reason"]
    held.write(config_text("clean"))  # its pixels may be cleaned now, but they are cut short
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert quarantine(held, "retry", str(sc_id))[0] == 1
    new = held.row(sc_id)["reason"]
    assert new != old and "truncated" in str(new)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["reason"] == new
    assert sidecar["calling_ae"] == SC_AE  # the rest of the sidecar is kept


def test_retry_records_linkage_for_profiles_that_keep_it(held: Held) -> None:
    [sc_id] = held.ids(SC_AE)
    held.write(config_text("allow"))
    assert quarantine(held, "retry", str(sc_id))[0] == 0
    code, out, err = run("export-csv", "--config", str(held.config), "--linkage")
    assert code == 0, err
    rows = [r for r in csv.DictReader(io.StringIO(out, newline="")) if r["object_id"] == str(sc_id)]
    assert len(rows) == 1
    assert rows[0]["original_sop_uid"] == str(held.sc.SOPInstanceUID)
    assert rows[0]["pseudo_sop_uid"] == held.row(sc_id)["pseudo_sop_uid"]
    assert rows[0]["original_accession_number"] == str(held.sc.AccessionNumber)
    key = held.cfg.node.secret_path.read_bytes()
    days = date_offset_days(key, "research", "id:" + held.patient.patient_id)
    assert rows[0]["date_shift_days"] == str(days)


def test_retry_all_stores_then_finds_duplicates(held: Held) -> None:
    first, second = held.ids(US_AE)  # the same object, received twice
    [sc_id] = held.ids(SC_AE)
    held.write(config_text("allow"))
    code, out, err = quarantine(held, "retry", "--all")
    assert code == 0, err
    assert out.strip().splitlines() == [
        f"{n}: {what}"
        for n, what in sorted({first: "stored", second: "duplicate", sc_id: "stored"}.items())
    ] + ["3 retried: 2 stored, 1 duplicate, 0 still quarantined"]
    assert listed(held) == [] and held.held_files() == []
    assert [held.row(i)["status"] for i in (first, second, sc_id)] == [
        "stored",
        "duplicate",
        "stored",
    ]
    assert held.row(first)["output_path"] == held.row(second)["output_path"]
    code, out, _ = quarantine(held, "retry", "--all")
    assert (code, out.strip()) == (0, "no quarantined objects")


def test_retry_goes_on_past_objects_whose_profile_is_gone(held: Held) -> None:
    us_ids = held.ids(US_AE)
    [sc_id] = held.ids(SC_AE)
    held.write(config_text("allow", drop_us=True))
    code, out, err = quarantine(held, "retry", "--all")
    assert code == 1, err
    lines = out.strip().splitlines()
    for object_id in us_ids:
        assert (
            f"{object_id}: still quarantined: not retried: profile 'us' is no longer configured"
            in lines
        )
    assert f"{sc_id}: stored" in lines
    assert lines[-1] == "3 retried: 1 stored, 0 duplicate, 2 still quarantined"
    assert [e["id"] for e in listed(held)] == us_ids


# --------------------------------------------------------------------------------------------
# purge


def test_purge_by_id(held: Held) -> None:
    first, _ = held.ids(US_AE)
    path = Path(str(held.row(first)["quarantine_path"]))
    code, out, err = quarantine(held, "purge", str(first))
    assert (code, out.strip(), err) == (0, "1 quarantined object(s) purged", "")
    assert not path.exists() and not path.with_suffix(".json").exists()
    row = held.row(first)
    assert row["status"] == "quarantined" and row["quarantine_path"] is None  # history stays
    assert str(row["reason"]).startswith("purged from quarantine (burned-in annotation:")
    assert first not in [e["id"] for e in listed(held)] and len(held.held_files()) == 2

    code, out, err = quarantine(held, "purge", str(first))  # already purged
    assert code == 1 and out == ""
    assert err.strip() == (
        f"Error: no quarantined object with id {first} (see: deid-node quarantine list)"
    )
    assert quarantine(held, "retry", str(first))[0] == 1


def test_purge_older_than_days(held: Held) -> None:
    old, recent = held.ids(US_AE)
    [sc_id] = held.ids(SC_AE)
    with open_audit(held.cfg.database_url) as db:  # as if received 40 days ago
        db.update_object(old, received_at=datetime.now(UTC) - timedelta(days=40))
    code, out, err = quarantine(held, "purge", "--older-than", "30")
    assert (code, out.strip()) == (0, "1 quarantined object(s) purged"), err
    assert [e["id"] for e in listed(held)] == sorted([recent, sc_id])  # by id: workers race
    code, out, _ = quarantine(held, "purge", "--older-than", "1")
    assert (code, out.strip()) == (0, "0 quarantined object(s) purged")
    assert len(held.held_files()) == 2
    code, out, _ = quarantine(held, "purge", "--older-than", "0")
    assert (code, out.strip()) == (0, "2 quarantined object(s) purged")
    assert listed(held) == [] and held.held_files() == []


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge"], "say which objects to purge: IDs, or --older-than DAYS"),
        (["purge", "{us}", "--older-than", "3"], "say which objects to purge"),
        (["purge", "{us}", "999999"], "no quarantined object with id 999999"),
        (["purge", "12x"], "invalid id '12x': expected a positive number"),
        (["purge", "0"], "invalid id '0'"),
        (["retry"], "say which objects to retry: IDs, or --all"),
        (["retry", "{us}", "--all"], "say which objects to retry"),
        (["retry", "{us}", "999999"], "no quarantined object with id 999999"),
        (["retry", "first"], "invalid id 'first'"),
    ],
)
def test_bad_arguments_are_one_error_line_and_change_nothing(
    held: Held, args: list[str], message: str
) -> None:
    us_id = str(held.ids(US_AE)[0])
    before = listed(held)
    code, out, err = quarantine(held, *(a.replace("{us}", us_id) for a in args))
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert listed(held) == before and len(held.held_files()) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["retry", "--all"],
        ["retry", "1"],
        ["purge", "1"],
        ["purge", "--older-than", "1"],
    ],
)
def test_missing_database_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text(config_text(), encoding="utf-8")
    code, out, err = run("quarantine", *args, "--config", str(config))
    assert code == 1 and out == ""
    assert err.startswith("Error: audit database ") and "not found" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "var" / "audit.db").exists()  # reading never creates it


def test_burned_in_objects_are_released_by_retry_once_the_profile_cleans(held: Held) -> None:
    ids = held.ids(US_AE)
    held.write(config_text("clean"))
    code, out, err = quarantine(held, "retry", *map(str, ids))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "2 retried: 1 stored, 1 duplicate, 0 still quarantined"
    assert_no_phi_or_paths(held, out + err)
    for object_id in ids:
        row = held.row(object_id)
        assert row["status"] in ("stored", "duplicate") and row["quarantine_path"] is None
        assert str(row["pixels"]).startswith(("checked: ", "cleaned: "))
        written = pydicom.dcmread(str(row["output_path"]))
        assert written.BurnedInAnnotation == "NO" and written.PatientIdentityRemoved == "YES"
