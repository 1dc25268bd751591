"""Debian's Orthanc as a real destination, inside a private network namespace.

Orthanc binds every interface, so it only ever runs in a namespace of its own
(``unshare --net``), where 127.0.0.1 is the only address there is. Whatever talks to it
(the node, storescu) runs in that namespace too: `in_private_network()` re-runs a command
there, and this module's ``main`` is what runs inside (a scenario, printing JSON).

    python -m deid_node.testing.orthanc forward --workdir DIR     (tests/forward/test_orthanc.py)
    python -m deid_node.testing.orthanc bench --workdir DIR --count 500   (scripts/bench)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from deid_node.testing.loopback import deid_node_command, listening

__all__ = ["ORTHANC", "Orthanc", "in_private_network", "namespace_problem"]

ORTHANC: Final = Path("/usr/sbin/Orthanc")
STORESCU: Final = Path("/usr/bin/storescu")
DICOM_PORT: Final = 4242
HTTP_PORT: Final = 8042
NODE_PORT: Final = 11112
PDU: Final = 131072  # maximum PDU length, ours and Orthanc's


def namespace_problem() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) not found"
    done = subprocess.run([*_unshare(), "true"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot make a network namespace: {done.stderr.strip()[:200]}"
    return None


def _unshare() -> list[str]:
    # As root, a plain network namespace; otherwise a user namespace makes us root in it.
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]


def in_private_network(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command (a scenario of this module) in a fresh network namespace."""
    return subprocess.run(
        [*_unshare(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def loopback_up() -> None:
    """Bring `lo` up in this (new) network namespace: SIOCSIFFLAGS with IFF_UP."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def _wait(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> float:
    """Poll until condition holds; the seconds it took. RuntimeError after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


# Orthanc's counters take its database lock: asked too often, they slow what they measure.
ORTHANC_POLL = 0.05


class Orthanc:
    """One Orthanc with its own storage folder, on 127.0.0.1 (namespace only)."""

    def __init__(self, workdir: Path, *, syntaxes: Sequence[str] | None = None) -> None:
        """Prepare it in `workdir`; `syntaxes` limits the transfer syntaxes it accepts."""
        self.workdir = workdir
        self.syntaxes = list(syntaxes) if syntaxes else ["1.2.840.10008.1.*"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait for its REST API."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "deid-node-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": HTTP_PORT,
            "DicomPort": DICOM_PORT,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "AcceptedTransferSyntaxes": self.syntaxes,
            "StorageCompression": False,
            "HttpCompressionEnabled": False,
            # No fsync per instance: tests and the bench run on scratch folders; the bench
            # measures Orthanc alone with the same setting.
            "SyncStorageArea": False,
            "DicomThreadsCount": 4,
            "MaximumPduLength": PDU,  # as the bench's other receivers (scripts/bench_lib.py)
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        log = (self.workdir / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [str(ORTHANC), str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK inside: no delayed-ACK stalls
        )
        _wait(self._up, 60, "Orthanc's REST API")

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {self.process.returncode}")
        try:
            self.get("/system")
        except OSError:
            return False
        return True

    def get(self, path: str) -> Any:
        """GET a REST path, decoded from JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}{path}", timeout=10) as rsp:
            return json.loads(rsp.read())

    def instances(self) -> int:
        """How many instances it holds."""
        return int(self.get("/statistics")["CountInstances"])

    def sop_instance_uids(self) -> set[str]:
        """The SOP Instance UIDs it holds."""
        uids = set()
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            uids.add(str(tags["SOPInstanceUID"]))
        return uids

    def stop(self) -> None:
        """Stop it (and wait)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None


# -- what runs inside the namespace ---------------------------------------------------


def _node_config(workdir: Path, retry_delay: float) -> Path:
    path = workdir / "deid-node.toml"
    path.write_text(
        f"""
[node]
ae_title = "DEID_NODE"
host = "127.0.0.1"
port = {NODE_PORT}
data_dir = "var"

[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
options = ["retain-longitudinal-modified-dates"]
forward_to = ["orthanc"]

[[destinations]]
name = "orthanc"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {DICOM_PORT}
max_associations = 2

[destinations.retry]
delay = {retry_delay}
max_delay = {retry_delay * 4}
""",
        encoding="utf-8",
    )
    return path


def _ct_files(folder: Path, count: int, seed: int, size: int) -> list[str]:
    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series

    folder.mkdir(parents=True, exist_ok=True)
    patient = SyntheticPatient.make(PhiTokens(), seed)
    paths = []
    for i, ds in enumerate(ct_series(count, patient=patient, seed=seed, rows=size, cols=size)):
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


def _storescu(port: int, called: str, files: Sequence[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(
        [
            str(STORESCU),
            "-aet",
            "CT_SCANNER",
            "-aec",
            called,
            "-pdu",
            str(PDU),
            "--max-send-pdu",
            str(PDU),
            "127.0.0.1",
            str(port),
            *files,
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed with {done.returncode}")
    return time.monotonic() - start


class _NodeProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.config.parent / "node.log").open("ab")
        self.process = subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: listening(NODE_PORT), 60, "the node to listen")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # kill -9: its receiving, worker and forwarding processes follow
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


class _Audit:
    """The node's audit database, kept open while a scenario polls it."""

    def __init__(self, config: Path) -> None:
        from deid_node.audit.db import open_audit
        from deid_node.config import load_config

        self.db = open_audit(load_config(config).database_url)

    def stored(self) -> int:
        from deid_node.audit.records import Filters

        return sum(s.stored for s in self.db.study_summaries(Filters()))

    def jobs(self) -> dict[str, int]:
        counts = {state: 0 for state in ("pending", "in_flight", "sent", "failed")}
        for c in self.db.outbox.counts():
            for state in counts:
                counts[state] += getattr(c, state)
        return counts

    def close(self) -> None:
        self.db.close()


def scenario_forward(workdir: Path) -> dict[str, object]:
    """Orthanc down at first, then up; kill -9 of the node while forwarding; restart."""
    config = _node_config(workdir, retry_delay=0.2)
    first = _ct_files(workdir / "in1", 20, seed=21, size=64)
    second = _ct_files(workdir / "in2", 60, seed=22, size=256)
    orthanc = Orthanc(workdir / "orthanc")
    node = _NodeProcess(config)
    result: dict[str, object] = {}
    node.start()
    audit = _Audit(config)
    try:
        _storescu(NODE_PORT, "DEID_NODE", first)
        _wait(lambda: audit.stored() == 20, 120, "20 objects stored")
        _wait(lambda: audit.jobs()["pending"] == 20, 60, "jobs waiting for Orthanc")
        result["failed_while_down"] = audit.jobs()["failed"]
        orthanc.start()
        _wait(lambda: orthanc.instances() == 20, 120, "20 instances in Orthanc")
        _storescu(NODE_PORT, "DEID_NODE", second)
        _wait(lambda: orthanc.instances() > 22, 120, "forwarding of the second batch")
        node.kill()
        result["at_kill"] = orthanc.instances()
        node.start()
        _wait(lambda: orthanc.instances() == 80, 180, "80 instances in Orthanc")
        _wait(lambda: audit.jobs()["sent"] == 80, 60, "80 jobs sent")
        outputs = {p.stem for p in (workdir / "var" / "output").rglob("*.dcm")}
        result.update(
            stored=audit.stored(),
            jobs=audit.jobs(),
            instances=orthanc.instances(),
            same_uids=orthanc.sop_instance_uids() == outputs,
        )
    finally:
        audit.close()
        node.stop()
        orthanc.stop()
    return result


def scenario_bench(workdir: Path, count: int) -> dict[str, object]:
    """Seconds until every CT is in Orthanc: sent to it directly, and through the node."""
    files = _ct_files(workdir / "in", count, seed=31, size=512)
    direct = Orthanc(workdir / "direct")
    direct.start()
    try:
        start = time.monotonic()
        _storescu(DICOM_PORT, "ORTHANC", files)
        _wait(lambda: direct.instances() == count, 600, "Orthanc to hold it all", ORTHANC_POLL)
        orthanc_alone = time.monotonic() - start
    finally:
        direct.stop()
    config = _node_config(workdir, retry_delay=0.5)
    orthanc = Orthanc(workdir / "through")
    orthanc.start()
    node = _NodeProcess(config)
    node.start()
    audit = _Audit(config)
    try:
        start = time.monotonic()
        sent = _storescu(NODE_PORT, "DEID_NODE", files)
        _wait(lambda: audit.stored() == count, 600, "every CT written")
        written = time.monotonic() - start
        _wait(lambda: orthanc.instances() == count, 600, "Orthanc to hold it all", ORTHANC_POLL)
        end_to_end = time.monotonic() - start
    finally:
        audit.close()
        node.stop()
        orthanc.stop()
    return {
        "count": count,
        "orthanc_alone_s": round(orthanc_alone, 3),
        "node_sent_s": round(sent, 3),
        "node_written_s": round(written, 3),
        "end_to_end_s": round(end_to_end, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scenario inside a private network namespace; print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["forward", "bench"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args(argv)
    loopback_up()
    if args.scenario == "forward":
        result = scenario_forward(args.workdir)
    else:
        result = scenario_bench(args.workdir, args.count)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
