#!/usr/bin/env python3
"""What hostile senders cost a node: the figures in README "Limits and hostile senders".

Starts a node (one receiving process, loopback, a temporary folder) and measures the
receiving process's resident memory (VmRSS) while

1. a peer streams into a PDU that declares 4 GiB, as its first PDU (before any AE title
   is checked) and inside an accepted association;
2. 1000 TCP connections that never send a byte are open, with the time
   a real C-ECHO (dcmtk's echoscu, from 127.0.0.1) takes meanwhile, and after they close.
   They come from 127.0.1.1 (--sources N: from N addresses, 127.0.1.1 onwards).

Usage: scripts/bench_hostile.py [--stream-mib N] [--silent N]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv"
if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
    os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

from pynetdicom import AE, build_context  # noqa: E402

from deid_node.config import load_config  # noqa: E402
from deid_node.logs import setup_logging  # noqa: E402
from deid_node.runtime.node import Node  # noqa: E402

ECHOSCU = "/usr/bin/echoscu"
VERIFICATION = "1.2.840.10008.1.1"
CONFIG = """
[node]
ae_title = "DEID_NODE"
host = "127.0.0.1"
port = 0
data_dir = "var"
workers = 1
receivers = 1

[[sources]]
ae_title = "BENCH"
profile = "research"

[profiles.research]
"""
MIB = 1 << 20
AFTER_SECONDS = 8.0  # past request_timeout (5 s): every thread of theirs has ended


def rss(pid: int) -> int:
    """Resident bytes of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peak(threading.Thread):
    """The highest VmRSS of a process, sampled every 10 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, rss(pid), threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def stream(sock: socket.socket, header: bytes, limit: int) -> int:
    """Send a PDU header then zeros until `limit` bytes or the node closes; bytes sent."""
    sent = 0
    chunk = bytes(MIB)
    with contextlib.suppress(OSError):
        sock.sendall(header)
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def pdu_stream(node: Node, pid: int, limit: int, inside: bool) -> None:
    """Stream into a PDU declaring 4 GiB; report memory during and after."""
    before = rss(pid)
    peak = Peak(pid)
    start = time.monotonic()
    if inside:
        ae = AE(ae_title="BENCH")
        assoc = ae.associate(*node.address, [build_context(VERIFICATION)], ae_title="DEID_NODE")
        assert assoc.is_established, "the bench's association was not accepted"
        sent = stream(assoc.dul.socket.socket, struct.pack(">BBL", 4, 0, 0xFFFFFFFF), limit)
        assoc.abort()
    else:
        with socket.create_connection(node.address) as sock:
            sent = stream(sock, struct.pack(">BBL", 1, 0, 0xFFFFFFFF), limit)
    seconds = time.monotonic() - start
    top = peak.stop()
    time.sleep(1.0)
    where = "inside an association" if inside else "as the first PDU"
    print(
        f"4 GiB declared {where}: {sent / MIB:.0f} MiB taken before the node closed "
        f"({seconds:.2f} s), RSS {before / MIB:.0f} MiB -> peak {top / MIB:.0f} MiB "
        f"(+{(top - before) / MIB:.0f}), {rss(pid) / MIB:.0f} MiB 1 s after"
    )


def echo_seconds(address: tuple[str, int]) -> float:
    """Time of one dcmtk C-ECHO (association, echo, release)."""
    env = dict(os.environ, TCP_NODELAY="1")
    start = time.monotonic()
    subprocess.run(
        [ECHOSCU, "-aet", "BENCH", "-aec", "DEID_NODE", address[0], str(address[1])],
        check=True,
        env=env,
        timeout=120,
    )
    return time.monotonic() - start


def silent(node: Node, pid: int, count: int, sources: int) -> None:
    """Open `count` silent connections from `sources` addresses (127.0.1.x), C-ECHO
    meanwhile, close them; memory throughout."""
    before = rss(pid)
    baseline = echo_seconds(node.address)
    peak = Peak(pid)
    socks: list[socket.socket] = []
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.{1 + i % sources // 250}.{1 + i % sources % 250}", 0))
        s.connect(node.address)
        socks.append(s)
    time.sleep(0.5)
    during = echo_seconds(node.address)
    held = rss(pid)
    for s in socks:
        s.close()
    time.sleep(AFTER_SECONDS)
    after = rss(pid)
    top = peak.stop()
    print(
        f"{count} silent connections from {sources} address(es): "
        f"C-ECHO {during:.2f} s (alone {baseline:.2f} s); RSS "
        f"{before / MIB:.0f} MiB -> {held / MIB:.0f} MiB while open (peak {top / MIB:.0f}), "
        f"{after / MIB:.0f} MiB {AFTER_SECONDS:.0f} s after they closed"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream-mib", type=int, default=1024, help="most to stream per PDU")
    parser.add_argument("--silent", type=int, default=1000, help="silent connections")
    parser.add_argument("--sources", type=int, default=1, help="addresses they come from")
    parser.add_argument("--only", choices=["pdu", "silent"], help="run one of the two")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the node's log")
    args = parser.parse_args()
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.silent)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deid-node.toml"
        path.write_text(CONFIG, encoding="utf-8")
        node = Node(load_config(path), port=0)
        node.start()
        try:
            [receiver] = [
                p for p in multiprocessing.active_children() if p.name.startswith("deid-receiver")
            ]
            assert receiver.pid is not None
            time.sleep(1.0)
            if args.only != "silent":
                pdu_stream(node, receiver.pid, args.stream_mib * MIB, inside=False)
                pdu_stream(node, receiver.pid, args.stream_mib * MIB, inside=True)
            if args.only != "pdu":
                silent(node, receiver.pid, args.silent, args.sources)
        finally:
            node.stop(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
