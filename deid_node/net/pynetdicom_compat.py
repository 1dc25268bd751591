"""Every reach into pynetdicom beyond its documented API, in one place.

Each one is here because the public API cannot do what the node needs (say which, and
why, beside it), and each has a test in tests/net/test_pynetdicom_compat.py that fails when a
pynetdicom upgrade breaks it; tests/test_private_names.py fails if any other module of
deid_node reaches a private pynetdicom name. Importing this module changes nothing in
pynetdicom: a process that receives calls :func:`configure_receiving` at its start, one
that forwards :func:`configure_sending`; the supervisor and offline runs call neither.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
import types
import weakref
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Final, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom import association as _association_module
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom import dul as _dul_module
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT, A_RELEASE
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

# --------------------------------------------------------------------------------------------
# Process-wide settings (pynetdicom._config: module globals, no API to set them), set by
# each process at its start, never on import: the supervisor imports the receiving and
# forwarding code too, and must not change how pynetdicom behaves in its own process.


def configure_receiving() -> None:
    """For a receiving process, first thing: C-STORE data sets go to disk in chunks (see
    :func:`route_datasets`), no per-message logging of UIDs, reactors that wake on work."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to disk, never whole in memory
    _quiet_and_quick()


def configure_sending() -> None:
    """For the forwarding process, first thing: files are streamed as they are
    (:func:`stream_sent_files`), no per-message logging of UIDs, reactors that wake on work."""
    stream_sent_files()
    _quiet_and_quick()


def stream_sent_files() -> None:
    """A file path given to send_c_store() is streamed from disk as it is, not decoded and
    encoded again (STORE_SEND_CHUNKED_DATASET)."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def _quiet_and_quick() -> None:
    _config.LOG_HANDLER_LEVEL = "none"  # the standard handlers log UIDs at DEBUG
    # Both reactor modules look time.sleep up at call time: see "Reactor wake-ups".
    for module in (_dul_module, _association_module):
        if not isinstance(getattr(module, "time", None), _ReactorTime):
            module.time = _REACTOR_TIME  # type: ignore[attr-defined]


def patched_settings() -> dict[str, str]:
    """Everything in pynetdicom that this module may change process-wide, as it stands
    now: one line each (tests compare a fresh process with one that configured)."""
    names = {
        _config: ("STORE_RECV_CHUNKED_DATASET", "STORE_SEND_CHUNKED_DATASET", "LOG_HANDLER_LEVEL"),
        _dul_module: ("time",),
        _association_module: ("time", "split_dataset"),
        _dimse_messages: ("NamedTemporaryFile",),
    }
    out = {}
    for module, attributes in names.items():
        for name in attributes:
            value = getattr(module, name, None)
            # (The reactor's stand-in for time forwards every attribute: its type tells.)
            if isinstance(value, types.FunctionType):
                shown = f"{value.__module__}.{value.__qualname__}"
            elif isinstance(value, types.ModuleType):
                shown = f"module {value.__name__}"
            else:
                shown = repr(value) if isinstance(value, bool | str) else type(value).__name__
            out[f"{module.__name__}.{name}"] = shown
    return out


# --------------------------------------------------------------------------------------------
# Reactor wake-ups
#
# Each association has two threads that poll. The DUL thread sleeps 1 ms whenever its socket
# had nothing to read and no primitive was queued for it to send; the association thread
# sleeps 1 ms between looks at the DIMSE message queue. One CT slice from storescu crosses
# those sleeps several times (each PDU the sender has not finished writing, the decoded
# message, the response to send), and they, not CPU, set how fast a bare pynetdicom SCP
# receives. For the node's own associations a sleep becomes a wait that ends early when
# there is work: the DUL thread waits on its socket and on an eventfd written whenever a
# primitive is queued for it; the association thread on an Event set whenever a DIMSE
# message or an ACSE primitive is queued for it. A wait never lasts longer than the sleep
# it replaces, so pynetdicom's loops run exactly as before, only without the idle latency.

_WAIT_ATTR: Final = "_deid_node_wait"


class _ReactorTime:
    """Stands in for the time module inside pynetdicom.dul and pynetdicom.association."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """time.sleep, or the calling reactor thread's early-ending wait."""
        wait = getattr(threading.current_thread(), _WAIT_ATTR, None)
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


_REACTOR_TIME: Final = _ReactorTime()


def _hook_put(
    q: Any,
    *,
    before: Callable[[Any], None] | None = None,
    after: Callable[[], None] | None = None,
) -> None:
    """Call before(item) ahead of, and after() behind, every put() on this queue
    (put_nowait() calls put()). Hooks installed later wrap the earlier ones."""
    put = q.put

    def hooked(item: Any, block: bool = True, timeout: float | None = None) -> None:
        if before is not None:
            before(item)
        put(item, block, timeout)
        if after is not None:
            after()

    q.put = hooked


def install_wakeups(assoc: Association) -> None:
    """Give this association's two reactor threads waits that end when work arrives.

    Call before the association starts (its threads look the wait up at every sleep).
    Where there is no eventfd (not Linux) the sleeps stay as they are.
    """
    if not hasattr(os, "eventfd"):
        return
    dul = assoc.dul
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    # Closed only once nothing can write it any more: a number closed early could be
    # reused by a spool file, and a late wake-up would write 8 bytes into that file.
    weakref.finalize(dul, os.close, efd)

    def wake_dul() -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(efd, 1)

    def dul_wait(seconds: float) -> None:
        fds: list[Any] = [efd]
        transport = dul.socket
        raw = getattr(transport, "socket", None)
        # A socket pynetdicom considers closed may read as ready forever: not waited on.
        if raw is not None and getattr(transport, "_is_connected", False):
            fds.append(raw)
        try:
            ready, _, _ = select.select(fds, [], [], seconds)
        except (OSError, ValueError):  # the socket was closed under us
            time.sleep(seconds)
            return
        if efd in ready:
            with contextlib.suppress(OSError):
                os.eventfd_read(efd)

    work = threading.Event()

    def assoc_wait(seconds: float) -> None:
        work.wait(seconds)
        work.clear()  # before the loop looks at its queues: no wake-up is lost

    _hook_put(dul.to_provider_queue, after=wake_dul)
    _hook_put(dul.to_user_queue, after=work.set)
    _hook_put(assoc.dimse.msg_queue, after=work.set)
    setattr(dul, _WAIT_ATTR, dul_wait)
    setattr(assoc, _WAIT_ATTR, assoc_wait)


# --------------------------------------------------------------------------------------------
# Reading PDUs
#
# AssociationSocket.recv reads a PDU 4 KiB at a time: 130 recv() calls for one CT slice,
# each a system call (costly in a VM) and a copy into a growing bytearray. The node's
# sockets read into one buffer per association, reused for every PDU, as much as the
# kernel has and the PDU still needs. The caller (DULServiceProvider._read_pdu_data) copies
# what it gets at once, so a view of that buffer is enough; a fresh buffer per PDU would
# cost a page fault per 4 KiB, as the allocator hands large blocks back to the kernel.
# The buffer is made on the first read and grows as data arrives: a connection that sends
# nothing costs none.
#
# _read_pdu_data reads a 6-byte header, then as many bytes as the header declares, however
# many that is: a peer that declared 4 GiB and kept sending had the process buffer all of
# it (twice). The reader checks each header before pynetdicom asks for the body. A first
# PDU (the A-ASSOCIATE-RQ, read before any AE title is checked) or any A-ASSOCIATE-RQ
# longer than ASSOCIATE_RQ_LIMIT, or any other PDU longer than the maximum this side
# advertised (for P-DATA-TF, PS3.8 D.1) plus PDU_SLACK, is a protocol error: the peer
# gets an A-ABORT, the reader returns nothing from then on, and pynetdicom, finding the
# header short, closes the connection (Evt17) without reading another byte.

# The largest A-ASSOCIATE-RQ pynetdicom can build (128 presentation contexts, each with
# every one of the 45 transfer syntaxes it knows) is 154 KiB; dcmtk's and the modalities'
# are a few KiB. 256 KiB leaves room for user identity and extended negotiation items.
ASSOCIATE_RQ_LIMIT: Final = 256 * 1024
# Some senders count a header or a PDV item header into the maximum length they honour.
PDU_SLACK: Final = 1024
BUFFER_START: Final = 64 * 1024
_PDU_TYPES: Final = frozenset(range(0x01, 0x08))  # pynetdicom reads the body of these only
# A-ABORT, source: service provider (2), reason: invalid PDU parameter value (6); PS3.8 9.3.8
_ABORT_INVALID_PDU: Final = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x06)
_PROTOCOL_ERROR_ATTR: Final = "_deid_node_protocol_error"


class PduReader:
    """recv(nr_bytes) as AssociationSocket.recv reads (all nr_bytes, or what arrived before
    the peer closed), in bulk, refusing PDUs longer than allowed. A returned view is valid
    until the next call."""

    def __init__(
        self,
        sock: Callable[[], Any],
        max_pdu: Callable[[], int] = lambda: 0,
        refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        """Read from the socket sock() returns; max_pdu() is the longest PDU this side
        advertised (0: any); refused(reason) is called once, on a protocol error."""
        self._sock = sock
        self._max_pdu = max_pdu
        self._refused = refused
        self._buf = bytearray()
        self._body: int | None = None  # the length a header declared, until its body is read
        self._first = True
        self.error: str | None = None
        self.refused_type = 0  # the type of the PDU refused, once one is

    def __call__(self, nr_bytes: int) -> memoryview:
        """The next nr_bytes (fewer if the connection broke; none after a protocol error)."""
        if self.error is not None:
            return memoryview(b"")
        header = self._body is None
        self._body = None
        data = self._read(nr_bytes)
        if len(data) < nr_bytes:
            self._buf = bytearray()  # the connection broke: keep nothing (the view holds it)
        elif header and nr_bytes == 6:
            pdu_type, length = data[0], int.from_bytes(data[2:6], "big")
            if pdu_type in _PDU_TYPES:
                self.error = self._check(pdu_type, length)
                if self.error is not None:
                    self.refused_type = pdu_type
                    self._buf = bytearray()
                    self._refused(self.error)
                    return memoryview(b"")  # too short to be a header: pynetdicom closes
                self._body = length
            self._first = False
        return data

    def _check(self, pdu_type: int, length: int) -> str | None:
        negotiation = pdu_type in (0x01, 0x02)  # A-ASSOCIATE-RQ/AC: the maximum is not theirs
        if (self._first or negotiation) and length > ASSOCIATE_RQ_LIMIT:
            what = "A-ASSOCIATE-RQ" if pdu_type == 0x01 else f"first PDU (type 0x{pdu_type:02X})"
            return (
                f"protocol error: {what} declaring {length} bytes, "
                f"more than any real one ({ASSOCIATE_RQ_LIMIT})"
            )
        limit = 0 if negotiation else self._max_pdu()
        if limit and length > limit + PDU_SLACK:
            return (
                f"protocol error: PDU (type 0x{pdu_type:02X}) declaring {length} bytes, "
                f"more than the node's maximum PDU length ({limit})"
            )
        return None

    def _read(self, nr_bytes: int) -> memoryview:
        raw = self._sock()
        buf = self._buf
        got = 0
        while got < nr_bytes:
            if got == len(buf):  # a new, larger buffer: views of the old one may be alive
                grown = bytearray(min(nr_bytes, max(BUFFER_START, 2 * len(buf))))
                grown[:got] = buf[:got]
                self._buf = buf = grown
            with memoryview(buf) as view:
                n = raw.recv_into(view[got : min(nr_bytes, len(buf))])
            if not n:  # the connection broke
                break
            got += n
        return memoryview(buf)[:got]


def install_bulk_recv(assoc: Association) -> None:
    """Make this association's socket read PDUs in bulk and refuse oversized ones."""
    transport = assoc.dul.socket
    if transport is None or not hasattr(transport, "recv"):
        return
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor

    def refused(reason: str) -> None:
        setattr(assoc, _PROTOCOL_ERROR_ATTR, reason)
        # Sent here, in the DUL thread (the only one using the socket): the state machine
        # would first read on, the bytes the peer keeps sending.
        raw = transport.socket
        if raw is not None:
            with contextlib.suppress(OSError, ValueError):
                raw.sendall(_ABORT_INVALID_PDU)

    transport.recv = PduReader(  # type: ignore[method-assign,assignment]
        lambda: transport.socket, lambda: int(local.maximum_length or 0), refused
    )


def protocol_error(assoc: Association) -> str | None:
    """Why the association's reader refused a PDU (and aborted), if it did."""
    value = getattr(assoc, _PROTOCOL_ERROR_ATTR, None)
    return value if isinstance(value, str) else None


# PDUs a peer sends only once its association was accepted: P-DATA-TF, A-RELEASE-RQ/RP.
_AFTER_ACCEPTANCE: Final = frozenset({0x04, 0x05, 0x06})


def refused_after_acceptance(assoc: Association) -> bool:
    """Whether the PDU the reader refused is one only an accepted association sends.

    The peer may send it the moment our A-ASSOCIATE-AC arrives, and the DUL thread may
    refuse it and report the close before the association thread reports the acceptance.
    """
    reader = getattr(getattr(assoc.dul, "socket", None), "recv", None)
    return isinstance(reader, PduReader) and reader.refused_type in _AFTER_ACCEPTANCE


# --------------------------------------------------------------------------------------------
# How an association ended
#
# After our A-RELEASE-RP the peer closes the connection, and the DUL thread reports the
# close (EVT_CONN_CLOSE) while the association thread may not yet have reported the
# release (EVT_RELEASED): a released association looked merely "closed". What we queued
# last to send says it without a race.

_ENDING_ATTR: Final = "_deid_node_ending"


def watch_ending(assoc: Association) -> None:
    """Note on the association whether we answered a release or sent an abort."""

    def note(item: Any) -> None:
        if isinstance(item, A_RELEASE):  # an acceptor sends one only to answer a release
            setattr(assoc, _ENDING_ATTR, "released")
        elif isinstance(item, (A_ABORT, A_P_ABORT)):
            setattr(assoc, _ENDING_ATTR, "aborted")

    # Before the put: once queued, the DUL thread may send it and see the close at once.
    _hook_put(assoc.dul.to_provider_queue, before=note)


def ending(assoc: Association) -> str | None:
    """ "released" or "aborted" if we answered a release or sent an abort, else None."""
    value = getattr(assoc, _ENDING_ATTR, None)
    return value if isinstance(value, str) else None


def expect_request(assoc: Association, timeout: float, arrived: Callable[[], None]) -> None:
    """Wait at most `timeout` s for this association's A-ASSOCIATE-RQ; arrived() when it has.

    An acceptor's thread waits acse_timeout for the request, and the ARTIM timer closes the
    connection after as long (PS3.8 9.1.5): both end a silent connection. Here both take
    the shorter of the two until the request arrives, then acse_timeout again (the ARTIM
    timer also bounds the wait for the peer to close after a release or an abort).
    """
    configured = assoc.acse_timeout
    assoc.acse_timeout = timeout if configured is None else min(timeout, configured)

    def note(item: Any) -> None:
        if isinstance(item, A_ASSOCIATE):  # queued by the DUL thread for the association's
            assoc.acse_timeout = configured
            arrived()

    _hook_put(assoc.dul.to_user_queue, before=note)


class _WakingRequestHandler(RequestHandler):
    """pynetdicom's request handler; its associations read in bulk and wake on work, and
    a pending one (see GuardedAssociationServer.pending) must speak in time."""

    server: GuardedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        watch_ending(assoc)
        install_bulk_recv(assoc)
        install_wakeups(assoc)
        pending = self.server.pending
        if pending is not None:
            request = self.request
            expect_request(assoc, pending.timeout, lambda: pending.associated(request))
        return assoc


# --------------------------------------------------------------------------------------------
# Where chunked data sets are written
#
# pynetdicom writes a chunked data set with tempfile.NamedTemporaryFile in the system temp
# folder, with no way to choose another. We replace that name in its dimse_messages module
# with a factory that finds the receiving AE from the DUL thread (its ``assoc`` attribute)
# and asks the factory registered for that AE for a file (the spool's IncomingFile).

DatasetFileFactory = Callable[[Association], Any]

_FACTORIES: weakref.WeakKeyDictionary[ApplicationEntity, DatasetFileFactory] = (
    weakref.WeakKeyDictionary()
)
_FACTORY_LOCK = threading.Lock()
_original_ntf: Callable[..., Any] | None = None


def route_datasets(ae: ApplicationEntity, factory: DatasetFileFactory) -> None:
    """Write the chunked C-STORE data sets of this AE's associations into factory(assoc)."""
    global _original_ntf
    if not _config.STORE_RECV_CHUNKED_DATASET:  # data sets would stay in memory, unrouted
        raise RuntimeError("configure_receiving() was not called in this process")
    with _FACTORY_LOCK:
        if _original_ntf is None:
            _original_ntf = tempfile.NamedTemporaryFile
        _dimse_messages.NamedTemporaryFile = _dataset_file  # type: ignore[attr-defined]
        _FACTORIES[ae] = factory


def unroute_datasets(ae: ApplicationEntity) -> None:
    """Undo :func:`route_datasets` for this AE."""
    with _FACTORY_LOCK:
        _FACTORIES.pop(ae, None)


def _dataset_file(*args: Any, **kwargs: Any) -> Any:
    assoc = getattr(threading.current_thread(), "assoc", None)  # the DUL thread's association
    ae = getattr(assoc, "ae", None)
    with _FACTORY_LOCK:
        factory = _FACTORIES.get(ae) if isinstance(ae, ApplicationEntity) else None
    if factory is None or not isinstance(assoc, Association):
        assert _original_ntf is not None
        return _original_ntf(*args, **kwargs)
    return factory(assoc)


# --------------------------------------------------------------------------------------------
# Inside EVT_REQUESTED


def requested_titles(assoc: Association) -> tuple[str, str]:
    """(calling, called) AE titles of the A-ASSOCIATE-RQ being handled, stripped."""
    rq = assoc.requestor.primitive
    calling = str(getattr(rq, "calling_ae_title", "") or "").strip()
    called = str(getattr(rq, "called_ae_title", "") or "").strip()
    return calling, called


def reject_request(assoc: Association, result: int, source: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ from an EVT_REQUESTED handler.

    pynetdicom skips its own negotiation once EVT_REQUESTED has rejected, but then shuts
    the socket at once, racing the DUL thread that still has to send the RJ PDU. kill()
    waits, as pynetdicom's own rejections do, until the DUL is idle: the peer has read
    the RJ and closed, or the ARTIM timer (acse_timeout) has expired.
    """
    assoc.acse.send_reject(result, source, diagnostic)
    assoc.kill()


def requested_abstract_syntaxes(assoc: Association) -> list[str]:
    """The abstract syntaxes the requestor proposes."""
    return [str(rq.abstract_syntax or "") for rq in assoc.requestor.requested_contexts]


def add_supported_contexts(assoc: Association, contexts: list[PresentationContext]) -> None:
    """Accept more contexts on this association only (negotiation runs after EVT_REQUESTED)."""
    supported = assoc.acceptor.supported_contexts
    assoc.acceptor.supported_contexts = [*supported, *contexts]


def supported_abstract_syntaxes(assoc: Association) -> set[str]:
    """The abstract syntaxes this association's acceptor supports."""
    return {str(cx.abstract_syntax) for cx in assoc.acceptor.supported_contexts}


def set_no_delay(assoc: Association) -> None:
    """TCP_NODELAY on the association's socket: responses are small PDUs, and without it
    each can wait for the peer's delayed ACK."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def only_senders_take_responses(assoc: Association) -> None:
    """Work around a race in pynetdicom's requestor (an association we opened to send).

    Its reactor thread polls the DIMSE queue (non-blocking) while ``send_c_store()``
    waits on the same queue; under CPU load the reactor can take the C-STORE-RSP first
    ("Received unexpected C-STORE service message") and the send then times out (the
    window pynetdicom issue #435 describes). A requestor that only sends never needs the
    reactor's polls: they are made to see nothing, and the blocking reads of send_*() get
    every response.
    """
    dimse = assoc.dimse
    blocking_get = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        return blocking_get(True) if block else (None, None)

    dimse.get_msg = get_msg  # type: ignore[method-assign]


def register_storage_class(uid: str, keyword: str) -> bool:
    """Route C-STOREs of an unknown SOP class to the storage service; False if refused.

    pynetdicom's registry is process-wide and has no way to remove an entry: the caller
    bounds how many it adds.
    """
    try:
        register_uid(uid, keyword, StorageServiceClass)
    except Exception:
        return False
    return True


def send_files_with_meta(meta_for: Callable[[Path], Dataset | None]) -> None:
    """Stream sent files as they are, taking a file's meta from meta_for(path) if it has one.

    With STORE_SEND_CHUNKED_DATASET pynetdicom finds a file's meta with split_dataset,
    which misparses a body that starts with group 0002 or is garbage: the fuzzer's temp
    files hold only the body, with the meta it built beside them (deid_node.testing.fuzz).
    """
    original = _association_module.split_dataset  # type: ignore[attr-defined]

    def split(path: Path) -> tuple[Dataset, int]:
        meta = meta_for(path)
        return (meta, 0) if meta is not None else original(path)

    _association_module.split_dataset = split  # type: ignore[attr-defined]
    stream_sent_files()


# --------------------------------------------------------------------------------------------
# The listening server


class PendingBounds(Protocol):
    """Bounds on connections not yet associated (deid_node.intake.connections)."""

    @property
    def timeout(self) -> float:
        """Seconds a connection may take to send its A-ASSOCIATE-RQ."""

    def admit(self, key: Hashable, peer: str) -> tuple[bool, list[Hashable]]:
        """Whether a new connection may stay, and the connections it pushed out."""

    def associated(self, key: Hashable) -> None:
        """The connection's A-ASSOCIATE-RQ has arrived."""

    def expired(self) -> list[Hashable]:
        """Connections whose time is up."""


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with two fixes for peers that stop talking.

    * pynetdicom sets network_timeout on the *listening* socket only, and Python's
      accept() returns a blocking socket without it (bpo-7995): a peer that sent part of a
      PDU and stalled held its association thread, and its max_associations slot, forever.
      Each accepted socket gets network_timeout, so a stalled read ends the association.
    * pynetdicom does the TLS handshake inside accept(), in the one thread that accepts
      every connection, without a timeout: a single peer that connected and never sent a
      ClientHello stopped the node from accepting anything. The handshake is done here in
      the connection's own thread, bounded by network_timeout; a failed one is reported to
      ``handshake_failed`` (no traceback) and the connection is closed before any
      association exists.

    And, with :attr:`pending` set, connections that have not associated yet are bounded
    (per address and in all: one more is closed at once) and closed when their time is
    up, whatever they are doing (a TLS handshake, a request sent byte by byte).
    """

    handshake_failed: Callable[[str, BaseException], None] | None = None  # (peer, error)
    adopted: socket.socket | None = None  # a listening socket to serve instead of binding
    pending: PendingBounds | None = None

    def server_bind(self) -> None:
        """Bind as pynetdicom does, or serve the already listening :attr:`adopted` socket.

        Several receiving processes accept on one socket the supervisor bound (port 0
        included). It is non-blocking: when two processes wake for one connection, the
        one that loses gets BlockingIOError (socketserver ignores it) instead of waiting
        in accept() for the next connection, unable to shut down.
        """
        if self.adopted is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = self.adopted
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen, unless the adopted socket already does."""
        if self.adopted is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; wrap it for TLS but leave the handshake to its thread."""
        assert self.socket is not None
        client, address = self.socket.accept()
        client.settimeout(self.ae.network_timeout)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """socketserver's check before a connection gets its thread: within the bounds?"""
        if self.pending is None:
            return True
        peer = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        admitted, evicted = self.pending.admit(request, str(peer))
        _shut(evicted)
        return admitted

    def service_actions(self) -> None:
        """Run by serve_forever() at least every poll interval: close pending connections
        whose time is up."""
        super().service_actions()
        if self.pending is not None:
            _shut(self.pending.expired())

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Finish the TLS handshake (if any), then hand the connection to pynetdicom."""
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:
                peer = client_address[0] if isinstance(client_address, tuple) else "?"
                if self.handshake_failed is not None:
                    self.handshake_failed(str(peer), exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


def _shut(sockets: list[Any]) -> None:
    """Shut connections down from another thread. A shutdown (not a close) wakes the thread
    reading the socket, which then closes it as after any peer's close; TLS is bypassed,
    as its shutdown would change the SSL object under that thread."""
    for sock in sockets:
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class SharedContexts(list[PresentationContext]):
    """The server's supported contexts, handed to each association without a deep copy.

    pynetdicom deep-copies them for every association: every storage class in every
    transfer syntax took 0.11 s of the receiving process per association, a limit of about
    nine associations a second for senders that open one per object. Negotiation only
    reads them (add_supported_contexts replaces the list, never changes it), so
    associations can share the objects.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        """A new list of the same contexts."""
        return list(self)


ACCEPTOR_THREAD_NAME: Final = "AcceptorServer@deid-node"


def start_server(
    ae: ApplicationEntity,
    address: tuple[str, int],
    *,
    ssl_context: ssl.SSLContext | None,
    evt_handlers: list[Any],
    handshake_failed: Callable[[str, BaseException], None] | None = None,
    sock: socket.socket | None = None,
    pending: PendingBounds | None = None,
) -> GuardedAssociationServer:
    """Start a non-blocking :class:`GuardedAssociationServer`, as
    ``AE.start_server(block=False)`` does with pynetdicom's own server class; on `sock`,
    a listening socket, if given (then `address` is not bound); connections not yet
    associated bounded by `pending`, if given."""
    # make_server constructs the class itself: the socket rides on a one-off subclass.
    server_class = type("AdoptingServer", (GuardedAssociationServer,), {"adopted": sock})
    server = cast(
        GuardedAssociationServer,
        ae.make_server(
            address,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            server_class=server_class,
            request_handler=_WakingRequestHandler,
        ),
    )
    server.handshake_failed = handshake_failed
    server.pending = pending
    server.contexts = SharedContexts(server.contexts)
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=ACCEPTOR_THREAD_NAME, daemon=True
    )
    thread.start()
    # As in AE.start_server: AssociationServer.shutdown() removes itself from this list.
    ae._servers.append(server)
    return server
