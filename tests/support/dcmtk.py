"""dcmtk's storescu/echoscu as the peer, and dicom3tools' dciodvfy as the judge of output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

STORESCU = Path("/usr/bin/storescu")  # Debian's dcmtk, not pynetdicom's storescu in the venv
ECHOSCU = Path("/usr/bin/echoscu")
DCIODVFY = shutil.which("dciodvfy") or (
    "/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists() else None
)


def dcmtk_missing() -> str | None:
    """Why dcmtk tests cannot run, or None."""
    for tool in (STORESCU, ECHOSCU):
        if not tool.exists():
            return f"{tool} not found: install dcmtk (apt-get install dcmtk)"
    return None


def run_dcmtk(tool: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool to the end; its exit status and output, never raising on failure."""
    # dcmtk writes the command and the data set apart: without TCP_NODELAY each object
    # waits for a delayed ACK on loopback.
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [str(tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def dciodvfy_errors(path: Path) -> set[str]:
    """The kinds of error dciodvfy reports for a file (UID values masked)."""
    proc = subprocess.run([DCIODVFY or "dciodvfy", str(path)], capture_output=True, text=True)
    lines = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("Error"):
            # UID values differ by design; compare the kind of error, not the value.
            line = re.sub(r"<[0-9.]+>", "<uid>", line)
            line = re.sub(r"UID [0-9.]+", "UID x", line)
            lines.add(line)
    return lines
