"""scripts/cluster: two nodes behind HAProxy; one killed -9 mid-stream loses nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters
from deid_node.database_url import sqlite_url
from deid_node.deid.pseudonym import pseudo_uid
from deid_node.testing.loopback import free_port
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, write_files
from tests.support.dcmtk import STORESCU
from tests.support.paths import REPO
from tests.support.waiting import wait_for

ROOT = REPO
CLUSTER = ROOT / "scripts" / "cluster.py"
HAPROXY = Path("/usr/sbin/haproxy")
STREAMS = 4
PER_STREAM = 40
BOUND = 180.0  # seconds: generous, reached only when something is broken

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def _postgres_missing() -> str | None:
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (the postgres extra)"
    if not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "Debian's PostgreSQL server is not installed"
    return None


def _cluster(state: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(CLUSTER), "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def _acknowledged(output: str) -> list[str]:
    """The files storescu -v saw a Success response for."""
    sending, acked = None, []
    for line in output.splitlines():
        if line.startswith("I: Sending file: "):
            sending = line.removeprefix("I: Sending file: ").strip()
        elif "Received Store Response (Success)" in line and sending is not None:
            acked.append(sending)
            sending = None
    return acked


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_a_killed_node_loses_nothing_it_acknowledged(
    dcmtk: None, tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """Four associations through HAProxy; kill -9 of one node mid-stream; restart it."""
    if database == "postgres" and (why := _postgres_missing()):
        pytest.skip(why)
    if not HAPROXY.exists():
        pytest.skip(f"{HAPROXY} not found: apt-get install haproxy (scripts/test does)")
    # PostgreSQL runs as the postgres user, who cannot enter pytest's private tmp_path.
    shared = Path(tempfile.mkdtemp(prefix="deid-cluster-"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    state = shared / "cluster"
    port = free_port()
    printed = _cluster(state, "up", "2", "--port", str(port), "--database", database)
    assert f"127.0.0.1:{port}" in printed
    try:
        nodes = json.loads((state / "cluster.json").read_text())["nodes"]
        patient = SyntheticPatient.make(PhiTokens(), seed=7)
        datasets = ct_series(STREAMS * PER_STREAM, patient=patient, rows=96, cols=96, seed=7)
        files = write_files(datasets, tmp_path / "send")
        uid_of = {str(f): str(ds.SOPInstanceUID) for f, ds in zip(files, datasets, strict=True)}
        env = {**os.environ, "TCP_NODELAY": "1"}
        senders = [
            subprocess.Popen(
                [str(STORESCU), "-v", "-aec", "DEID_NODE", "127.0.0.1", str(port)]
                + [str(f) for f in files[i * PER_STREAM : (i + 1) * PER_STREAM]],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            for i in range(STREAMS)
        ]
        # Kill node 1 (its whole process group, as a machine dies) once it acknowledged some.
        victim = nodes[0]
        wait_for(
            lambda: _metric(victim["metrics"], "deid_objects_received_total") >= 3,
            BOUND,
            "node 1 to acknowledge objects",
            interval=0.02,
        )
        os.killpg(victim["pid"], signal.SIGKILL)
        acked: list[str] = []
        for sender in senders:
            out, _ = sender.communicate(timeout=BOUND)
            acked += _acknowledged(out)
        assert acked
        # Restart it: its spool is processed before it is healthy again.
        _cluster(state, "up", "2", "--port", str(port))
        for node in nodes:
            wait_for(
                lambda n=node: (
                    _metric(n["metrics"], "deid_spool_objects") == 0
                    and _metric(n["metrics"], "deid_associations_open") == 0
                ),
                BOUND,
                "the nodes to record everything",
            )
        assert "HAProxy sees UP" in _cluster(state, "status")
        _check_stored_once(state, [uid_of[path] for path in acked])
    finally:
        _cluster(state, "down")


def _check_stored_once(state: Path, acked: list[str]) -> None:
    """Every acknowledged object has one stored row and one output file; none has two."""
    key = bytes.fromhex((state / "secret.hex").read_text().strip())
    config = (state / "node-1" / "deid-node.toml").read_text()
    if "postgresql" in config:
        urls = [config.split('url = "', 1)[1].split('"', 1)[0]]  # one shared database
    else:
        urls = [sqlite_url(state / f"node-{i}" / "var" / "audit.db") for i in (1, 2)]
    rows = []
    for url in urls:
        with open_audit(url) as db:
            rows += list(db.iter_objects(Filters()))
    stored = Counter(str(r["pseudo_sop_uid"]) for r in rows if r["status"] == "stored")
    assert max(stored.values()) == 1  # nothing stored twice
    assert {r["node"] for r in rows} <= {"node-1", "node-2"}  # each row names its node
    outputs = Counter(p.stem for p in (state / "output").rglob("*.dcm"))
    for uid in acked:
        pseudo = pseudo_uid(key, "research", uid)
        assert stored[pseudo] == 1, "an acknowledged object has no stored row"
        assert outputs[pseudo] == 1, "an acknowledged object has no output file"
