"""Every reach into pynetdicom beyond its documented API, in one place.

Each one is here because the public API cannot do what the node needs (say which, and
why, beside it), and each has a test in tests/test_pynetdicom_compat.py that fails when a
pynetdicom upgrade breaks it. Nothing else in deid_node touches pynetdicom's internals.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, cast

from pynetdicom import _config
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

# --------------------------------------------------------------------------------------------
# Process-wide settings (pynetdicom._config: module globals, no API to set them)


def configure() -> None:
    """Receive C-STORE data sets in chunks to disk; no per-message logging of UIDs."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to disk, never whole in memory
    _config.LOG_HANDLER_LEVEL = "none"  # the standard handlers log UIDs at DEBUG


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


# --------------------------------------------------------------------------------------------
# The listening server


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
    """

    handshake_failed: Callable[[str, BaseException], None] | None = None  # (peer, error)
    adopted: socket.socket | None = None  # a listening socket to serve instead of binding

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
) -> GuardedAssociationServer:
    """Start a non-blocking :class:`GuardedAssociationServer`, as
    ``AE.start_server(block=False)`` does with pynetdicom's own server class; on `sock`,
    a listening socket, if given (then `address` is not bound)."""
    # make_server constructs the class itself: the socket rides on a one-off subclass.
    server_class = type("AdoptingServer", (GuardedAssociationServer,), {"adopted": sock})
    server = cast(
        GuardedAssociationServer,
        ae.make_server(
            address,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            server_class=server_class,
        ),
    )
    server.handshake_failed = handshake_failed
    server.contexts = SharedContexts(server.contexts)
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=ACCEPTOR_THREAD_NAME, daemon=True
    )
    thread.start()
    # As in AE.start_server: AssociationServer.shutdown() removes itself from this list.
    ae._servers.append(server)
    return server
