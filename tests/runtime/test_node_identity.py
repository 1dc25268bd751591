"""Node identity: `[node] name` on every association, object and forward row; `audit`,
`export-csv` and the console show it and filter by it."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from deid_node.cli.app import app
from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.runtime.recorder import NODE_ID_FILE, node_identity
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.node import audit_associations, audit_objects, node_table
from tests.support.scu import associate, store

runner = CliRunner()

SOURCES = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
forward_to = ["pacs"]

[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 9
"""


def named(name: str) -> str:
    return node_table().replace("[node]\n", f'[node]\nname = "{name}"\n') + SOURCES


def test_the_name_defaults_to_the_host_name(
    write_config: Callable[[str], Config], tmp_path: Path
) -> None:
    assert write_config(node_table()).node.name == socket.gethostname()[:64]
    assert write_config(named("gw-1")).node.name == "gw-1"
    checked = runner.invoke(app, ["check-config", "--config", str(tmp_path / "deid-node.toml")])
    assert checked.exit_code == 0 and "node gw-1, AE title DEID_NODE" in checked.stdout
    (tmp_path / "deid-node.toml").write_text(named(" "), encoding="utf-8")
    refused = runner.invoke(app, ["check-config", "--config", str(tmp_path / "deid-node.toml")])
    assert refused.exit_code == 1 and "node.name: expected a name for this node" in refused.stderr


def test_a_renamed_data_dir_still_knows_the_name_it_ran_as(tmp_path: Path) -> None:
    (tmp_path / NODE_ID_FILE).write_text("3f2a9c0d1e4b5a68\n", encoding="ascii")  # before v9
    assert node_identity(tmp_path, "gw-1") == ("gw-1", "3f2a9c0d1e4b5a68")
    assert node_identity(tmp_path, "gw-1") == ("gw-1",)
    assert node_identity(tmp_path, "gw-2") == ("gw-2", "gw-1")
    assert (tmp_path / NODE_ID_FILE).read_text(encoding="utf-8") == "gw-2\n"


def test_every_row_names_the_node_and_audit_filters_by_it(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    cfg = write_config(named("gw-a"))
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), seed=5)
    ct = ct_series(2, patient=patient, rows=8, cols=8)
    assert store(node.address, ct, "CT_SCANNER") == [0, 0]
    assert associate(node.address, "STRANGER").is_rejected
    assert node.wait_idle(60)

    objects = audit_objects(cfg)
    assert [o["node"] for o in objects] == ["gw-a", "gw-a"]
    assert {a["node"] for a in audit_associations(cfg)} == {"gw-a"}
    assert audit_objects(cfg, node="gw-b") == []

    config = str(tmp_path / "deid-node.toml")

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, "--config", config])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    forwards = json.loads(run("audit", "forwards", "--json"))
    assert [f["node"] for f in forwards] == ["gw-a", "gw-a"]
    assert [s["node"] for s in json.loads(run("audit", "studies", "--json"))] == ["gw-a"]
    assert len(json.loads(run("audit", "objects", "--json", "--node", "gw-a"))) == 2
    assert json.loads(run("audit", "objects", "--json", "--node", "gw-b")) == []
    assert json.loads(run("audit", "studies", "--json", "--node", "gw-b")) == []
    both = json.loads(run("audit", "associations", "--json", "--node", "gw-a"))
    assert {a["outcome"] for a in both} == {"released", "rejected"}
    assert "gw-a" in run("audit", "objects")
    rows = list(csv.DictReader(io.StringIO(run("export-csv", "--node", "gw-a"))))
    assert [r["node"] for r in rows] == ["gw-a", "gw-a"]
    assert list(csv.DictReader(io.StringIO(run("export-csv", "--node", "gw-b")))) == []
