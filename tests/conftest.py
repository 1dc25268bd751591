"""Shared fixtures: configs written in tmp_path, a real node on 127.0.0.1:0, SCU helpers.

Everything is real: associations over loopback, SQLite files, worker processes. Waiting
is done by polling a condition with a deadline (:func:`wait_for`), never by sleeping a
fixed time and hoping.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from deid_node.audit.db import open_audit
from deid_node.audit.records import AssociationFilters, Filters
from deid_node.config import Config, load_config
from deid_node.intake.spool import Receipt, Spool, SpoolItem
from deid_node.net.pynetdicom_compat import only_senders_take_responses
from deid_node.pixels.detect import DetectorUnavailable, TextDetector
from deid_node.pixels.ocr import OcrUnavailable, TextFinder
from deid_node.runtime.node import Node
from deid_node.testing.postgres import PostgresServer, server_bin

NODE_AE = "DEID_NODE"
VERIFICATION = "1.2.840.10008.1.1"
STORESCU = Path("/usr/bin/storescu")
ECHOSCU = Path("/usr/bin/echoscu")

# A [node] table for tests: small pool, short timeouts, port chosen by the test.
NODE_TABLE = """
[node]
ae_title = "DEID_NODE"
host = "127.0.0.1"
port = {port}
data_dir = "var"
workers = {workers}
max_associations = 8
network_timeout = 15
acse_timeout = 10
dimse_timeout = 30
"""


def node_table(port: int = 0, workers: int = 2) -> str:
    """The [node] table of a test config (append [[sources]] and [profiles.*])."""
    return NODE_TABLE.format(port=port, workers=workers)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for nodes run as subprocesses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (skipped only without Debian's binaries)."""
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries missing: apt-get install postgresql")
    server = PostgresServer(bin_dir, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Config]:
    """Write TOML text to tmp_path/deid-node.toml and load it (paths relative to tmp_path)."""

    def write(text: str) -> Config:
        path = tmp_path / "deid-node.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    return write


@pytest.fixture
def start_node() -> Iterator[Callable[..., Node]]:
    """Start a Node on 127.0.0.1 port 0 (read ``node.address``); stopped after the test."""
    nodes: list[Node] = []

    def start(cfg: Config, **kwargs: Any) -> Node:
        node = Node(cfg, port=0, **kwargs)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(timeout=30)


def associate(
    address: tuple[str, int],
    calling_ae: str,
    sop_classes: Iterable[str] = (),
    *,
    called_ae: str = NODE_AE,
    transfer_syntaxes: Sequence[str] | None = None,
) -> Association:
    """Request an association proposing Verification plus `sop_classes`."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 15
    uids = dict.fromkeys([VERIFICATION, *sop_classes])
    contexts = [build_context(uid, transfer_syntaxes) for uid in uids]
    assoc = ae.associate(address[0], address[1], contexts, ae_title=called_ae)
    if assoc.is_established:
        # pynetdicom sends the command and the data set as separate writes: without
        # TCP_NODELAY each object waits for a delayed ACK.
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        only_senders_take_responses(assoc)  # pynetdicom's requestor race (issue #435)
    return assoc


def store(address: tuple[str, int], datasets: Sequence[Dataset], calling_ae: str) -> list[int]:
    """Send datasets on one association and release it; the statuses, in order."""
    assoc = associate(address, calling_ae, [str(ds.SOPClassUID) for ds in datasets])
    assert assoc.is_established, f"association from {calling_ae} not accepted"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def echo(address: tuple[str, int], calling_ae: str) -> int:
    """C-ECHO on a fresh association; the status (-1 if not accepted)."""
    assoc = associate(address, calling_ae)
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def audit_objects(cfg: Config, **filters: Any) -> list[dict[str, object]]:
    """Object rows of the node's audit database, oldest first."""
    with open_audit(cfg.database_url) as db:
        return list(db.iter_objects(Filters(**filters)))


def audit_associations(cfg: Config) -> list[dict[str, object]]:
    """Association rows of the node's audit database, oldest first."""
    with open_audit(cfg.database_url) as db:
        return list(reversed(list(db.iter_associations(AssociationFilters()))))


def files_under(folder: Path, pattern: str = "*") -> list[Path]:
    """Regular files under a folder (recursively), sorted."""
    return sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.exists() else []


def dcmtk_missing() -> str | None:
    """Why dcmtk tests cannot run, or None."""
    for tool in (STORESCU, ECHOSCU):
        if not tool.exists():
            return f"{tool} not found: install dcmtk (apt-get install dcmtk)"
    return None


@pytest.fixture
def dcmtk() -> None:
    """Skip (with the reason) when dcmtk's storescu/echoscu are not installed."""
    reason = dcmtk_missing()
    if reason:
        pytest.skip(reason)


def console_user(cfg: Config, name: str, password: str) -> str:
    """Add a web console user through the CLI, as an operator would; a new API token."""
    from typer.testing import CliRunner

    from deid_node.cli.app import app

    runner = CliRunner()
    config = ["-c", str(cfg.path)]
    added = runner.invoke(
        app, ["users", "add", name, "--password-stdin", *config], input=password + "\n"
    )
    assert added.exit_code == 0, added.output
    made = runner.invoke(app, ["users", "token", name, *config])
    assert made.exit_code == 0, made.output
    return made.output.strip()


def which_deid_node() -> list[str]:
    """The command that runs the CLI of this checkout."""
    import sys

    beside = Path(sys.executable).parent / "deid-node"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("deid-node")
    return [found] if found else [sys.executable, "-m", "deid_node"]


@pytest.fixture(scope="session")
def text_detector() -> TextDetector:
    """The process's text detector, as workers use it; skipped when it is missing."""
    from deid_node.pixels.release import shared_finder

    try:
        return shared_finder()
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def text_finder() -> Iterator[TextFinder]:
    """One Tesseract engine for the burned-in text tests; skipped when it is missing."""
    try:
        engine = TextFinder()
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    with engine:
        yield engine


def readable_in(
    frame: Any, photometric: str, texts: Iterable[tuple[int, int, int, int]], *finders: Any
) -> list[tuple[int, int, int, int]]:
    """The planted texts (left, top, right, bottom) any finder still finds a box over.

    Boxes elsewhere (OCR reads texture as words) are not this text; a box over the
    blanked rectangle's inside is.
    """
    left_over = []
    for left, top, right, bottom in texts:
        inside = (left + 2, top + 2, right - 2, bottom - 2)
        for finder in finders:
            if any(
                b.left < inside[2]
                and inside[0] < b.right
                and b.top < inside[3]
                and inside[1] < b.bottom
                for b in finder.find(frame, photometric)
            ):
                left_over.append((left, top, right, bottom))
                break
    return left_over


def publish_in_spool(spool: Spool, path: Path, profile: str = "research") -> SpoolItem:
    """Put a file into spool/ exactly as the SCP does after a C-STORE (as a crash leaves
    it: acknowledged, not yet processed); the entry."""
    incoming = spool.open_incoming(owner=None)
    incoming.write(path.read_bytes())
    incoming.flush()
    receipt = Receipt(
        received_at=datetime.now(UTC),
        association_id="before-the-crash",
        calling_ae="CT_SCANNER",
        called_ae=NODE_AE,
        peer_address="127.0.0.1",
        profile=profile,
        size_bytes=incoming.size,
        sop_class_uid=CTImageStorage,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    return spool.publish(incoming, receipt)
