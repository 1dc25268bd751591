"""The Storage SCP's application entity: our title, limits, timeouts and contexts, and
where its C-STORE data sets are written (the spool)."""

from __future__ import annotations

from typing import Final

from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.presentation import AllStoragePresentationContexts

from deid_node.config import Config
from deid_node.intake.spool import IncomingFile, Spool
from deid_node.net import pynetdicom_compat as compat

VERIFICATION: Final = UID("1.2.840.10008.1.1")
# Largest PDU we accept. pynetdicom reads each PDU whole into memory (about 4 copies):
# with 0 (unlimited) a peer may send a 134 MB object as one PDU and the node peaks at
# +527 MB; with 1 MiB it peaks at +6 MB and receives faster (0.36 s vs 0.83 s).
MAX_PDU_LENGTH: Final = 1024 * 1024
PYNETDICOM_ASSOCIATIONS_CAP: Final = 1_000_000  # never reached: see build_ae


def build_ae(cfg: Config) -> ApplicationEntity:
    """An AE with our title, limits and timeouts, every storage SOP class in every
    transfer syntax pynetdicom knows, and Verification (the process called
    :func:`~deid_node.net.pynetdicom_compat.configure_receiving` first)."""
    ae = ApplicationEntity(ae_title=cfg.node.ae_title)
    # The Receiver enforces max_associations itself: pynetdicom counts association threads,
    # and the thread of a released association lives on for a while, so a sender that
    # associates again straight after a release would be refused.
    ae.maximum_associations = PYNETDICOM_ASSOCIATIONS_CAP
    ae.maximum_pdu_size = MAX_PDU_LENGTH
    ae.network_timeout = cfg.node.network_timeout
    ae.acse_timeout = cfg.node.acse_timeout
    ae.dimse_timeout = cfg.node.dimse_timeout
    # The policy (called AE, calling AE, host) is applied by handle_requested, which
    # audits each rejection; pynetdicom's own checks would reject silently.
    ae.require_called_aet = False
    ae.require_calling_aet = []
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION, ALL_TRANSFER_SYNTAXES[:4])
    return ae


def attach_spool(ae: ApplicationEntity, spool: Spool) -> None:
    """Receive this AE's C-STORE data sets into `spool` (one IncomingFile per object)."""

    def incoming(assoc: Association) -> IncomingFile:
        return spool.open_incoming(assoc)

    compat.route_datasets(ae, incoming)
