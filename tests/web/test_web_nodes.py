"""One console over several nodes: two nodes on one PostgreSQL database with one key and
shared output each receive half of a study; the console shows it as one study."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deid_node.config import Config, load_config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.web.app import create_app
from tests.support.node import console_user, node_table
from tests.support.scu import store

PASSWORD = "correct horse battery"


def log_in(client: TestClient) -> int:
    page = client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    data = {"username": "alice", "password": PASSWORD, "csrf": match.group(1)}
    return client.post("/login", data=data, follow_redirects=False).status_code


def node_config(tmp_path: Path, name: str, url: str) -> Config:
    folder = tmp_path / name
    folder.mkdir()
    table = node_table().replace(
        "[node]\n",
        f'[node]\nname = "{name}"\noutput_dir = "{tmp_path / "shared-output"}"\n'
        "output_shared = true\n",
    )
    text = (
        table
        + f"""
[database]
url = "{url}"

[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
"""
    )
    (folder / "deid-node.toml").write_text(text, encoding="utf-8")
    return load_config(folder / "deid-node.toml")


def test_a_study_through_two_nodes_is_one_study_in_the_console(
    postgres_url: str,
    tmp_path: Path,
    start_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEID_NODE_SECRET", "6b" * 32)  # one key for every node
    gw1, gw2 = (node_config(tmp_path, name, postgres_url) for name in ("gw-1", "gw-2"))
    patient = SyntheticPatient.make(PhiTokens(), seed=31)
    slices = ct_series(6, patient=patient, rows=16, cols=16, seed=31)
    nodes = [start_node(gw1), start_node(gw2)]
    assert store(nodes[0].address, slices[:3], "CT_SCANNER") == [0] * 3
    assert store(nodes[1].address, slices[3:], "CT_SCANNER") == [0] * 3
    assert all(node.wait_idle(60) for node in nodes)
    console_user(gw1, "alice", PASSWORD)

    with TestClient(create_app(gw1), base_url="http://127.0.0.1") as client:
        assert log_in(client) == 303
        [study] = client.get("/api/studies").json()
        assert (study["instances"], study["node"]) == (6, "gw-1,gw-2")
        [series] = client.get(f"/api/studies/{study['pseudo_study_uid']}/series").json()
        instances = client.get(f"/api/series/{series['pseudo_series_uid']}/instances").json()
        assert len(instances) == 6
        by_gw2 = client.get("/api/objects?node=gw-2").json()["items"]
        assert len(by_gw2) == 3 and {o["node"] for o in by_gw2} == {"gw-2"}
        sop = by_gw2[0]["pseudo_sop_uid"]
        assert client.get(f"/api/instances/{sop}/header").status_code == 200
        page = client.get("/studies")
        assert page.status_code == 200 and "gw-1,gw-2" in page.text
        audit = client.get("/audit?node=gw-1")
        assert audit.status_code == 200 and audit.text.count("<td>gw-1</td>") == 3
        assert "<td>gw-2</td>" not in audit.text
