"""The README's session, run as written (on a free port, state in tmp_path): its figures hold."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from deid_node.testing.loopback import deid_node_command, free_port
from tests.support.paths import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def session_script() -> str:
    """The first ```sh block of the README's "Running the node" section."""
    section = README[README.index("## Running the node") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```", start)]


def figure(pattern: str) -> int:
    """A number the README states, found by a regex with one group."""
    found = re.search(pattern, README, flags=re.S)
    assert found, f"the README no longer says {pattern!r}"
    return int(found.group(1))


@pytest.mark.slow
@pytest.mark.usefixtures("dcmtk")
def test_the_readme_session_gives_the_readme_figures(tmp_path: Path) -> None:
    port = free_port()
    shipped = (REPO / "config" / "deid-node.toml").read_text(encoding="utf-8")
    config = tmp_path / "deid-node.toml"
    config.write_text(
        shipped.replace('"../var"', '"var"')
        .replace("sqlite:///../var/", "sqlite:///var/")
        .replace("port = 11112", f"port = {port}"),
        encoding="utf-8",
    )
    script = session_script().replace("11112", str(port))
    script = script.replace("audit.csv", str(tmp_path / "audit.csv"))
    # In a terminal the node's log and storescu's share the screen; here they would share
    # one pipe, and lines written at the same moment can split each other's: keep apart.
    node_log = tmp_path / "node.log"
    assert "./scripts/serve &" in script
    script = script.replace("./scripts/serve &", f"./scripts/serve >{node_log} 2>&1 &")
    env = dict(os.environ, DEID_NODE_CONFIG=str(config))
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = (tmp_path / "audit.csv").read_bytes()

    audit = subprocess.run(
        [*deid_node_command(), "audit", "--objects", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    statuses = Counter(row["status"] for row in json.loads(audit.stdout))
    assert sum(statuses.values()) == figure(r"What arrives \((\d+) objects\)")
    assert statuses["stored"] == figure(r"counts (\d+) stored")
    assert statuses["duplicate"] == figure(r"stored, (\d+) duplicate")
    assert statuses["quarantined"] == figure(r"and (\d+)\s+quarantined: the profile")
    assert statuses["rejected"] == 0
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("E: Store Failed")]
    assert len(failed) == figure(r"storescu reports (\d+) files"), "\n".join(failed)
    assert f"{sum(statuses.values())} row(s) written" in proc.stderr
    assert exported.count(b"\r\n") == sum(statuses.values()) + 1  # and a header
    assert "released" in proc.stdout  # the associations table


def test_no_merge_conflict_is_left_in_any_text() -> None:
    # A merge once left its markers in the README; docs and code alike are checked.
    root = REPO
    texts = [root / "README.md", *root.glob("deid_node/**/*.py"), *root.glob("tests/**/*.py")]
    marked = [
        str(p.relative_to(root))
        for p in texts
        if any(
            line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="
            for line in p.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert marked == []
