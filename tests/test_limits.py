"""Idle and stalled peers are dropped after the configured timeouts, and free their slot.

The node runs with max_associations = 1, network_timeout = 1 s and acse_timeout = 2 s; each
test holds the only slot with a peer that stops talking, waits (bounded, far above the
timeouts) for the node to close it, then checks that a new association is served.

Which timer applies: silence before any A-ASSOCIATE-RQ is the ARTIM timer (acse_timeout,
PS3.8 9.1.5); a PDU that stops half way is a socket read (network_timeout); an established
association with no traffic is pynetdicom's idle timer (network_timeout, then A-ABORT).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context

from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.conftest import (
    NODE_AE,
    VERIFICATION,
    audit_associations,
    echo,
    node_table,
    store,
    wait_for,
)

IDLE = 60.0
CLOSED_WITHIN = 30.0  # a generous bound: the timeouts below are 1-2 s

SOURCES = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
"""


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
    cfg = write_config(table + SOURCES)
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
