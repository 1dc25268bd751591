"""The README's first command restarts a node with no package index reachable."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from deid_node.testing.loopback import free_port
from tests.support.node import CT_SOURCE, node_table
from tests.support.paths import REPO
from tests.support.scu import echo
from tests.support.waiting import wait_for

STAMP = REPO / ".venv" / ".deid-node-installed"


def offline_env() -> dict[str, str]:
    """The environment of a machine with no package index: any pip download fails."""
    env = dict(os.environ)
    env.update(PIP_NO_INDEX="1", PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="")
    return env


@pytest.fixture
def installed() -> None:
    """Skip unless .venv was set up by scripts/setup-venv for this pyproject.toml."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    lines = STAMP.read_text().splitlines() if STAMP.exists() else []
    if f"{digest} base" not in lines:
        pytest.skip("run ./scripts/setup-venv first: .venv was set up another way")


def test_setup_venv_installs_nothing_when_the_venv_is_current(installed: None) -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "setup-venv")],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""


def test_scripts_serve_restarts_offline(installed: None, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "deid-node.toml"
    config.write_text(node_table(port=port, workers=1) + CT_SOURCE, encoding="utf-8")
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(REPO / "scripts" / "serve"), "--config", str(config)],
            env=offline_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or echo(("127.0.0.1", port), "CT_SCANNER") == 0,
            60,
            "scripts/serve to answer C-ECHO",
        )
        assert proc.poll() is None, log.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "stopped" in log.read_text(errors="replace")
