"""Idle and stalled peers are dropped after the configured timeouts, and free their slot.

The node runs with max_associations = 1, network_timeout = 1 s and acse_timeout = 2 s; each
test holds the only slot with a peer that stops talking, waits (bounded, far above the
timeouts) for the node to close it, then checks that a new association is served.

Which timer applies: silence before any A-ASSOCIATE-RQ is the ARTIM timer (acse_timeout,
PS3.8 9.1.5); a PDU that stops half way is a socket read (network_timeout); an established
association with no traffic is pynetdicom's idle timer (network_timeout, then A-ABORT).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from deid_node.config import Config
from deid_node.errors import ConfigError
from deid_node.intake.connections import PendingConnections
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.dcmtk import ECHOSCU, run_dcmtk
from tests.support.node import CT_SOURCE, IDLE, audit_associations, node_table
from tests.support.scu import NODE_AE, VERIFICATION, echo, store
from tests.support.waiting import wait_for

CLOSED_WITHIN = 30.0  # a generous bound: the timeouts below are 1-2 s


@pytest.fixture
def limited_node(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> tuple[Config, Node]:
    table = (
        node_table()
        .replace("max_associations = 8", "max_associations = 1")
        .replace("network_timeout = 15", "network_timeout = 1")
        .replace("acse_timeout = 10", "acse_timeout = 2")
    )
    cfg = write_config(table + CT_SOURCE)
    return cfg, start_node(cfg)


def closed_by_peer(sock: socket.socket) -> bool:
    """Read until the node closes the connection (EOF or reset); False on our timeout."""
    sock.settimeout(CLOSED_WITHIN)
    try:
        while sock.recv(4096):
            pass  # an A-ABORT or A-ASSOCIATE-RJ may come first
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def assert_serves(node: Node) -> None:
    """The (only) slot is freed and then used: a C-ECHO and a C-STORE go through."""
    # The node's side of a dropped association may end a moment after the peer saw the
    # abort or the close: wait (bounded) until the node has no association open.
    assert node.wait_idle(IDLE), "the node never ended the dropped association"
    assert echo(node.address, "CT_SCANNER") == 0
    patient = SyntheticPatient.make(PhiTokens(), seed=41)
    datasets = ct_series(2, patient=patient, rows=16, cols=16, seed=41)
    assert store(node.address, datasets, "CT_SCANNER") == [0, 0]
    assert node.wait_idle(IDLE)


def test_connection_that_sends_nothing_is_closed(limited_node: tuple[Config, Node]) -> None:
    _, node = limited_node
    with socket.create_connection(node.address, timeout=CLOSED_WITHIN) as idle:
        assert closed_by_peer(idle), "the node kept a silent connection open"
    assert_serves(node)


def test_connection_that_stalls_inside_a_pdu_is_closed(limited_node: tuple[Config, Node]) -> None:
    """The start of an A-ASSOCIATE-RQ (type 1, 200 bytes announced, 2 sent), then nothing."""
    _, node = limited_node
    with socket.create_connection(node.address, timeout=CLOSED_WITHIN) as stalled:
        stalled.sendall(struct.pack(">BBL", 0x01, 0x00, 200) + b"\x00\x01")
        assert closed_by_peer(stalled), "the node waited forever for the rest of the PDU"
    assert_serves(node)


def test_established_association_left_idle_is_aborted(limited_node: tuple[Config, Node]) -> None:
    """A pynetdicom SCU associates, then sends nothing more: aborted after network_timeout."""
    _, node = limited_node
    ae = AE(ae_title="CT_SCANNER")
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = None  # the SCU waits forever: only the node may end this
    contexts = [build_context(VERIFICATION), build_context(CTImageStorage)]
    assoc = ae.associate(*node.address, contexts, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        wait_for(lambda: not assoc.is_alive(), CLOSED_WITHIN, "the node to drop the idle SCU")
        assert assoc.is_aborted
    finally:
        if assoc.is_alive():
            assoc.abort()
    assert_serves(node)


def test_associations_back_to_back_reuse_the_only_slot(limited_node: tuple[Config, Node]) -> None:
    """A sender that associates again as soon as its release is answered is never refused.

    Modalities often send one association per image. pynetdicom counts association
    threads, and the thread of a released association lives on a moment after the
    A-RELEASE-RP: the node must count the association, not the thread.
    """
    cfg, node = limited_node
    patient = SyntheticPatient.make(PhiTokens(), seed=43)
    for i, ds in enumerate(ct_series(10, patient=patient, rows=16, cols=16, seed=43)):
        assert echo(node.address, "CT_SCANNER") == 0, f"echo association {i} refused"
        assert store(node.address, [ds], "CT_SCANNER") == [0], f"store association {i} refused"
    assert node.wait_idle(IDLE)
    rejected = [a for a in audit_associations(cfg) if a["outcome"] == "rejected"]
    assert rejected == []


# --------------------------------------------------------------------------------------------
# Hostile senders: what a PDU header declares, connections that never associate
#
# One receiving process (its resident memory is read from /proc), 8 associations (so at
# most 8 pending connections per address and 32 in all), 2 s to send an A-ASSOCIATE-RQ.
# acse_timeout is long: without the bounds, silent connections would be held that long.

MIB = 1 << 20
STREAM_BYTES = 200 * MIB  # what a hostile peer tries to send into one PDU
MEMORY_BOUND = 50 * MIB  # what the receiving process may grow by meanwhile
SILENT = 1000


@pytest.fixture
def hostile_node(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> tuple[Config, Node, int]:
    table = (
        node_table()
        .replace("workers = 2", "workers = 1\nreceivers = 1\nrequest_timeout = 2")
        .replace("acse_timeout = 10", "acse_timeout = 120")
    )
    cfg = write_config(table + CT_SOURCE)
    node = start_node(cfg)
    [receiver] = [p for p in multiprocessing.active_children() if p.name == "deid-receiver-0"]
    assert receiver.pid is not None
    return cfg, node, receiver.pid


def resident(pid: int) -> int:
    """Resident memory of a process (VmRSS), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def associate_raw(address: tuple[str, int]) -> socket.socket:
    """An association opened over a raw socket (A-ASSOCIATE-RQ sent, A-ASSOCIATE-AC read)."""
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title = "CT_SCANNER"
    rq.called_ae_title = NODE_AE
    cx = build_context(VERIFICATION)
    cx.context_id = 1
    rq.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    rq.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    sock = socket.create_connection(address, timeout=CLOSED_WITHIN)
    sock.sendall(pdu.encode())
    pdu_type, _, length = struct.unpack(">BBL", read_exactly(sock, 6))
    read_exactly(sock, length)
    assert pdu_type == 0x02, f"association not accepted (PDU type 0x{pdu_type:02X})"
    return sock


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the node closed the connection"
        data += chunk
    return data


def stream_into(sock: socket.socket, header: bytes) -> int:
    """Send `header`, then zeros until STREAM_BYTES or the node stops taking them."""
    sent = 0
    chunk = bytes(MIB)
    try:
        sock.sendall(header)
        while sent < STREAM_BYTES:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the node aborted: nothing more goes in
    return sent


@pytest.mark.parametrize("inside", [False, True], ids=["first PDU", "inside an association"])
def test_a_pdu_declaring_4_gib_is_aborted_and_costs_no_memory(
    hostile_node: tuple[Config, Node, int], inside: bool
) -> None:
    """As the A-ASSOCIATE-RQ itself (before any AE title is checked) or as a P-DATA-TF of
    an accepted association: the node aborts at once and buffers nothing of it."""
    cfg, node, pid = hostile_node
    before = resident(pid)
    if inside:
        sock = associate_raw(node.address)
        header = struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF)
    else:
        sock = socket.create_connection(node.address, timeout=CLOSED_WITHIN)
        header = struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF)
    with sock:
        sent = stream_into(sock, header)
        grown = resident(pid) - before  # measured while the connection is still ours
        assert grown < MEMORY_BOUND, f"the receiving process grew by {grown // MIB} MiB"
        assert sent < STREAM_BYTES, "the node read on into a PDU longer than it allows"
        assert closed_by_peer(sock)

    def audited() -> list[dict[str, object]]:
        outcome = "aborted" if inside else "rejected"
        return [
            a
            for a in audit_associations(cfg)
            if a["outcome"] == outcome and "protocol error" in str(a["reason"])
        ]

    wait_for(lambda: len(audited()) == 1, IDLE, "the protocol error in the audit")
    assert "4294967295 bytes" in str(audited()[0]["reason"])
    assert audited()[0]["peer_address"] == "127.0.0.1"
    assert node.wait_idle(IDLE)
    assert echo(node.address, "CT_SCANNER") == 0


def open_by_node(socks: list[socket.socket]) -> list[socket.socket]:
    """The connections the node has not closed (no EOF, no reset waiting to be read)."""
    still = []
    for sock in socks:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue
        except BlockingIOError:
            still.append(sock)
        except OSError:
            continue
    return still


@pytest.mark.slow
def test_silent_connections_are_bounded_and_dropped_while_echoscu_answers(
    hostile_node: tuple[Config, Node, int], dcmtk: None
) -> None:
    """1000 connections that never send a byte, half from 127.0.0.2 (8 may be pending per
    address), half from 100 other addresses (32 in all): all but 32 are closed as they
    come, those after request_timeout; dcmtk's echoscu from 127.0.0.1 is answered
    meanwhile, and the receiving process holds no memory for them."""
    _, node, pid = hostile_node
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SILENT + 200
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    count = min(SILENT, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    before = resident(pid)
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(CLOSED_WITHIN)
            sock.bind(("127.0.0.2" if i < count // 2 else f"127.0.1.{1 + i % 100}", 0))
            sock.connect(node.address)
        wait_for(
            lambda: len(open_by_node(socks)) <= 32, CLOSED_WITHIN, "the node to close all but 32"
        )
        grown = resident(pid) - before
        assert grown < MEMORY_BOUND, f"{count} connections took {grown // MIB} MiB"
        timeouts = ["-to", "30", "-ta", "30", "-td", "30"]
        where = ["-aet", "CT_SCANNER", "-aec", NODE_AE, *map(str, node.address)]
        echoed = run_dcmtk(ECHOSCU, *timeouts, *where, timeout=IDLE)
        assert echoed.returncode == 0, echoed.stderr
        wait_for(lambda: not open_by_node(socks), CLOSED_WITHIN, "request_timeout to drop them")
    finally:
        for sock in socks:
            sock.close()
    assert node.wait_idle(IDLE)
    after = resident(pid) - before
    assert after < MEMORY_BOUND, f"{after // MIB} MiB still held after the connections closed"
    assert echo(node.address, "CT_SCANNER") == 0


def test_request_timeout_is_validated(write_config: Callable[[str], Config]) -> None:
    with pytest.raises(ConfigError, match=r"node\.request_timeout.*>= 0\.5"):
        write_config(node_table() + "request_timeout = 0\n" + CT_SOURCE)
    with pytest.raises(ConfigError, match=r"node\.request_timeout"):
        write_config(node_table() + "request_timeout = nan\n" + CT_SOURCE)
    assert write_config(node_table() + CT_SOURCE).node.request_timeout == 5.0


def test_pending_connections_bookkeeping(caplog: pytest.LogCaptureFixture) -> None:
    """Bounds per address and in all, the time to associate, and one log line for a flood."""
    clock = [0.0]
    gone: set[str] = set()
    pending = PendingConnections(
        2.0, per_peer=2, total=3, closed=lambda key: key in gone, clock=lambda: clock[0]
    )
    caplog.set_level(logging.WARNING, logger="deid_node.intake.connections")
    assert pending.admit("a1", "10.0.0.1") == pending.admit("a2", "10.0.0.1") == (True, [])
    assert pending.admit("a3", "10.0.0.1") == (False, [])  # one address over its bound
    assert pending.admit("b1", "10.0.0.2") == (True, [])
    assert pending.admit("c1", "10.0.0.3") == (True, ["a1"])  # all taken: the oldest goes
    pending.associated("a2")  # its A-ASSOCIATE-RQ arrived
    gone.add("b1")  # it closed by itself: neither counted nor reported
    assert pending.admit("c2", "10.0.0.3") == (True, []) and len(pending) == 2
    for i in range(100):
        pending.admit(f"d{i}", "10.0.0.4")
    clock[0] = 1.9
    assert pending.expired() == []
    clock[0] = 2.0
    assert sorted(map(str, pending.expired())) == ["c2", "d0", "d1"]
    assert len(pending) == 0
    clock[0] = 20.0
    assert pending.expired() == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # the first drop at once, the rest summed up
    assert "10.0.0.1: 1 over the limit of 2 pending per address" in lines[0]
    assert lines[1].startswith("closed 103 connection(s) before an association, from ")
    assert "3 no A-ASSOCIATE-RQ within 2 s" in lines[1]


FRAGMENTED = """
import sys
from pathlib import Path
from deid_node.allocator import give_back_freed_memory, hold_freed_memory

def resident():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

hold_freed_memory()
blocks, pins = [], []
for _ in range(3000):  # 64 KiB blocks, each followed by a small one that stays
    blocks.append(bytearray(64 * 1024))
    pins.append(bytearray(100))
held = resident()
del blocks  # freed between the pins: free() cannot shrink the heap
freed = resident()
assert give_back_freed_memory()
print(held, freed, resident())
"""


def test_freed_memory_goes_back_to_the_kernel() -> None:
    """What a crowd of connections freed is resident no more after give_back_freed_memory
    (the receiving process calls it when many association threads have ended)."""
    run = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, timeout=IDLE
    )
    assert run.returncode == 0, run.stderr
    held, freed, after = map(int, run.stdout.split())
    assert freed - after > 150 * MIB, (held // MIB, freed // MIB, after // MIB)
