#!/usr/bin/env python3
"""Network throughput of deid-node against a bare pynetdicom SCP and dcmtk's storescp.

    scripts/bench [--quick] [--reps 3] [--json FILE] [--skip-big] [--only NAME,...]
                  [--no-offline] [--no-forward] [--no-web] [--compare-python PY] [--keep]
                  [--tmpdir DIR]

Synthetic data is written to a temporary folder outside the repo (removed at the end unless
--keep): 500 CT slices (512x512, 16-bit, one study), 8 ultrasound multi-frame objects
(30 frames 640x480 RGB, ~27 MB each), 4 ultrasound cines (10 frames 640x480) and 4 screen
captures with burned-in text, and one ~1 GB 16-bit multi-frame object; --quick: 50 CT,
2 US, 1 + 1 with text (4 frames), no big object.

Receivers, each on its own free port on 127.0.0.1, run one after the other:
  bare       a pynetdicom SCP that writes event.encoded_dataset() to a file
  chunked    the same with STORE_RECV_CHUNKED_DATASET (the handler moves event.dataset_path)
  dcmtk      /usr/bin/storescp --fork +B (bit-preserving, 128 KiB PDUs)
  deid-node  `deid-node serve` with a bench profile; done = every object audited stored/duplicate
Scenarios, each sent with dcmtk's storescu:
  ct1  the CT folder on one association     ct4  4 concurrent associations, a quarter each
  us   the US folder on one association     big  the ~1 GB object
  px   the burned-in text folder on one association (deid-node: a profile that cleans it)
Web (unless --no-web or --only leaves it out): the console's audit API over a million object
rows (100,000 with --quick) and a 512x512 CT frame rendered, p95 server time
(scripts/bench_web.py).
Forwarding (unless --no-forward or --only leaves it out; needs Debian's orthanc and a network
namespace): in a private network namespace, the CT folder sent by storescu to Orthanc alone,
then through deid-node forwarding to a fresh Orthanc: until Orthanc holds all of them, next to
the node's own until-written time (deid_node/testing/orthanc.py).
Offline (unless --no-offline or --only leaves it out): `deid-node deidentify` on the CT folder
against dicognito, deid and dicom-anonymizer when --compare-python (default: this Python) can
import them.

Per receiver and scenario: median and min wall time until the last object is written (for
deid-node: written and audited), objects/s, MB/s, peak RSS and PSS and CPU seconds of the receiver's
whole process tree, and deid-node's throughput ratio against the others (other's median time
/ deid-node's, so > 1 means deid-node is faster). For burned-in text, also the cost in this
process on one core: ms an object cleaned against header-only, ms and frames/s a frame.
JSON goes to bench-results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deid_node.audit.records import Filters
from deid_node.testing.loopback import free_port
from deid_node.testing.node_audit import NodeAudit

REPO = Path(__file__).resolve().parents[1]

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DEID_NODE = REPO / ".venv" / "bin" / "deid-node"
STORESCU = Path("/usr/bin/storescu")
STORESCP = Path("/usr/bin/storescp")

SENDER_AE = "BENCH_SCU"
RECEIVERS = ("bare", "chunked", "dcmtk", "deid-node")
SCENARIOS = ("ct1", "ct4", "us", "px", "big")
SCENARIO_LABELS = {
    "ct1": "CT, 1 association",
    "ct4": "CT, 4 associations",
    "us": "US multi-frame",
    "px": "burned-in text",
    "big": "~1 GB object",
}
# deid-node's ratio columns: (receiver, column header)
RATIO_AGAINST = (("bare", "vs bare"), ("dcmtk", "vs dcmtk"), ("chunked", "vs chunked"))

SEND_TIMEOUT = 900.0  # one scenario repetition, sending and processing
START_TIMEOUT = 60.0  # a receiver accepting connections
OFFLINE_TIMEOUT = 900.0  # one offline tool run
POLL = 0.01  # completion polling
SAMPLE = 0.05  # RSS sampling of the receiver's process tree
PDU = "131072"  # dcmtk's largest PDU
BENCH_SECRET = "5e" * 32  # DEID_NODE_SECRET for the bench (synthetic data only)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


class BenchError(Exception):
    """Something the bench cannot measure around (receiver would not start, tool missing)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Process trees: RSS and CPU from /proc
# --------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _scan_proc() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session id, utime+stime+cutime+cstime in ticks) for every process."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        if not stat:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(f) for f in fields[11:15])
        procs[int(name)] = (int(fields[1]), int(fields[3]), ticks)
    return procs


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users), or 0."""
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    for line in (rollup or "").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_usage(root: int) -> tuple[int, int, float]:
    """(sum of resident bytes, sum of PSS bytes, CPU seconds) of the processes of ``root``.

    The RSS sum counts a page shared by several processes (a forkserver's preloaded
    modules in every worker, shared libraries) once per process; the PSS sum counts it
    once in all, which is what the tree costs the machine.

    They are ``root``'s descendants plus every process of its session (receivers are started
    as session leaders), so workers re-parented to init still count. CPU counts utime+stime
    of every live process plus cutime+cstime (children that exited and were reaped), so it
    only grows while the tree reaps its own children; an orphan's CPU is lost when it exits.
    """
    procs = _scan_proc()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sid, _ticks) in procs.items():
        children.setdefault(ppid, []).append(pid)
    members = {pid for pid, (_ppid, sid, _ticks) in procs.items() if sid == root}
    todo = [root]
    while todo:
        pid = todo.pop()
        members.add(pid)
        todo.extend(c for c in children.get(pid, []) if c not in members)
    rss = pss = 0
    ticks = 0
    for pid in members:
        if pid not in procs:
            continue
        ticks += procs[pid][2]
        statm = _read(f"/proc/{pid}/statm")
        if statm:
            rss += int(statm.split()[1]) * PAGE_SIZE
        pss += _pss(pid)
    return rss, pss, ticks / CLK_TCK


class TreeSampler(threading.Thread):
    """Peak RSS and PSS sums of a process tree, sampled every ``SAMPLE`` seconds until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.peak = 0
        self.peak_pss = 0
        self._halt = threading.Event()

    def sample(self) -> float:
        rss, pss, cpu = tree_usage(self.root)
        self.peak = max(self.peak, rss)
        self.peak_pss = max(self.peak_pss, pss)
        return cpu

    def run(self) -> None:
        while not self._halt.wait(SAMPLE):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.sample()


# --------------------------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------------------------


def kill_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of an exited leader
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with status {proc.returncode} before accepting connections")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"port {port} not accepting after {timeout:.0f} s")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def count_files(folder: Path) -> int:
    n = 0
    for _root, _dirs, files in os.walk(folder):
        n += len(files)
    return n


# --------------------------------------------------------------------------------------------
# Receivers
# --------------------------------------------------------------------------------------------

PYNETDICOM_SCP = '''\
"""Bare pynetdicom storage SCP for scripts/bench: writes what it receives, nothing else."""
import os
import sys
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

mode, port, out_dir, ae_title = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
chunked = mode == "chunked"
_config.STORE_RECV_CHUNKED_DATASET = chunked


def handle_store(event):
    path = out_dir / (event.request.AffectedSOPInstanceUID + ".dcm")
    if chunked:
        os.replace(event.dataset_path, path)
    else:
        path.write_bytes(event.encoded_dataset())
    return 0x0000


ae = AE(ae_title=ae_title)
ae.maximum_pdu_size = 0
ae.maximum_associations = 16
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
ae.add_supported_context(Verification)
ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
'''


@dataclass
class Receiver:
    """A C-STORE SCP run as its own process group; subclasses say how and what 'done' is."""

    name: str
    work: Path
    ae_title: str = "BENCH_SCP"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    needs: tuple[Path, ...] = ()

    @property
    def out(self) -> Path:
        return self.work / "out"

    @property
    def log_path(self) -> Path:
        return self.work / "receiver.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        for path in self.needs:
            if not path.exists():
                raise BenchError(f"{path} not found")
        self.work.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self.port = free_port()
        cmd, env = self.command()
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.proc, START_TIMEOUT)
        except BenchError as exc:
            self.stop()
            last = " | ".join(line for line in tail(self.log_path, 4).splitlines() if line.strip())
            raise BenchError(f"{self.name}: {exc}; its log: {last or '(empty)'}") from None

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def begin_rep(self) -> None:
        """Empty the output folder; remember whatever a count needs as its baseline."""
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)

    def progress(self) -> tuple[int, int]:
        """(objects done, objects failed) since begin_rep."""
        return count_files(self.out), 0

    def verify(self, count: int) -> str | None:
        """After a timed repetition: why its output is incomplete, or None."""
        found = count_files(self.out)
        return None if found >= count else f"only {found} of {count} files in the output"

    def failure_detail(self) -> str:
        return ""


@dataclass
class PynetdicomReceiver(Receiver):
    chunked: bool = False

    def command(self) -> tuple[list[str], dict[str, str]]:
        script = self.work / "scp.py"
        script.write_text(PYNETDICOM_SCP, encoding="utf-8")
        env = dict(os.environ)
        if self.chunked:
            # pynetdicom's temporary files on the output's filesystem, so os.replace renames
            spool = self.work / "tmp"
            spool.mkdir(exist_ok=True)
            env["TMPDIR"] = str(spool)
        mode = "chunked" if self.chunked else "bare"
        return [str(VENV_PYTHON), str(script), mode, str(self.port), str(self.out), "BARE"], env


@dataclass
class DcmtkReceiver(Receiver):
    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [str(STORESCP), "--fork", "-od", str(self.out), "+B", "+xa", "-pm", "-dhl"]
        cmd += ["-pdu", PDU, "-aet", "DCMTK_SCP", str(self.port)]
        return cmd, DCMTK_ENV


@dataclass
class DeidNodeReceiver(Receiver):
    """`deid-node serve` with a bench config; done means audited stored/duplicate.

    `pixels`: the profile cleans burned-in text (workers preload numpy and Tesseract), for
    the px scenario; the others run header-only, as a node without such a profile does.
    """

    pixels: bool = False

    # Objects of the current repetition are those received since it began.
    baseline: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    _audit: NodeAudit | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def config_path(self) -> Path:
        return self.work / "bench.toml"

    @property
    def out(self) -> Path:
        return self.data_dir / "output"

    @property
    def audit_db(self) -> Path:
        return self.data_dir / "audit.db"

    @property
    def audit(self) -> NodeAudit:
        """The node's audit database, read while the node writes it (a locked read: no rows)."""
        if self._audit is None:
            path = self.audit_db.resolve()
            self._audit = NodeAudit(f"sqlite:///{path}", path)
        return self._audit

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        write_deid_config(
            self.config_path, self.data_dir, self.port, self.ae_title, pixels=self.pixels
        )
        env = {**os.environ, "DEID_NODE_SECRET": BENCH_SECRET}
        check = subprocess.run(
            [str(DEID_NODE), "check-config", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check.returncode != 0:
            raise BenchError(f"deid-node check-config: {check.stdout}{check.stderr}".strip())
        return [str(DEID_NODE), "serve", "--config", str(self.config_path)], env

    def begin_rep(self) -> None:
        # Remove the files but keep the folders: the node may assume folders it made exist.
        for root, _dirs, files in os.walk(self.out):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
        self.baseline = dt.datetime.now(dt.UTC)

    def progress(self) -> tuple[int, int]:
        counts = self.audit.status_counts(Filters(since=self.baseline)) or Counter()
        done = counts["stored"] + counts["duplicate"]
        return done, sum(counts.values()) - done

    def failure_detail(self) -> str:
        rows = self.audit.objects(Filters(since=self.baseline)) or []
        failed = Counter(
            (str(r["status"]), r["reason"])
            for r in rows
            if r["status"] not in ("stored", "duplicate")
        )
        ordered = sorted(
            failed.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None, str(kv[0][1]))
        )
        return "; ".join(f"{n} x {status}: {reason}" for (status, reason), n in ordered)

    def stop(self) -> None:
        if self._audit is not None:
            self._audit.close()
            self._audit = None
        super().stop()


def write_deid_config(
    path: Path, data_dir: Path, port: int, ae_title: str, *, pixels: bool = False
) -> None:
    """The bench's deid-node config: one source (the sender's AE title), one profile;
    with `pixels`, the profile cleans burned-in text."""
    path.write_text(
        f"""# written by scripts/bench
[node]
ae_title = "{ae_title}"
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_associations = 16
durability = "os"

[[sources]]
ae_title = "{SENDER_AE}"
profile = "bench"
hosts = ["127.0.0.1"]

[unknown_sources]
action = "reject"

[profiles.bench]
options = ["retain-longitudinal-modified-dates", "retain-safe-private"]
patient_id_prefix = "BENCH"
burned_in_annotation = "{"clean" if pixels else "allow"}"
""",
        encoding="utf-8",
    )


def make_receiver(name: str, work: Path) -> Receiver:
    folder = work / f"rx-{name}"
    if name == "bare":
        return PynetdicomReceiver(name, folder, needs=(VENV_PYTHON,))
    if name == "chunked":
        return PynetdicomReceiver(name, folder, needs=(VENV_PYTHON,), chunked=True)
    if name == "dcmtk":
        return DcmtkReceiver(name, folder, ae_title="DCMTK_SCP", needs=(STORESCP,))
    if name == "deid-node":
        return DeidNodeReceiver(name, folder, ae_title="DEID_NODE", needs=(DEID_NODE,))
    raise ValueError(name)


def make_deid_pixels_receiver(work: Path) -> DeidNodeReceiver:
    """deid-node with a profile that cleans burned-in text (the px scenario)."""
    folder = work / "rx-deid-node-pixels"
    return DeidNodeReceiver(
        "deid-node", folder, ae_title="DEID_NODE", needs=(DEID_NODE,), pixels=True
    )


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    folders: list[Path]
    count: int
    nbytes: int

    @property
    def label(self) -> str:
        return SCENARIO_LABELS[self.name]


def folder_stats(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def make_ct(folder: Path, n: int) -> None:
    cmd = [sys.executable, str(REPO / "scripts" / "make_synthetic.py"), "--ct", str(n)]
    subprocess.run([*cmd, "--out", str(folder)], check=True, stdout=subprocess.DEVNULL, timeout=900)


def split_folder(src: Path, parts: int, dest: Path) -> list[Path]:
    """``parts`` folders of hard links (copies across filesystems), round-robin over ``src``."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    folders = [dest / f"part{i + 1}" for i in range(parts)]
    for f in folders:
        f.mkdir(parents=True)
    for i, path in enumerate(files):
        target = folders[i % parts] / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return folders


def make_us(folder: Path, n: int) -> None:
    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, us_multiframe

    folder.mkdir(parents=True)
    patient = SyntheticPatient.make(PhiTokens(), seed=11)
    study_uid = None
    for i in range(n):
        ds = us_multiframe(
            patient, frames=30, rows=480, cols=640, burned_in="NO", study_uid=study_uid, seed=i
        )
        study_uid = ds.StudyInstanceUID
        ds.save_as(folder / f"us{i + 1}.dcm", enforce_file_format=True)


def make_px(folder: Path, n_us: int, n_sc: int, frames: int) -> int:
    """Ultrasound cines and screen captures with burned-in text; returns their frame count.

    Every ultrasound frame carries the banner, hospital and a measurement, on its own
    speckle (so no two frames are alike and each one is looked at).
    """
    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient
    from deid_node.testing.synthetic.annotated import annotated_capture, annotated_ultrasound

    folder.mkdir(parents=True)
    patient = SyntheticPatient.make(PhiTokens(start=60_000), seed=13)
    total = 0
    for i in range(n_us):
        ds, _ = annotated_ultrasound(patient, frames=frames, burned_in=None, seed=100 + i)
        ds.save_as(folder / f"us{i + 1}.dcm", enforce_file_format=True)
        total += frames
    for i in range(n_sc):
        ds, _ = annotated_capture(patient, seed=200 + i)
        ds.save_as(folder / f"sc{i + 1}.dcm", enforce_file_format=True)
        total += 1
    return total


def pixel_cost(folder: Path) -> dict[str, Any]:
    """Per object, in this process on one core: the pipeline with a clean profile against
    the same objects header-only (`allow`); frames looked at per second."""
    from deid_node.config import BurnedInPolicy, ProfileConfig
    from deid_node.deid.pipeline import process_file
    from deid_node.deid.profiles import compile_profile
    from deid_node.pixels.decode import read_layout
    from deid_node.pixels.release import shared_finder

    shared_finder()  # started once per worker: not part of any object's cost
    key = bytes.fromhex(BENCH_SECRET)
    files = sorted(folder.iterdir())
    frames = sum(read_layout(p).frames for p in files)
    out: dict[str, Any] = {"objects": len(files), "frames": frames}
    with tempfile.TemporaryDirectory(prefix="deid-bench-px-") as tmp:
        for policy in (BurnedInPolicy.ALLOW, BurnedInPolicy.CLEAN):
            profile = compile_profile(
                ProfileConfig(name=f"px-{policy}", burned_in_annotation=policy)
            )
            started = time.process_time()
            outcomes = [process_file(p, profile, key, Path(tmp) / policy.value) for p in files]
            cpu = time.process_time() - started
            stored = sum(o.status.value in ("stored", "duplicate") for o in outcomes)
            out[policy.value] = {"cpu_s": cpu, "ms_per_object": cpu * 1000 / len(files)}
            out[policy.value]["stored"] = stored
    out["frames_per_cpu_s"] = frames / out["clean"]["cpu_s"]
    out["ms_per_frame"] = (out["clean"]["cpu_s"] - out["allow"]["cpu_s"]) * 1000 / frames
    return out


def write_big_object(path: Path, frames: int, rows: int = 512, cols: int = 512) -> None:
    """A 16-bit Multi-frame Grayscale Word SC object, its pixel data streamed frame block by
    frame block (never more than one block in memory)."""
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        generate_uid,
    )

    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient

    tokens = PhiTokens(start=50_000)
    patient = SyntheticPatient.make(tokens, seed=23)
    sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    sop_uid = tokens.new_uid("SOPInstanceUID", "big")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["deid-node bench"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = tokens.new_date("StudyDate", start=dt.date(2023, 5, 1))
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = tokens.new_time("StudyTime")
    ds.AccessionNumber = tokens.new_token("AccessionNumber", "id")
    ds.Modality = "CT"
    ds.ConversionType = "WSD"
    ds.InstitutionName = tokens.new_token("InstitutionName")
    ds.ReferringPhysicianName = tokens.new_name("ReferringPhysicianName")
    ds.StudyDescription = "BENCH VOLUME"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = tokens.new_uid("StudyInstanceUID", "big study")
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "big series")
    ds.StudyID = tokens.new_token("StudyID", "id")
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "50"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"

    length = frames * rows * cols * 2
    if length >= 0xFFFFFFFF:
        raise ValueError("pixel data too long for one explicit-length element")
    y, x = np.mgrid[0:rows, 0:cols]
    base = ((x * 7 + y * 13) % 4096).astype(np.uint16)
    block_frames = 64
    block = np.empty((block_frames, rows, cols), dtype=np.uint16)
    with path.open("wb") as fh:
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)
        # PixelData is the last element: (7FE0,0010) OW, 2 reserved bytes, 32-bit length
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for first in range(0, frames, block_frames):
            n = min(block_frames, frames - first)
            view = block[:n]
            view[:] = base
            view += np.arange(first, first + n, dtype=np.uint16)[:, None, None]
            fh.write(memoryview(view).cast("B"))


def make_data(work: Path, args: argparse.Namespace, scenarios: Sequence[str]) -> dict[str, Any]:
    """Write the synthetic data; return {scenario name: Scenario} plus the CT folder."""
    data = work / "data"
    ct_dir = data / "ct"
    started = time.perf_counter()
    make_ct(ct_dir, args.ct)
    log(f"data: {args.ct} CT slices in {time.perf_counter() - started:.1f} s")
    n, size = folder_stats(ct_dir)
    out: dict[str, Any] = {"ct_dir": ct_dir, "scenarios": {}}
    out["scenarios"]["ct1"] = Scenario("ct1", [ct_dir], n, size)
    if "ct4" in scenarios:
        out["scenarios"]["ct4"] = Scenario("ct4", split_folder(ct_dir, 4, data / "ct4"), n, size)
    if "us" in scenarios and args.us > 0:
        started = time.perf_counter()
        make_us(data / "us", args.us)
        log(f"data: {args.us} US objects in {time.perf_counter() - started:.1f} s")
        out["scenarios"]["us"] = Scenario("us", [data / "us"], *folder_stats(data / "us"))
    if "px" in scenarios and args.px > 0:
        started = time.perf_counter()
        frames = make_px(data / "px", args.px, args.px, args.px_frames)
        log(
            f"data: {args.px} US and {args.px} SC with text, {frames} frames, "
            f"in {time.perf_counter() - started:.1f} s"
        )
        out["scenarios"]["px"] = Scenario("px", [data / "px"], *folder_stats(data / "px"))
        out["px_dir"] = data / "px"
    if "big" in scenarios and args.big_frames > 0:
        started = time.perf_counter()
        (data / "big").mkdir(parents=True)
        write_big_object(data / "big" / "big.dcm", args.big_frames)
        log(f"data: big object in {time.perf_counter() - started:.1f} s")
        out["scenarios"]["big"] = Scenario("big", [data / "big"], *folder_stats(data / "big"))
    return out


# --------------------------------------------------------------------------------------------
# Sending and measuring
# --------------------------------------------------------------------------------------------


def storescu_command(port: int, called_ae: str, folder: Path) -> list[str]:
    cmd = [str(STORESCU), "-aet", SENDER_AE, "-aec", called_ae, "+sd", "+r"]
    cmd += ["-pdu", PDU, "--max-send-pdu", PDU, "-to", "30", "-ta", "30", "-td", "900"]
    return [*cmd, "127.0.0.1", str(port), str(folder)]


def run_rep(rx: Receiver, scenario: Scenario, logs: Path, timeout: float) -> dict[str, Any]:
    """Send the scenario once; wall time until the receiver has every object."""
    rx.begin_rep()
    sampler = TreeSampler(rx.pid)
    cpu0 = sampler.sample()
    sampler.start()
    senders: list[subprocess.Popen[bytes]] = []
    log_paths = [
        logs / f"storescu-{rx.name}-{scenario.name}-{i}.log" for i in range(len(scenario.folders))
    ]
    error = None
    sent_s = done_s = None
    started = time.perf_counter()
    deadline = started + timeout
    try:
        for folder, log_path in zip(scenario.folders, log_paths, strict=True):
            with log_path.open("wb") as logf:
                senders.append(
                    subprocess.Popen(
                        storescu_command(rx.port, rx.ae_title, folder),
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=DCMTK_ENV,
                        start_new_session=True,
                    )
                )
        while True:
            now = time.perf_counter()
            if sent_s is None and all(p.poll() is not None for p in senders):
                sent_s = now - started
                codes = [p.returncode for p in senders]
                if any(codes):
                    error = f"storescu exit status {codes}: " + " | ".join(
                        tail(p, 3) for p in log_paths if tail(p, 3)
                    )
                    break
            if sent_s is not None:
                done, failed = rx.progress()
                if done >= scenario.count:
                    done_s = now - started
                    break
                if done + failed >= scenario.count:
                    error = f"{failed} object(s) not stored: {rx.failure_detail()}"
                    break
            if not rx.alive():
                error = f"receiver exited: {tail(rx.log_path, 5)}"
                break
            if now > deadline:
                done, failed = rx.progress()
                error = f"timeout after {timeout:.0f} s ({done}/{scenario.count} done)"
                break
            time.sleep(POLL)
    finally:
        for p in senders:
            kill_group(p, grace=2.0)
        sampler.stop()
    cpu1 = sampler.sample()
    if error is None:
        error = rx.verify(scenario.count)
    return {
        "ok": error is None,
        "error": error,
        "wall_s": done_s,
        "sent_s": sent_s,
        "peak_rss_mb": sampler.peak / 1e6,
        "peak_pss_mb": sampler.peak_pss / 1e6,
        "cpu_s": cpu1 - cpu0,
    }


def summarise(scenario: Scenario, receiver: str, reps: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in reps if r["ok"]]
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "label": scenario.label,
        "receiver": receiver,
        "objects": scenario.count,
        "bytes": scenario.nbytes,
        "associations": len(scenario.folders),
        "reps": reps,
        "ok": bool(good) and len(good) == len(reps),
        "errors": [r["error"] for r in reps if not r["ok"]],
    }
    if good:
        walls = [r["wall_s"] for r in good]
        median = statistics.median(walls)
        result.update(
            median_s=median,
            min_s=min(walls),
            sent_median_s=statistics.median(r["sent_s"] for r in good),
            objects_per_s=scenario.count / median,
            mb_per_s=scenario.nbytes / 1e6 / median,
            peak_rss_mb=max(r["peak_rss_mb"] for r in good),
            peak_pss_mb=max(r["peak_pss_mb"] for r in good),
            cpu_s=statistics.median(r["cpu_s"] for r in good),
        )
    return result


def bench_receiver(
    name: str, work: Path, scenarios: list[Scenario], reps: int, logs: Path
) -> list[dict[str, Any]]:
    if name == "deid-node" and any(s.name == "px" for s in scenarios):
        # Burned-in text needs a cleaning profile: its own node, after the others.
        rest = [s for s in scenarios if s.name != "px"]
        px = [s for s in scenarios if s.name == "px"]
        results = bench_receiver(name, work, rest, reps, logs) if rest else []
        return results + _bench(make_deid_pixels_receiver(work), px, reps, logs)
    return _bench(make_receiver(name, work), scenarios, reps, logs)


def _bench(rx: Receiver, scenarios: list[Scenario], reps: int, logs: Path) -> list[dict[str, Any]]:
    name = rx.name
    results = []
    try:
        rx.start()
    except BenchError as exc:
        log(f"{name}: not measured: {exc}")
        failed = {"ok": False, "error": f"not started: {exc}", "wall_s": None}
        return [summarise(s, name, [failed]) for s in scenarios]
    try:
        for scenario in scenarios:
            runs = []
            for i in range(reps):
                if not rx.alive():
                    runs.append({"ok": False, "error": "receiver not running", "wall_s": None})
                    continue
                run = run_rep(rx, scenario, logs, SEND_TIMEOUT)
                runs.append(run)
                if run["ok"]:
                    log(
                        f"{name:9} {scenario.name:4} rep {i + 1}: {run['wall_s']:7.2f} s "
                        f"(sent {run['sent_s']:.2f} s), peak RSS {run['peak_rss_mb']:.0f} MB "
                        f"(PSS {run['peak_pss_mb']:.0f} MB), "
                        f"CPU {run['cpu_s']:.1f} s"
                    )
                else:
                    log(f"{name:9} {scenario.name:4} rep {i + 1}: FAILED: {run['error']}")
                time.sleep(0.5)  # let the receiver settle (reap children, flush)
            results.append(summarise(scenario, name, runs))
    finally:
        rx.stop()
        # the receiver's received copies are large: drop them as soon as it is done
        shutil.rmtree(rx.out, ignore_errors=True)
    return results


def add_ratios(results: list[dict[str, Any]]) -> None:
    """On deid-node's results: other receiver's median time / deid-node's median time."""
    by_key = {(r["scenario"], r["receiver"]): r for r in results}
    for r in results:
        if r["receiver"] != "deid-node" or "median_s" not in r:
            continue
        ratios = {}
        for other, _header in RATIO_AGAINST:
            o = by_key.get((r["scenario"], other))
            if o is not None and "median_s" in o:
                ratios[other] = o["median_s"] / r["median_s"]
        r["ratios"] = ratios


# --------------------------------------------------------------------------------------------
# Offline comparison
# --------------------------------------------------------------------------------------------

COMPARE_TOOLS = {
    # name: (module to import, distribution, argv after the python, given SRC and OUT)
    "dicognito": (
        "dicognito",
        "dicognito",
        lambda src, out: ["-m", "dicognito", "--quiet", "--output-directory", out, src],
    ),
    "deid": (
        "deid",
        "deid",
        lambda src, out: [
            "-c",
            "import sys; from deid.dicom import get_files, replace_identifiers; "
            "replace_identifiers(list(get_files(sys.argv[1])), save=True, "
            "output_folder=sys.argv[2], remove_private=True)",
            src,
            out,
        ],
    ),
    "dicom-anonymizer": (
        "dicomanonymizer",
        "dicom-anonymizer",
        lambda src, out: [
            "-c",
            "import sys; from dicomanonymizer.anonymizer import main; "
            "sys.argv = ['dicom-anonymizer', *sys.argv[1:]]; sys.exit(main())",
            src,
            out,
        ],
    ),
}


def tool_version(python: str, module: str, dist: str) -> str | None:
    """The installed version of ``dist`` if ``python`` can import ``module``, else None."""
    code = (
        "import importlib, importlib.metadata, sys; importlib.import_module(sys.argv[1]); "
        "print(importlib.metadata.version(sys.argv[2]))"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code, module, dist], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd: list[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run ``cmd`` to the end: wall seconds, CPU seconds and peak RSS of its tree.

    CPU comes from getrusage(RUSAGE_CHILDREN), so it counts the tool's own children too as
    long as the tool waits for them (multiprocessing pools do).
    """
    cpu0 = _children_cpu()
    with log_path.open("ab") as logf:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            proc.wait(timeout=OFFLINE_TIMEOUT)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            wall = time.perf_counter() - started
            sampler.stop()
            kill_group(proc, grace=2.0)
    return {
        "wall_s": wall,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "cpu_s": _children_cpu() - cpu0,
        "peak_rss_mb": sampler.peak / 1e6,
        "peak_pss_mb": sampler.peak_pss / 1e6,
    }


def run_offline(
    work: Path, ct_dir: Path, reps: int, compare_python: str, logs: Path
) -> dict[str, Any]:
    n, size = folder_stats(ct_dir)
    cfg = work / "offline.toml"
    write_deid_config(cfg, work / "offline-data", free_port(), "DEID_NODE")
    env = {**os.environ, "DEID_NODE_SECRET": BENCH_SECRET}
    tools: dict[str, Callable[[str, str], list[str]]] = {
        "deid-node": lambda src, out: [
            str(DEID_NODE),
            "deidentify",
            src,
            "--output",
            out,
            "--profile",
            "bench",
            "--config",
            str(cfg),
        ]
    }
    versions: dict[str, str | None] = {"deid-node": importlib.metadata.version("deid-node")}
    skipped = []
    for name, (module, dist, argv) in COMPARE_TOOLS.items():
        version = tool_version(compare_python, module, dist)
        versions[name] = version
        if version is None:
            skipped.append(name)
            continue
        tools[name] = lambda src, out, argv=argv: [compare_python, *argv(src, out)]
    if skipped:
        log(
            f"offline: skipped {', '.join(skipped)} (not importable by {compare_python}): "
            "pip install dicognito deid dicom-anonymizer to compare "
            "(into a separate venv, then --compare-python /path/to/its/python)"
        )
    results: dict[str, Any] = {}
    for name, build in tools.items():
        runs = []
        for i in range(reps):
            out = work / f"offline-{name}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            run = timed_run(build(str(ct_dir), str(out)), env, logs / f"offline-{name}.log")
            run["files_out"] = count_files(out)
            run["ok"] = not run["timed_out"] and run["files_out"] >= n
            if run["ok"] and run["rc"] != 0:
                run["note"] = f"exit status {run['rc']}"
            runs.append(run)
            shutil.rmtree(out, ignore_errors=True)
            status = "ok" if run["ok"] else f"FAILED (rc {run['rc']}, {run['files_out']}/{n})"
            log(
                f"offline {name:16} rep {i + 1}: {run['wall_s']:7.2f} s, "
                f"{n / run['wall_s']:6.1f} files/s, {status}"
            )
        good = [r for r in runs if r["ok"]]
        entry: dict[str, Any] = {"version": versions.get(name), "runs": runs, "ok": bool(good)}
        if good:
            median = statistics.median(r["wall_s"] for r in good)
            entry.update(
                median_s=median,
                min_s=min(r["wall_s"] for r in good),
                files_per_s=n / median,
                mb_per_s=size / 1e6 / median,
                peak_rss_mb=max(r["peak_rss_mb"] for r in good),
                peak_pss_mb=max(r["peak_pss_mb"] for r in good),
                cpu_s=statistics.median(r["cpu_s"] for r in good),
            )
        else:
            tool_log = logs / f"offline-{name}.log"
            log(f"offline {name}: failed; {tool_log}:\n{tail(tool_log)}")
        results[name] = entry
    others = [e["files_per_s"] for k, e in results.items() if k != "deid-node" and e["ok"]]
    ratio = None
    if others and results["deid-node"]["ok"]:
        ratio = results["deid-node"]["files_per_s"] / max(others)
    return {
        "files": n,
        "bytes": size,
        "compare_python": compare_python,
        "skipped": skipped,
        "tools": results,
        "ratio_vs_fastest_other": ratio,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gb": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("pydicom", "pynetdicom", "numpy", "deid-node"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        proc = subprocess.run(
            [str(STORESCP), "--version"], capture_output=True, text=True, timeout=30
        )
        out["dcmtk"] = proc.stdout.splitlines()[0].strip("$ ") if proc.stdout else None
    except (OSError, subprocess.TimeoutExpired):
        out["dcmtk"] = None
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        out["deid_node_commit"] = head + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        out["deid_node_commit"] = None
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_forward(work: Path, count: int, reps: int, logs: Path) -> dict[str, Any]:
    """Forwarding into Orthanc, in a private network namespace (Orthanc binds everything)."""
    from deid_node.testing.orthanc import ORTHANC, in_private_network, namespace_problem

    problem = None if ORTHANC.exists() else f"{ORTHANC} not found (apt-get install orthanc)"
    problem = problem or namespace_problem()
    if problem:
        log(f"forward: skipped: {problem}")
        return {"ok": True, "skipped": problem, "count": count}
    runs = []
    for i in range(reps):
        folder = work / f"forward-{i}"
        command = [str(VENV_PYTHON), "-m", "deid_node.testing.orthanc", "bench"]
        done = in_private_network(
            [*command, "--workdir", str(folder), "--count", str(count)], timeout=1800
        )
        (logs / f"forward-{i}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            error = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            log(f"forward rep {i + 1}: failed: {error}")
            return {"ok": False, "error": error, "count": count}
        run = json.loads(done.stdout.strip().splitlines()[-1])
        log(
            f"forward rep {i + 1}: Orthanc alone {run['orthanc_alone_s']:.2f} s, node written "
            f"{run['node_written_s']:.2f} s, Orthanc via node {run['end_to_end_s']:.2f} s"
        )
        runs.append(run)
        shutil.rmtree(folder, ignore_errors=True)
    keys = ("orthanc_alone_s", "node_sent_s", "node_written_s", "end_to_end_s")
    out: dict[str, Any] = {"ok": True, "count": count, "reps": runs}
    for key in keys:
        out[key] = statistics.median(r[key] for r in runs)
    return out


def print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    failures = []
    table = Table(title="C-STORE receive throughput (wall time until the last object is written)")
    for col in ("scenario", "receiver", "objects", "median s", "min s", "sent s", "obj/s"):
        table.add_column(col, justify="left" if col in ("scenario", "receiver") else "right")
    for col in ("MB/s", "peak RSS MB", "peak PSS MB", "CPU s", *(h for _o, h in RATIO_AGAINST)):
        table.add_column(col, justify="right")
    last = None
    for r in report["results"]:
        if last is not None and r["scenario"] != last:
            table.add_section()
        last = r["scenario"]
        if "median_s" not in r:
            table.add_row(r["label"], r["receiver"], str(r["objects"]), "FAILED")
        if not r["ok"]:
            reason = (r["errors"] or ["no result"])[0].splitlines()[0][:200]
            failures.append(f"{r['scenario']} {r['receiver']}: {reason}")
        if "median_s" not in r:
            continue
        ratios = r.get("ratios", {})
        table.add_row(
            r["label"],
            r["receiver"],
            str(r["objects"]),
            _fmt(r["median_s"]),
            _fmt(r["min_s"]),
            _fmt(r["sent_median_s"]),
            _fmt(r["objects_per_s"], 1),
            _fmt(r["mb_per_s"], 1),
            _fmt(r["peak_rss_mb"], 0),
            _fmt(r["peak_pss_mb"], 0),
            _fmt(r["cpu_s"], 1),
            *(_fmt(ratios.get(o)) if o in ratios else "" for o, _h in RATIO_AGAINST),
        )
    console.print(table)
    for line in failures:
        console.print(f"FAILED {line}", markup=False, highlight=False)
    offline = report.get("offline")
    if offline:
        t2 = Table(title=f"Offline de-identification, {offline['files']} CT files")
        for col in (
            "tool",
            "version",
            "median s",
            "min s",
            "files/s",
            "MB/s",
            "peak RSS MB",
            "peak PSS MB",
        ):
            t2.add_column(col, justify="left" if col in ("tool", "version") else "right")
        t2.add_column("CPU s", justify="right")
        for name, e in offline["tools"].items():
            if not e["ok"]:
                t2.add_row(name, e.get("version") or "", "FAILED")
                continue
            t2.add_row(
                name,
                e.get("version") or "",
                _fmt(e["median_s"]),
                _fmt(e["min_s"]),
                _fmt(e["files_per_s"], 1),
                _fmt(e["mb_per_s"], 1),
                _fmt(e["peak_rss_mb"], 0),
                _fmt(e["peak_pss_mb"], 0),
                _fmt(e["cpu_s"], 1),
            )
        for name in offline["skipped"]:
            t2.add_row(name, "", "skipped: pip install dicognito deid dicom-anonymizer to compare")
        console.print(t2)
        if offline["ratio_vs_fastest_other"] is not None:
            console.print(
                f"deid-node files/s / fastest other's: {offline['ratio_vs_fastest_other']:.2f}"
            )
    forward = report.get("forward")
    if forward and forward.get("skipped"):
        console.print(f"forwarding into Orthanc: skipped ({forward['skipped']})")
    elif forward and forward["ok"]:
        t3 = Table(title=f"Forwarding into Orthanc, {forward['count']} CT (medians)")
        for col in ("Orthanc alone s", "node written s", "Orthanc via node s"):
            t3.add_column(col, justify="right")
        t3.add_column("via node / node written", justify="right")
        t3.add_column("via node / Orthanc alone", justify="right")
        t3.add_row(
            _fmt(forward["orthanc_alone_s"]),
            _fmt(forward["node_written_s"]),
            _fmt(forward["end_to_end_s"]),
            _fmt(forward["end_to_end_s"] / forward["node_written_s"]),
            _fmt(forward["end_to_end_s"] / forward["orthanc_alone_s"]),
        )
        console.print(t3)
    elif forward:
        failures.append(f"forward: {forward.get('error', 'failed')}")
        console.print(f"FAILED forward: {forward.get('error', 'failed')}", markup=False)
    web = report.get("web")
    if web:
        t4 = Table(title=f"Web console, server time over {web['rows']:,} object rows (30 requests)")
        for col in ("request", "median ms", "p95 ms"):
            t4.add_column(col, justify="left" if col == "request" else "right")
        for name, e in web["pages"].items():
            t4.add_row(f"GET /api/objects, {name}", _fmt(e["median_ms"], 1), _fmt(e["p95_ms"], 1))
        frame = web["frame_512"]
        t4.add_row("frame PNG, 512x512 CT", _fmt(frame["median_ms"], 1), _fmt(frame["p95_ms"], 1))
        console.print(t4)
    cost = report.get("pixel_cost")
    if cost:
        console.print(
            f"burned-in text, one core: {cost['objects']} objects, {cost['frames']} frames; "
            f"{cost['clean']['ms_per_object']:.0f} ms an object cleaned against "
            f"{cost['allow']['ms_per_object']:.0f} ms header-only; "
            f"{cost['ms_per_frame']:.0f} ms a frame, {cost['frames_per_cpu_s']:.1f} frames/s "
            "per worker"
        )
    m = report["machine"]
    console.print(
        f"{m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gb']} GB; "
        f"reps {report['params']['reps']}; ratios = other's median s / deid-node's median s "
        "(> 1: deid-node faster); 'sent s' = until every sender exited (last ack)."
    )


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="C-STORE throughput: deid-node vs a bare pynetdicom SCP and dcmtk storescp.",
    )
    parser.add_argument("--quick", action="store_true", help="50 CT, 2 US, no big object")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO / "bench-results" / "latest.json",
        help="results file (default bench-results/latest.json)",
    )
    parser.add_argument("--skip-big", action="store_true", help="no ~1 GB object")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=(
            f"receivers {','.join(RECEIVERS)}, scenarios {','.join(SCENARIOS)}, offline "
            "and/or forward"
        ),
    )
    parser.add_argument("--no-offline", action="store_true", help="skip the offline comparison")
    parser.add_argument("--no-forward", action="store_true", help="skip forwarding into Orthanc")
    parser.add_argument("--no-web", action="store_true", help="skip the web console's load check")
    parser.add_argument(
        "--compare-python",
        default=sys.executable,
        metavar="PY",
        help="Python that has dicognito, deid, dicom-anonymizer (default: this one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--tmpdir", type=Path, help="where to make the temporary folder")
    parser.add_argument("--ct", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--us", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--px", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--px-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--big-frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    only = {s.strip() for s in (args.only or "").split(",") if s.strip()}
    unknown = only - set(RECEIVERS) - set(SCENARIOS) - {"offline", "forward", "web"}
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    args.receivers = [r for r in RECEIVERS if r in only] or list(RECEIVERS)
    args.scenarios = [s for s in SCENARIOS if s in only] or list(SCENARIOS)
    if args.only and not (only & set(RECEIVERS)) and not (only & set(SCENARIOS)):
        args.receivers, args.scenarios = [], []  # --only offline
    args.offline = not args.no_offline and (not only or "offline" in only)
    args.forward = not args.no_forward and (not only or "forward" in only)
    args.web = not args.no_web and (not only or "web" in only)
    if args.quick or args.skip_big:
        args.scenarios = [s for s in args.scenarios if s != "big"]
    args.ct = args.ct or (50 if args.quick else 500)
    args.us = args.us if args.us is not None else (2 if args.quick else 8)
    args.px = args.px if args.px is not None else (1 if args.quick else 4)
    args.px_frames = args.px_frames or (4 if args.quick else 10)
    args.big_frames = args.big_frames or 2000  # 2000 x 512 x 512 x 2 bytes = 1.05 GB
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.receivers and not STORESCU.exists():
        log(f"Error: {STORESCU} not found (apt-get install dcmtk)")
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="deid-bench-", dir=args.tmpdir))
    logs = work / "logs"
    logs.mkdir()
    log(f"bench: working in {work}")
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "params": {
            "reps": args.reps,
            "quick": args.quick,
            "receivers": args.receivers,
            "scenarios": args.scenarios,
            "ct": args.ct,
            "us": args.us,
            "px": args.px,
            "px_frames": args.px_frames,
            "big_frames": args.big_frames if "big" in args.scenarios else 0,
            "sender": f"{STORESCU} +sd +r -pdu {PDU} --max-send-pdu {PDU}",
        },
        "data": {},
        "results": [],
    }
    try:
        data = make_data(work, args, args.scenarios)
        scenarios: list[Scenario] = [
            data["scenarios"][s] for s in args.scenarios if s in data["scenarios"]
        ]
        report["data"] = {
            s.name: {"objects": s.count, "bytes": s.nbytes, "associations": len(s.folders)}
            for s in data["scenarios"].values()
        }
        for name in args.receivers:
            report["results"] += bench_receiver(name, work, scenarios, args.reps, logs)
        add_ratios(report["results"])
        if "px_dir" in data:
            report["pixel_cost"] = pixel_cost(data["px_dir"])
        if args.offline:
            report["offline"] = run_offline(
                work, data["ct_dir"], args.reps, args.compare_python, logs
            )
        if args.forward:
            report["forward"] = run_forward(work, args.ct, args.reps, logs)
        if args.web:
            from bench_web import run as run_web

            rows = 100_000 if args.quick else 1_000_000
            log(f"web: filling an audit database with {rows} object rows")
            report["web"] = run_web(rows, reps=30)
    except KeyboardInterrupt:
        log("bench: interrupted")
        return 130
    finally:
        if args.keep:
            log(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print_tables(report)
    log(f"bench: results in {args.json}")
    offline_ok = all(e["ok"] for e in report.get("offline", {}).get("tools", {}).values())
    forward_ok = report.get("forward", {}).get("ok", True)
    return 0 if all(r["ok"] for r in report["results"]) and offline_ok and forward_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
