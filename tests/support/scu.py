"""The test's own SCU: pynetdicom associations to a node on loopback, plain or TLS."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from deid_node.net.pynetdicom_compat import only_senders_take_responses

NODE_AE = "DEID_NODE"
VERIFICATION = "1.2.840.10008.1.1"


def associate(
    address: tuple[str, int],
    calling_ae: str,
    sop_classes: Iterable[str] = (),
    *,
    called_ae: str = NODE_AE,
    transfer_syntaxes: Sequence[str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Association:
    """Request an association proposing Verification plus `sop_classes` (over TLS if `tls`)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 15
    ae.connection_timeout = 15
    uids = dict.fromkeys([VERIFICATION, *sop_classes])
    contexts = [build_context(uid, transfer_syntaxes) for uid in uids]
    tls_args = (tls, "localhost") if tls is not None else None
    assoc = ae.associate(address[0], address[1], contexts, ae_title=called_ae, tls_args=tls_args)
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


def echo(address: tuple[str, int], calling_ae: str, *, tls: ssl.SSLContext | None = None) -> int:
    """C-ECHO on a fresh association (over TLS if `tls`); the status (-1 if not accepted)."""
    assoc = associate(address, calling_ae, tls=tls)
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()
