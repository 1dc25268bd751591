"""Forwarding into a real PACS: Debian's Orthanc, in a private network namespace.

The scenario (deid_node/testing/orthanc.py) runs in the namespace with its own node and
storescu: 20 CT while Orthanc is down, Orthanc up, 60 more, kill -9 of the node while it
forwards, restart. Orthanc, counted through its REST API, must hold every stored object
once, and the outbox must say every job was sent, none failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deid_node.testing.orthanc import ORTHANC, STORESCU, in_private_network, namespace_problem


def _skip_reason() -> str | None:
    if not ORTHANC.exists():
        return f"{ORTHANC} not found: install orthanc (apt-get install orthanc)"
    if not STORESCU.exists():
        return f"{STORESCU} not found: install dcmtk"
    return namespace_problem()


@pytest.mark.slow
def test_orthanc_down_then_up_and_a_killed_node_get_every_object_once(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    command = [sys.executable, "-m", "deid_node.testing.orthanc", "forward"]
    done = in_private_network([*command, "--workdir", str(tmp_path)], timeout=600)
    log = tmp_path / "node.log"
    context = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    assert done.returncode == 0, done.stderr[-3000:] + context
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed_while_down"] == 0
    assert result["instances"] == 80
    assert result["jobs"] == {"pending": 0, "in_flight": 0, "sent": 80, "failed": 0}
    assert result["same_uids"] is True
