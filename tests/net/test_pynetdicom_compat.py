"""Each reach into pynetdicom's internals still works: a failure here names the one an
upgrade broke (deid_node/net/pynetdicom_compat.py)."""

from __future__ import annotations

import contextlib
import inspect
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config, association, build_context, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from deid_node.intake.connections import PendingConnections
from deid_node.intake.spool import Spool
from deid_node.net import pynetdicom_compat as compat
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series

UNKNOWN_CLASS = "1.2.826.0.1.3680043.10.1234.99.1"  # a private SOP class no dictionary has


@dataclass
class Seen:
    """What the SCP's handlers observed, for the test to check."""

    titles: tuple[str, str] | None = None
    proposed: list[str] = field(default_factory=list)
    no_delay: int | None = None
    timeout: float | None = None
    shared: bool | None = None
    dataset_paths: list[Path] = field(default_factory=list)
    pixel_data: list[bytes] = field(default_factory=list)


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[Callable[..., tuple[compat.GuardedAssociationServer, Seen]]]:
    """An SCP built the node's way, with EVT_REQUESTED doing `on_request(assoc)`."""
    started: list[tuple[AE, compat.GuardedAssociationServer]] = []

    def start(on_request: Callable[[Association], None] = lambda assoc: None) -> Any:
        compat.configure_receiving()
        ae = AE(ae_title="COMPAT_SCP")
        ae.network_timeout = 7
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
        seen = Seen()
        spool = Spool(tmp_path / "spool", tmp_path / "q", max_bytes=10**8, max_object_bytes=10**7)
        spool.prepare()
        compat.route_datasets(ae, spool.open_incoming)

        def requested(event: Event) -> None:
            assoc = event.assoc
            seen.titles = compat.requested_titles(assoc)
            seen.proposed = compat.requested_abstract_syntaxes(assoc)
            compat.set_no_delay(assoc)
            sock = assoc.dul.socket.socket
            seen.no_delay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen.timeout = sock.gettimeout()
            seen.shared = all(
                a is b
                for a, b in zip(assoc.acceptor.supported_contexts, server.contexts, strict=False)
            )
            on_request(assoc)

        def stored(event: Event) -> int:
            seen.dataset_paths.append(Path(event.dataset_path))
            seen.pixel_data.append(pydicom.dcmread(event.dataset_path).PixelData)
            return 0

        handlers = [(evt.EVT_REQUESTED, requested), (evt.EVT_C_STORE, stored)]
        server = compat.start_server(ae, ("127.0.0.1", 0), ssl_context=None, evt_handlers=handlers)
        started.append((ae, server))
        return server, seen

    yield start
    for ae, server in started:
        server.shutdown()
        compat.unroute_datasets(ae)
        assert server not in ae._servers  # shutdown() still removes itself from the AE


def associate(
    server: compat.GuardedAssociationServer, *uids: str, calling: str = "COMPAT_SCU"
) -> Association:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    contexts = [build_context(uid, [ExplicitVRLittleEndian]) for uid in uids]
    host, port = server.server_address[:2]
    return ae.associate(host, port, contexts, ae_title="COMPAT_SCP")


def test_the_flags_configure_sets_are_still_read_by_pynetdicom() -> None:
    compat.configure_receiving()
    assert _config.STORE_RECV_CHUNKED_DATASET is True
    assert "STORE_RECV_CHUNKED_DATASET" in inspect.getsource(dimse_messages)
    assert "_config.LOG_HANDLER_LEVEL" in inspect.getsource(association)


def test_chunked_data_sets_are_written_where_the_factory_says(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]], tmp_path: Path
) -> None:
    # pynetdicom must still create the file by the module-level name we replace.
    assert "NamedTemporaryFile(" in inspect.getsource(dimse_messages)
    server, seen = scp()
    assoc = associate(server, CTImageStorage)
    assert assoc.is_established
    [ds] = ct_series(1, patient=SyntheticPatient.make(PhiTokens(), seed=9), rows=8, cols=8)
    try:
        assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
    assert [p.parent for p in seen.dataset_paths] == [tmp_path / "spool" / "incoming"]


def test_request_details_socket_and_shared_contexts(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]],
) -> None:
    server, seen = scp()
    assoc = associate(server, CTImageStorage, calling="TITLE_X")
    assert assoc.is_established
    assoc.release()
    assert seen.titles == ("TITLE_X", "COMPAT_SCP")
    assert seen.proposed == [CTImageStorage]
    assert seen.no_delay == 1
    assert seen.timeout == 7  # the accepted socket has network_timeout (bpo-7995)
    assert seen.shared is True  # contexts handed over without pynetdicom's deep copy
    assert isinstance(server.contexts, compat.SharedContexts)


def test_reject_request_sends_the_given_result_source_and_reason(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]],
) -> None:
    server, _ = scp(lambda assoc: compat.reject_request(assoc, 0x02, 0x03, 0x02))
    assoc = associate(server, CTImageStorage)
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)


def test_an_unknown_class_can_be_registered_and_accepted_for_one_association(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]],
) -> None:
    assert compat.register_storage_class(UNKNOWN_CLASS, "CompatTestUnknownStorage")
    assert uid_to_service_class(UNKNOWN_CLASS) is StorageServiceClass

    def accept_it(assoc: Association) -> None:
        assert UNKNOWN_CLASS not in compat.supported_abstract_syntaxes(assoc)
        cx = PresentationContext()
        cx.abstract_syntax = UNKNOWN_CLASS
        cx.transfer_syntax = [ExplicitVRLittleEndian]
        compat.add_supported_contexts(assoc, [cx])

    server, _ = scp(accept_it)
    assoc = associate(server, UNKNOWN_CLASS)
    try:
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [UNKNOWN_CLASS]
    finally:
        assoc.release()
    assert UNKNOWN_CLASS not in {str(cx.abstract_syntax) for cx in server.contexts}


def test_two_servers_serve_one_adopted_listening_socket() -> None:
    # The receiving processes all accept on the one socket the node bound (port 0 too).
    compat.configure_receiving()
    listening = socket.create_server(("127.0.0.1", 0))
    servers = []
    for _ in range(2):
        ae = AE(ae_title="COMPAT_SCP")
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
        servers.append(
            compat.start_server(
                ae, ("127.0.0.1", 0), ssl_context=None, evt_handlers=[], sock=listening
            )
        )
    try:
        assert all(s.socket is listening for s in servers)
        assert all(s.server_address == listening.getsockname() for s in servers)
        assert listening.gettimeout() == 0.0  # losing a race for a connection never blocks
        for _ in range(4):
            assoc = associate(servers[0], CTImageStorage)
            assert assoc.is_established
            assoc.release()
    finally:
        for s in servers:
            s.shutdown()  # returns: neither server is stuck in accept()
        listening.close()


def test_the_forwarders_flag_and_response_reads_are_still_where_pynetdicom_has_them() -> None:
    compat.stream_sent_files()
    try:
        assert _config.STORE_SEND_CHUNKED_DATASET is True
        send = inspect.getsource(Association.send_c_store)
        assert "_config.STORE_SEND_CHUNKED_DATASET" in send
        # send_files_with_meta replaces the name send_c_store() finds a file's meta with.
        assert "file_meta, offset = split_dataset(fpath)" in send
        # send_c_store() reads its response with a blocking get_msg; the reactor polls.
        assert "self.dimse.get_msg(block=True)" in send
        assert "self.dimse.get_msg(block=False)" in inspect.getsource(Association._run_reactor)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_reactor_sleeps_and_pdu_reads_are_still_where_the_node_replaces_them() -> None:
    from pynetdicom import dul

    # The waits stand in for these sleeps, looked up in each module's `time` at call time.
    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(dul.DULServiceProvider)
    assert "time.sleep(0.001)" in inspect.getsource(Association._run_reactor)
    # The PDU body is read with one socket.recv(length) whose result is copied at once.
    read = inspect.getsource(dul.DULServiceProvider._read_pdu_data)
    assert "bytestream += self.socket.recv(pdu_length)" in read
    compat.configure_receiving()
    assert isinstance(dul.time, compat._ReactorTime)
    assert isinstance(association.time, compat._ReactorTime)
    assert compat._REACTOR_TIME.monotonic is __import__("time").monotonic


def test_the_nodes_associations_wait_for_work_and_read_pdus_in_bulk(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]], tmp_path: Path
) -> None:
    installed: list[bool] = []
    accepted: list[Association] = []

    def on_request(assoc: Association) -> None:
        accepted.append(assoc)
        installed.append(hasattr(assoc, compat._WAIT_ATTR))
        installed.append(hasattr(assoc.dul, compat._WAIT_ATTR))
        installed.append("recv" in vars(assoc.dul.socket))

    server, seen = scp(on_request)
    assoc = associate(server, CTImageStorage)
    assert assoc.is_established
    # 256 x 256 x 16 bits over PDUs of at most 16 KiB: the data set arrives in many reads.
    [ds] = ct_series(1, patient=SyntheticPatient.make(PhiTokens(), seed=4), rows=256, cols=256)
    try:
        for _ in range(3):
            assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
    assert installed == [True, True, True]
    assert compat.ending(accepted[0]) == "released"  # our A-RELEASE-RP was queued
    assert seen.pixel_data == [ds.PixelData] * 3


def test_pdu_reader_reads_whole_pdus_and_what_came_before_a_close() -> None:
    a, b = socket.socketpair()
    with a, b:
        recv = compat.PduReader(lambda: b)
        big = bytes(range(256)) * (3 * compat.BUFFER_START // 256 + 7)  # grows the buffer
        header = struct.pack(">BBL", 0x04, 0, len(big))
        sender = threading.Thread(target=a.sendall, args=(header + big,))
        sender.start()
        assert bytes(recv(6)) == header
        assert bytes(recv(len(big))) == big
        sender.join()
        a.sendall(b"0123456789")
        a.close()
        assert bytes(recv(100)) == b"0123456789"
        assert bytes(recv(6)) == b""
        assert recv.error is None


@pytest.mark.parametrize(
    ("first", "header", "allowed"),
    [
        (True, (0x01, compat.ASSOCIATE_RQ_LIMIT), True),
        (True, (0x01, compat.ASSOCIATE_RQ_LIMIT + 1), False),
        (True, (0x04, compat.ASSOCIATE_RQ_LIMIT + 1), False),  # the first PDU, whatever type
        (True, (0x01, 0xFFFFFFFF), False),
        (False, (0x04, 16384 + compat.PDU_SLACK), True),
        (False, (0x04, 16384 + compat.PDU_SLACK + 1), False),
        (False, (0x04, 0xFFFFFFFF), False),
        (False, (0x01, compat.ASSOCIATE_RQ_LIMIT + 1), False),
        (False, (0x09, 0xFFFFFFFF), True),  # no PDU type: pynetdicom reads no body, aborts
    ],
)
def test_pdu_reader_refuses_a_pdu_longer_than_allowed(
    first: bool, header: tuple[int, int], allowed: bool
) -> None:
    a, b = socket.socketpair()
    refused: list[str] = []
    with a, b:
        recv = compat.PduReader(lambda: b, lambda: 16384, refused.append)
        if not first:
            a.sendall(struct.pack(">BBL", 0x05, 0, 4) + b"\x00" * 4)  # an A-RELEASE-RQ
            assert len(recv(6)) == 6 and len(recv(4)) == 4
        a.sendall(struct.pack(">BBL", header[0], 0, header[1]) + b"more")
        got = bytes(recv(6))
        if allowed:
            assert got == struct.pack(">BBL", header[0], 0, header[1])
            assert refused == [] and recv.error is None
            return
        assert got == b""  # too short for a header: pynetdicom closes the connection
        assert refused == [recv.error] and "protocol error" in refused[0]
        assert f"declaring {header[1]} bytes" in refused[0]
        assert bytes(recv(4)) == b""  # nothing more is read
        assert b.recv(4) == b"more"


def test_the_pdu_header_is_still_read_as_the_reader_expects() -> None:
    from pynetdicom import dul

    read = inspect.getsource(dul.DULServiceProvider._read_pdu_data)
    # Header first (6 bytes), then the body, only for PDU types 1 to 7 ...
    assert "bytestream.extend(self.socket.recv(6))" in read
    assert "if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):" in read
    # ... and a header too short to unpack ends the connection (Evt17).
    assert "except struct.error:\n            # READ_PDU_EXC_B" in read


def raw_request(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF) + bytes(4096))
    return sock


def closed(sock: socket.socket) -> bytes:
    """What the peer sent before closing (b"" if it reset)."""
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def test_an_oversized_pdu_aborts_before_and_inside_an_association(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]],
) -> None:
    closes: list[Association] = []
    server, _ = scp()
    server.ae.maximum_pdu_size = 16384
    server.bind(evt.EVT_CONN_CLOSE, lambda event: closes.append(event.assoc))
    # Before: the first PDU claims 4 GiB.
    with raw_request(server.server_address[:2]) as sock:
        assert closed(sock) in (b"", bytes.fromhex("07000000000400000206"))
    # Inside: an accepted association's peer sends a P-DATA-TF claiming 4 GiB.
    assoc = associate(server, CTImageStorage)
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    with contextlib.suppress(OSError):
        raw.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + bytes(4096))
    deadline = time.monotonic() + 10
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert assoc.is_aborted
    deadline = time.monotonic() + 10
    while len(closes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    errors = [compat.protocol_error(a) for a in closes]
    assert len(errors) == 2 and all(e and "4294967295" in e for e in errors)
    assert "A-ASSOCIATE-RQ" in str(errors[0]) and "maximum PDU length (16384)" in str(errors[1])


def test_pending_connections_are_bounded_and_given_their_time(
    scp: Callable[..., tuple[compat.GuardedAssociationServer, Seen]],
) -> None:
    """verify_request() closes what is over the bounds at once (long before the 60 s a
    pending connection is given): the newest from an address over its bound, the oldest
    when all are taken; service_actions() closes a connection still sending its request
    when its time is up (before network_timeout, 7 s, would)."""
    timeouts: list[float | None] = []
    server, _ = scp(lambda assoc: timeouts.append(assoc.acse_timeout))
    server.ae.acse_timeout = 90
    server.pending = PendingConnections(60.0, per_peer=2, total=3)
    address = server.server_address[:2]
    assoc = associate(server, CTImageStorage)  # its request arrives at once: pending no more
    assert assoc.is_established
    assoc.release()
    assert timeouts == [90]  # acse_timeout again once the request arrived

    def connect(source: str) -> socket.socket:
        sock = socket.socket()
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(address)
        return sock

    socks = [connect("127.0.0.2") for _ in range(3)]  # the third is over the per-peer bound
    socks.append(connect("127.0.0.3"))
    socks.append(connect("127.0.0.4"))  # over the total: the oldest makes room
    try:
        assert closed(socks[2]) == b"" and closed(socks[0]) == b""
        assert len(server.pending) == 3
        server.pending = PendingConnections(1.0, per_peer=2, total=3)
        slow = connect("127.0.0.5")
        socks.append(slow)
        slow.sendall(b"\x01")  # a request begun and never finished: its thread waits in recv
        assert closed(slow) == b""
        assert len(server.pending) == 0
    finally:
        for sock in socks:
            sock.close()
