"""DICOM TLS end to end: a throwaway CA made with openssl, mutual TLS from pynetdicom and dcmtk.

Every certificate here is made by the test (2 days, RSA 2048, in a tmp folder); none is real.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.association import Association

from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import write_files
from tests.support.datasets import small_ct
from tests.support.dcmtk import ECHOSCU, STORESCU, run_dcmtk
from tests.support.node import (
    IDLE,
    ONE_SOURCE,
    audit_associations,
    audit_objects,
    expected_output,
    node_table,
    output_sops,
)
from tests.support.pki import Pki, client_context, tls_table
from tests.support.scu import NODE_AE, associate, echo

CLOSED_WITHIN = 30.0  # seconds a socket may take to be dropped (network_timeout is 1-2 s)


@pytest.fixture
def tls_node(
    pki: Pki, write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> tuple[Config, Node]:
    cfg = write_config(node_table() + tls_table(pki) + ONE_SOURCE)
    return cfg, start_node(cfg)


def _node_side(record: logging.LogRecord) -> bool:
    """Tag a record with whether the node (not the test's SCU) logged it; always keep it.

    Both ends use the same pynetdicom loggers in this process: the emitting thread tells
    them apart (acceptor associations, their DUL threads and the server are the node's).
    """
    thread = threading.current_thread()
    assoc = thread if isinstance(thread, Association) else getattr(thread, "assoc", None)
    if isinstance(assoc, Association):
        node = assoc.mode == "acceptor"
    else:
        node = thread.name.startswith(("AcceptorServer", "deid")) or record.name.startswith(
            "deid_node"
        )
    record.node_side = node
    return True


@pytest.fixture
def node_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at INFO, its records tagged with ``node_side``."""
    caplog.set_level(logging.INFO, logger="deid_node")
    caplog.handler.addFilter(_node_side)
    yield caplog
    caplog.handler.removeFilter(_node_side)


def assert_no_node_tracebacks(log: pytest.LogCaptureFixture) -> None:
    """The node logged no traceback: a refused handshake is routine, not a crash."""
    bad = [
        r
        for r in log.records
        if getattr(r, "node_side", False) and (r.exc_info or r.exc_text or r.stack_info)
    ]
    assert bad == [], [f"{r.threadName} {r.name}: {r.getMessage()}" for r in bad]


# --------------------------------------------------------------------------------------------
# pynetdicom as the peer


def test_mutual_tls_echo_and_store_are_processed_and_audited(
    pki: Pki, tls_node: tuple[Config, Node], node_log: pytest.LogCaptureFixture
) -> None:
    cfg, node = tls_node
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    datasets = small_ct(4, seed=21)

    assert echo(node.address, "CT_SCANNER", tls=ctx) == 0
    assoc = associate(node.address, "CT_SCANNER", [CTImageStorage], tls=ctx)
    assert assoc.is_established
    try:
        assert isinstance(assoc.dul.socket.socket, ssl.SSLSocket)
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * 4
    finally:
        assoc.release()
    assert node.wait_idle(IDLE)

    assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", datasets)
    rows = audit_objects(cfg)
    assert [r["status"] for r in rows] == ["stored"] * 4
    assert {r["calling_ae"] for r in rows} == {"CT_SCANNER"}
    outcomes = Counter(
        (a["calling_ae"], a["objects"], a["outcome"]) for a in audit_associations(cfg)
    )
    assert outcomes == {("CT_SCANNER", 0, "released"): 1, ("CT_SCANNER", 4, "released"): 1}
    assert_no_node_tracebacks(node_log)


def test_plaintext_association_to_the_tls_port_fails_and_tls_still_works(
    pki: Pki, tls_node: tuple[Config, Node], node_log: pytest.LogCaptureFixture
) -> None:
    cfg, node = tls_node
    plain = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert not plain.is_established
    assert (
        echo(node.address, "CT_SCANNER", tls=client_context(pki, pki.client_cert, pki.client_key))
        == 0
    )
    assert node.wait_idle(IDLE)
    # No association was ever negotiated in clear, so none was audited but the TLS one.
    assert [a["outcome"] for a in audit_associations(cfg)] == ["released"]
    assert_no_node_tracebacks(node_log)


@pytest.mark.parametrize("client", ["no certificate", "rogue self-signed certificate"])
def test_client_without_a_trusted_certificate_cannot_associate(
    pki: Pki, tls_node: tuple[Config, Node], client: str, node_log: pytest.LogCaptureFixture
) -> None:
    cfg, node = tls_node
    if client == "no certificate":
        ctx = client_context(pki, None, None)
    else:
        ctx = client_context(pki, pki.rogue_cert, pki.rogue_key)
    refused = associate(node.address, "CT_SCANNER", [CTImageStorage], tls=ctx)
    if refused.is_established:  # never expected: do not leave it open if it happens
        refused.abort()
    assert not refused.is_established
    assert (
        echo(node.address, "CT_SCANNER", tls=client_context(pki, pki.client_cert, pki.client_key))
        == 0
    )
    assert node.wait_idle(IDLE)
    assert [a["outcome"] for a in audit_associations(cfg)] == ["released"]
    assert_no_node_tracebacks(node_log)


def test_idle_tcp_connection_to_the_tls_port_does_not_block_others(
    pki: Pki,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    node_log: pytest.LogCaptureFixture,
) -> None:
    """A peer that connects and never starts the TLS handshake is dropped after
    network_timeout, and meanwhile others still associate."""
    cfg = write_config(
        node_table().replace("network_timeout = 15", "network_timeout = 2")
        + tls_table(pki)
        + ONE_SOURCE
    )
    node = start_node(cfg)
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    with socket.create_connection(node.address, timeout=CLOSED_WITHIN) as idle:
        assert (
            echo(node.address, "CT_SCANNER", tls=ctx) == 0
        )  # served while the idle peer is connected
        with contextlib.suppress(ConnectionResetError):  # reset or EOF: the node closed it
            assert idle.recv(1) == b"", "the node sent data to a peer that never said hello"
    assert echo(node.address, "CT_SCANNER", tls=ctx) == 0
    assert node.wait_idle(IDLE)
    assert_no_node_tracebacks(node_log)


# --------------------------------------------------------------------------------------------
# dcmtk as the peer


def _dcmtk_lacks_tls() -> str | None:
    shown = run_dcmtk(STORESCU, "--help")
    if "--enable-tls" not in shown.stdout + shown.stderr:
        return f"{STORESCU} was built without TLS support (no --enable-tls option)"
    return None


@pytest.mark.dcmtk
def test_dcmtk_storescu_and_echoscu_over_tls(
    dcmtk: None, pki: Pki, tls_node: tuple[Config, Node], tmp_path: Path
) -> None:
    reason = _dcmtk_lacks_tls()
    if reason:
        pytest.skip(reason)
    cfg, node = tls_node
    host, port = node.address
    datasets = small_ct(5, seed=31)
    files = write_files(datasets, tmp_path / "send")
    tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)]
    where = ["-aet", "CT_SCANNER", "-aec", NODE_AE, host, str(port)]

    echoed = run_dcmtk(ECHOSCU, *tls, *where)
    assert echoed.returncode == 0, echoed.stderr
    sent = run_dcmtk(STORESCU, *tls, *where, *map(str, files))
    assert sent.returncode == 0, sent.stderr
    # Without a client certificate, or in clear, dcmtk gets nowhere either.
    anonymous = run_dcmtk(ECHOSCU, "+tla", "+cf", str(pki.ca_cert), *where)
    assert anonymous.returncode != 0
    plain = run_dcmtk(ECHOSCU, *where)
    assert plain.returncode != 0
    assert node.wait_idle(IDLE)

    assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", datasets)
    assert Counter(r["status"] for r in audit_objects(cfg)) == {"stored": 5}
    outcomes = Counter((a["calling_ae"], a["outcome"]) for a in audit_associations(cfg))
    assert outcomes == {("CT_SCANNER", "released"): 2}
