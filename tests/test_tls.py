"""DICOM TLS end to end: a throwaway CA made with openssl, mutual TLS from pynetdicom and dcmtk.

Every certificate here is made by the test (2 days, RSA 2048, in a tmp folder); none is real.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from deid_node.config import Config
from deid_node.deid.pseudonym import pseudo_uid
from deid_node.net.pynetdicom_compat import only_senders_take_responses
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, write_files
from tests.conftest import (
    ECHOSCU,
    NODE_AE,
    STORESCU,
    VERIFICATION,
    audit_associations,
    audit_objects,
    files_under,
    node_table,
)

OPENSSL = "/usr/bin/openssl"
IDLE = 60.0  # generous bound, only reached when something is broken
CLOSED_WITHIN = 30.0  # seconds a socket may take to be dropped (network_timeout is 1-2 s)

SOURCES = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
record_linkage = true
"""

# A config of our own for `openssl req`/`x509`, so the distribution's default extensions
# (which differ between versions) cannot add to or clash with the ones the test asks for.
OPENSSL_CNF = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[rogue]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class Pki:
    """The test's throwaway CA and the certificates it issued (plus a rogue one)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cnf: Path) -> None:
    done = subprocess.run(
        [OPENSSL, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "OPENSSL_CONF": str(cnf)},
    )
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Make the CA, a server certificate for localhost/127.0.0.1 and two client certificates."""
    if not Path(OPENSSL).exists():
        pytest.skip(f"{OPENSSL} not found: install openssl")
    d = tmp_path_factory.mktemp("pki")
    cnf = d / "openssl.cnf"
    cnf.write_text(OPENSSL_CNF, encoding="utf-8")
    common = ["-newkey", "rsa:2048", "-nodes", "-config", str(cnf)]

    def self_signed(name: str, cn: str, ext: str) -> tuple[Path, Path]:
        cert, key = d / f"{name}.crt", d / f"{name}.key"
        _openssl(
            "req", "-x509", *common, "-days", "2", "-subj", f"/CN={cn}",
            "-extensions", ext, "-keyout", str(key), "-out", str(cert), cnf=cnf,
        )  # fmt: skip
        return cert, key

    def issued(name: str, cn: str, ext: str, serial: int) -> tuple[Path, Path]:
        cert, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
        _openssl(
            "req", "-new", *common, "-subj", f"/CN={cn}", "-keyout", str(key),
            "-out", str(csr), cnf=cnf,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", str(serial), "-days", "2", "-extfile", str(cnf),
            "-extensions", ext, "-out", str(cert), cnf=cnf,
        )  # fmt: skip
        return cert, key

    ca_cert, ca_key = self_signed("ca", "deid-node test CA", "ca")
    server_cert, server_key = issued("server", "localhost", "server", 1001)
    client_cert, client_key = issued("client", "CT_SCANNER", "client", 1002)
    rogue_cert, rogue_key = self_signed("rogue", "CT_SCANNER", "rogue")
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key)


def tls_table(pki: Pki, *, require_client_cert: bool = True) -> str:
    return f"""
[node.tls]
certificate = "{pki.server_cert}"
key = "{pki.server_key}"
ca_bundle = "{pki.ca_cert}"
require_client_cert = {"true" if require_client_cert else "false"}
"""


def client_context(pki: Pki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting `cert` (None: no certificate)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_associate(
    address: tuple[str, int],
    ctx: ssl.SSLContext | None,
    sop_classes: tuple[str, ...] = (CTImageStorage,),
    calling_ae: str = "CT_SCANNER",
) -> Association:
    """An association over TLS (ctx) or plain TCP (ctx None) proposing Verification too."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 15
    ae.connection_timeout = 15
    contexts = [build_context(uid) for uid in dict.fromkeys([VERIFICATION, *sop_classes])]
    tls_args = (ctx, "localhost") if ctx is not None else None
    assoc = ae.associate(address[0], address[1], contexts, ae_title=NODE_AE, tls_args=tls_args)
    if assoc.is_established:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        only_senders_take_responses(assoc)
    return assoc


def tls_echo(address: tuple[str, int], ctx: ssl.SSLContext | None) -> int:
    """C-ECHO on a fresh association; the status, or -1 if none was established."""
    assoc = tls_associate(address, ctx, ())
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def small_ct(n: int, seed: int) -> list[Dataset]:
    patient = SyntheticPatient.make(PhiTokens(), seed=seed)
    return ct_series(n, patient=patient, rows=16, cols=16, seed=seed)


def expected_output(cfg: Config, datasets: list[Dataset]) -> set[str]:
    key = cfg.node.secret_path.read_bytes()
    return {pseudo_uid(key, "research", str(ds.SOPInstanceUID)) for ds in datasets}


def output_sops(cfg: Config) -> set[str]:
    return {p.stem for p in files_under(cfg.node.output / "research", "*.dcm")}


@pytest.fixture
def tls_node(
    pki: Pki, write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> tuple[Config, Node]:
    cfg = write_config(node_table() + tls_table(pki) + SOURCES)
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

    assert tls_echo(node.address, ctx) == 0
    assoc = tls_associate(node.address, ctx)
    assert assoc.is_established
    try:
        assert isinstance(assoc.dul.socket.socket, ssl.SSLSocket)
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * 4
    finally:
        assoc.release()
    assert node.wait_idle(IDLE)

    assert output_sops(cfg) == expected_output(cfg, datasets)
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
    plain = tls_associate(node.address, None)
    assert not plain.is_established
    assert tls_echo(node.address, client_context(pki, pki.client_cert, pki.client_key)) == 0
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
    refused = tls_associate(node.address, ctx)
    if refused.is_established:  # never expected: do not leave it open if it happens
        refused.abort()
    assert not refused.is_established
    assert tls_echo(node.address, client_context(pki, pki.client_cert, pki.client_key)) == 0
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
        + SOURCES
    )
    node = start_node(cfg)
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    with socket.create_connection(node.address, timeout=CLOSED_WITHIN) as idle:
        assert tls_echo(node.address, ctx) == 0  # served while the idle peer is connected
        with contextlib.suppress(ConnectionResetError):  # reset or EOF: the node closed it
            assert idle.recv(1) == b"", "the node sent data to a peer that never said hello"
    assert tls_echo(node.address, ctx) == 0
    assert node.wait_idle(IDLE)
    assert_no_node_tracebacks(node_log)


# --------------------------------------------------------------------------------------------
# dcmtk as the peer


def _dcmtk(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [str(tool), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _dcmtk_lacks_tls() -> str | None:
    shown = _dcmtk(STORESCU, "--help")
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

    echoed = _dcmtk(ECHOSCU, *tls, *where)
    assert echoed.returncode == 0, echoed.stderr
    sent = _dcmtk(STORESCU, *tls, *where, *map(str, files))
    assert sent.returncode == 0, sent.stderr
    # Without a client certificate, or in clear, dcmtk gets nowhere either.
    anonymous = _dcmtk(ECHOSCU, "+tla", "+cf", str(pki.ca_cert), *where)
    assert anonymous.returncode != 0
    plain = _dcmtk(ECHOSCU, *where)
    assert plain.returncode != 0
    assert node.wait_idle(IDLE)

    assert output_sops(cfg) == expected_output(cfg, datasets)
    assert Counter(r["status"] for r in audit_objects(cfg)) == {"stored": 5}
    outcomes = Counter((a["calling_ae"], a["outcome"]) for a in audit_associations(cfg))
    assert outcomes == {("CT_SCANNER", "released"): 2}
