"""A node on this machine, for tests and scripts: a free port, whether it listens, its command."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

__all__ = ["deid_node_command", "free_port", "listening"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a node run as a subprocess)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def deid_node_command() -> list[str]:
    """The console script beside our interpreter, else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / "deid-node"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("deid-node")
    return [found] if found else [sys.executable, "-m", "deid_node"]
