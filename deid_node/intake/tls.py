"""DICOM TLS and the listening socket: the server-side SSL context built from [node.tls],
and an association server that bounds how long a silent peer can hold a connection."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, cast

from pynetdicom.ae import ApplicationEntity
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from deid_node.config import TlsConfig
from deid_node.errors import ConfigError

log = logging.getLogger(__name__)


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A TLS 1.2+ server context; client certificates checked against the CA bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"node.tls: cannot load certificate {tls.certificate} / key {tls.key}: "
            f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}"
        ) from None
    if tls.ca_bundle is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"node.tls.ca_bundle: cannot load {tls.ca_bundle}: "
                f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}"
            ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    if tls.ca_bundle is None:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with two fixes for peers that stop talking.

    * pynetdicom sets network_timeout on the *listening* socket only, and Python's
      accept() returns a blocking socket without it (bpo-7995): a peer that sent part of a
      PDU and stalled held its association thread, and its max_associations slot, forever.
      Each accepted socket gets network_timeout, so a stalled read ends the association.
    * pynetdicom does the TLS handshake inside accept(), in the one thread that accepts
      every connection, without a timeout: a single peer that connected and never sent a
      ClientHello stopped the node from accepting anything. The handshake is done here in
      the connection's own thread, bounded by network_timeout; a failed one is one log
      line (no traceback) and the connection is closed before any association exists.
    """

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
                log.warning("TLS handshake with %s failed: %s", peer, _handshake_error(exc))
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class SharedContexts(list[PresentationContext]):
    """The server's supported contexts, handed to each association without a deep copy.

    pynetdicom deep-copies them for every association: every storage class in every
    transfer syntax took 0.11 s of the receiving process per association, a limit of about
    nine associations a second for senders that open one per object. Negotiation only
    reads them, so associations can share the objects.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        """A new list of the same contexts."""
        return list(self)


def _handshake_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__)
    if isinstance(exc, TimeoutError):
        return "handshake not completed within node.network_timeout"
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def start_server(
    ae: ApplicationEntity,
    address: tuple[str, int],
    *,
    ssl_context: ssl.SSLContext | None,
    evt_handlers: list[Any],
) -> GuardedAssociationServer:
    """Start a non-blocking :class:`GuardedAssociationServer`, as
    ``AE.start_server(block=False)`` does with pynetdicom's own server class."""
    server = cast(
        GuardedAssociationServer,
        ae.make_server(
            address,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            server_class=GuardedAssociationServer,
        ),
    )
    server.contexts = SharedContexts(server.contexts)
    thread = threading.Thread(
        target=make_target(server.serve_forever), name="AcceptorServer@deid-node", daemon=True
    )
    thread.start()
    # As in AE.start_server: AssociationServer.shutdown() removes itself from this list.
    ae._servers.append(server)
    return server
