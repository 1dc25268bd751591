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
from tests.support.node import console_user
from tests.support.paths import REPO

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
