"""A pynetdicom C-STORE SCP to forward to: it records what arrives and answers as told."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

DEST_AE = "RESEARCH_PACS"


@dataclass
class Destination:
    """A research PACS stand-in on 127.0.0.1: `received` maps SOP Instance UID -> count.

    `status` decides each answer (default Success); `sop_classes` limits what it accepts;
    `syntaxes` limits the transfer syntaxes (e.g. uncompressed only).
    """

    sop_classes: Iterable[str] | None = None
    syntaxes: Iterable[str] | None = None
    status: Callable[[Dataset], int] = lambda ds: 0x0000
    tls: ssl.SSLContext | None = None
    received: dict[str, int] = field(default_factory=dict)
    syntax_seen: dict[str, str] = field(default_factory=dict)
    associations: int = 0
    _server: ThreadedAssociationServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:port (0: any free one); return the port."""
        ae = AE(ae_title=DEST_AE)
        syntaxes = list(self.syntaxes or ALL_TRANSFER_SYNTAXES)
        wanted = set(self.sop_classes) if self.sop_classes is not None else None
        for cx in AllStoragePresentationContexts:
            if wanted is None or cx.abstract_syntax in wanted:
                ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(
            "1.2.840.10008.1.1", [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ESTABLISHED, self._on_open)]
        self._server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=handlers, ssl_context=self.tls
        )
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening and end every association."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def total(self) -> int:
        """Objects received, each SOP instance counted once."""
        with self._lock:
            return len(self.received)

    def _on_open(self, event: evt.Event) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        code = self.status(ds)
        if code in (0x0000, 0xB000, 0xB006, 0xB007):
            uid = str(ds.SOPInstanceUID)
            with self._lock:
                self.received[uid] = self.received.get(uid, 0) + 1
                self.syntax_seen[uid] = str(event.context.transfer_syntax)
        return code
