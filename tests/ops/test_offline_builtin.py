"""Offline runs without a config file: built-in profiles, the key from --key or the
environment, one clear error without either; progress lines when stderr is no terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deid_node.cli import deidentify as cli_deidentify
from deid_node.config import builtin_profiles, load_config
from deid_node.testing.loopback import deid_node_command
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.paths import REPO

ROOT = REPO


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    patient = SyntheticPatient.make(PhiTokens(), seed=4)
    for i, ds in enumerate(ct_series(3, patient=patient, rows=32, cols=32)):
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    return folder


def _run(cwd: Path, *args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEID_NODE_")}
    if secret is not None:
        env["DEID_NODE_SECRET"] = secret
    return subprocess.run(
        [*deid_node_command(), "deidentify", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.dcm"))


def test_a_builtin_profile_runs_without_a_config_file(tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    first = _run(tmp_path, "in", "--output", "a", "--profile", "basic", "--key", "key")
    assert first.returncode == 0, first.stderr
    assert "3 written" in first.stdout
    again = _run(tmp_path, "in", "--output", "b", "--profile", "basic", "--key", "key")
    assert again.returncode == 0, again.stderr
    # The same key gives the same pseudonyms: the same files, run after run.
    assert _written(tmp_path / "a") == _written(tmp_path / "b") != []
    by_env = _run(tmp_path, "in", "--output", "c", "--profile", "research", secret="ab" * 32)
    assert by_env.returncode == 0, by_env.stderr
    assert len(_written(tmp_path / "c")) == 3


def test_without_a_key_or_a_known_profile_one_error_line(tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    no_key = _run(tmp_path, "in", "--output", "out", "--profile", "basic")
    assert no_key.returncode == 1
    assert no_key.stderr.splitlines() == [
        "Error: no key: give --key FILE or set DEID_NODE_SECRET (hex), or --config (its node's key)"
    ]
    unknown = _run(tmp_path, "in", "--output", "out", "--profile", "nope", secret="ab" * 32)
    assert unknown.returncode == 1
    assert "built-in: basic, research" in unknown.stderr
    assert not (tmp_path / "out").exists()


def test_the_shipped_research_profile_is_the_builtin_one() -> None:
    shipped = load_config(ROOT / "config" / "deid-node.toml").profiles["research"]
    assert builtin_profiles()["research"] == shipped


def test_progress_lines_when_stderr_is_no_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    lines = cli_deidentify._ProgressLines(10)
    lines.advance(2)  # too soon for a line
    lines.last -= cli_deidentify.PROGRESS_EVERY
    lines.advance(3)
    lines.last -= cli_deidentify.PROGRESS_EVERY
    lines.advance(5)  # done: the summary says the rest
    assert capsys.readouterr().err.splitlines()[0].startswith("de-identifying: 5 of 10 files (")
