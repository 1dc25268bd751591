"""deid_node.testing is tooling for tests and scripts: the node never imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import REPO


@pytest.mark.parametrize(
    "modules",
    [
        ("deid_node",),
        ("deid_node.cli.app", "deid_node.runtime.node", "deid_node.ops.offline"),
        ("deid_node.runtime.worker_boot",),  # what every worker process imports
    ],
)
def test_the_node_never_imports_the_testing_package(modules: tuple[str, ...]) -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('deid_node.testing')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_scripts_and_tests_share_code_through_the_package_only() -> None:
    needle = "sys." + "path"  # spelled apart, so this file does not match itself
    offenders = [
        str(path.relative_to(REPO))
        for folder, pattern in (("scripts", "*"), ("tests", "**/*.py"))
        for path in sorted((REPO / folder).glob(pattern))
        if path.is_file() and needle in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []
