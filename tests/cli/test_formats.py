"""Every listing prints as a table, CSV or JSON (`--format`), the older --json / --csv
flags kept as its aliases; the three say the same."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from deid_node.cli.app import app
from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.node import CT_SOURCE, IDLE, console_user, node_table
from tests.support.paths import REPO
from tests.support.scu import store

ROOT = REPO
SHIPPED = str(ROOT / "config" / "deid-node.toml")


def _ok(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.stdout


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_profiles_list_in_three_formats() -> None:
    rows = json.loads(_ok("profiles", "list", "-c", SHIPPED, "--format", "json"))
    assert [r["profile"] for r in rows] == ["research", "trial"]
    assert rows[0]["used_by"] == ["CT_SCANNER"] and rows[0]["linkage"] is False
    as_csv = _csv(_ok("profiles", "list", "-c", SHIPPED, "--format", "csv"))
    assert [r["profile"] for r in as_csv] == ["research", "trial"]
    assert as_csv[0]["options"] == "\\".join(rows[0]["options"])  # as DICOM joins values
    assert "research" in _ok("profiles", "list", "-c", SHIPPED)


def test_profiles_show_csv_flag_is_the_csv_format() -> None:
    old = _ok("profiles", "show", "research", "-c", SHIPPED, "--csv")
    assert old == _ok("profiles", "show", "research", "-c", SHIPPED, "-f", "csv")
    rows = json.loads(_ok("profiles", "show", "research", "-c", SHIPPED, "-f", "json"))
    assert [r["tag"] for r in rows] == [r["tag"] for r in _csv(old)]


def test_flags_that_disagree_are_one_error_line() -> None:
    done = CliRunner().invoke(
        app, ["profiles", "show", "research", "-c", SHIPPED, "--csv", "--format", "json"]
    )
    assert done.exit_code == 1
    assert done.stderr == "Error: --csv and --format json disagree\n"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_users_quarantine_and_forward_listings(
    write_config: Callable[[str], Config], fmt: str
) -> None:
    cfg = write_config(
        '[database]\nurl = "sqlite:///audit.db"\n'
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 11112\n'
    )
    console_user(cfg, "alice", "a long enough password")
    config = ["-c", str(cfg.path)]

    def read(*args: str) -> list[dict[str, object]]:
        text = _ok(*args, *config, "--format", fmt)
        return json.loads(text) if fmt == "json" else list(_csv(text))  # type: ignore[arg-type]

    assert [u["user"] for u in read("users", "list")] == ["alice"]
    assert read("quarantine", "list") == []
    if fmt == "csv":  # a header, also with no row
        assert _ok("quarantine", "list", *config, "-f", "csv").startswith("id,received_at,")
    [pacs] = read("forward", "status")
    assert pacs["destination"] == "pacs" and str(pacs["pending"]) == "0"
    if fmt == "json":  # the older flag is the same output
        assert json.loads(_ok("forward", "status", *config, "--json")) == [pacs]


def test_audit_views_in_three_formats_and_uids_that_fit(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + CT_SOURCE)
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), seed=8)
    assert (
        store(node.address, ct_series(3, patient=patient, rows=16, cols=16), "CT_SCANNER")
        == [0] * 3
    )
    assert node.wait_idle(IDLE)
    config = ["-c", str(cfg.path)]
    for view in ("studies", "objects", "associations", "forwards"):
        as_json = json.loads(_ok("audit", view, *config, "-f", "json"))
        assert as_json == json.loads(_ok("audit", view, *config, "--json")), view
        as_csv = _csv(_ok("audit", view, *config, "-f", "csv"))
        assert len(as_csv) == len(as_json), view
        if as_json:
            assert list(as_csv[0]) == list(as_json[0]), view  # the same fields, in order
    [study] = json.loads(_ok("audit", "studies", *config, "-f", "json"))
    uid = str(study["pseudo_study_uid"])
    assert len(uid) > 30
    short = _ok("audit", "studies", *config)
    assert uid not in short and f"{uid[:10]}…{uid[-8:]}" in short  # fits a terminal
    assert uid in " ".join(_ok("audit", "studies", *config, "--full").split())
    assert CliRunner().invoke(app, ["audit", "objects", *config, "--csv"]).exit_code != 0
