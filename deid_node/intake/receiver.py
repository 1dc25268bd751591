"""Per-association state and C-STORE intake, shared by the event handlers; thread-safe.

C-STORE data sets are received chunked: pynetdicom writes each fragment to a file as it
arrives, and :func:`deid_node.intake.scp.attach_spool` makes that file an
:class:`~deid_node.intake.spool.IncomingFile` in ``spool/incoming/`` (same filesystem as
spool/, so publishing is one rename, and limits apply while the bytes arrive). Nothing
here logs PHI: AE titles and peer addresses only, never UIDs or dataset values.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from deid_node.clock import now
from deid_node.config import Config
from deid_node.dicom.encoding import EncodingError, check_file
from deid_node.dicom.pydicom_compat import is_dictionary_uid
from deid_node.dicom.status import (
    DIAG_LOCAL_LIMIT_EXCEEDED,
    REJECT_PERMANENT,
    REJECT_TRANSIENT,
    SOURCE_PROVIDER_PRESENTATION,
    SOURCE_SERVICE_USER,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUCCESS,
)
from deid_node.errors import StorageError
from deid_node.intake.capacity import Slots
from deid_node.intake.policy import decide, printable
from deid_node.intake.spool import Receipt, Spool, SpoolFullError, SpoolItem
from deid_node.net import pynetdicom_compat as compat

log = logging.getLogger(__name__)

# How long a request over max_associations waits for a slot before it is rejected. A
# released association frees its slot when EVT_RELEASED fires, a moment after the A-RELEASE-RP
# went out: a sender that associates again at once must not be refused for that moment.
SLOT_WAIT_SECONDS: Final = 1.0
# A long association logs how far it got this often (else nothing until it ends).
PROGRESS_SECONDS: Final = 30.0


@dataclass
class AssociationInfo:
    """One association as the node sees it; safe to log."""

    id: str
    calling_ae: str
    called_ae: str
    peer_address: str
    profile: str | None
    started_at: datetime
    started: float = field(default_factory=time.monotonic)
    accepted: bool = False
    outcome: str | None = None  # released, aborted, closed, rejected
    note: str | None = None  # for the audit's reason column
    stored: int = 0
    refused: int = 0
    last_progress: float = field(default_factory=time.monotonic)

    @property
    def objects(self) -> int:
        """C-STORE requests answered, success or not."""
        return self.stored + self.refused

    def describe(self) -> str:
        """`<id8> CALLING -> CALLED from PEER`, for log lines."""
        return (
            f"association {self.id[:8]} {printable(self.calling_ae)} -> "
            f"{printable(self.called_ae)} from {printable(self.peer_address, 64)}"
        )


@dataclass(frozen=True)
class RefusedObject:
    """A C-STORE answered with a failure status: nothing was kept."""

    received_at: datetime
    association: AssociationInfo
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    size_bytes: int
    status: int
    reason: str


class ReceiverEvents(Protocol):
    """Where the receiver reports; the node audits and schedules from these calls."""

    def association_accepted(self, info: AssociationInfo) -> None:
        """An association was accepted."""

    def association_rejected(self, info: AssociationInfo, reason: str) -> None:
        """An association request was rejected."""

    def association_ended(self, info: AssociationInfo) -> None:
        """An accepted association ended (info.outcome says how)."""

    def object_refused(self, refused: RefusedObject) -> None:
        """A C-STORE was answered with a failure status."""

    def object_received(self, item: SpoolItem) -> None:
        """An object is durable in spool/ and was acknowledged."""

    def associations_changed(self, active: int) -> None:
        """This many associations are open now (called in order, under the receiver's lock)."""


# --------------------------------------------------------------------------------------------
# Cheap header check


class UnreadableObject(Exception):
    """A received data set cannot be understood; the message holds no PHI."""

    def __init__(self, reason: str, status: int = STATUS_CANNOT_UNDERSTAND) -> None:
        """Reason (no PHI) and the C-STORE status to answer."""
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class HeaderInfo:
    """What the header check learnt."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def check_header(path: Path) -> HeaderInfo:
    """Check a received Part-10 file's encoding; UnreadableObject if it cannot be trusted.

    The strict walk of :mod:`deid_node.dicom.encoding` on the raw bytes (pixel data skipped,
    never read): bytes that are not DICOM, truncated values, repeated or out-of-order tags,
    wrong VRs or lengths, text the declared character set does not allow, missing UIDs.
    Whatever passes still goes through the full pipeline, which quarantines on any doubt.
    """
    try:
        info = check_file(path)
    except EncodingError as exc:
        raise UnreadableObject(str(exc)) from None
    except Exception as exc:  # never a traceback from a handler; the type names no value
        raise UnreadableObject(f"unreadable data set ({type(exc).__name__})") from None
    return HeaderInfo(info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax_uid)


# --------------------------------------------------------------------------------------------
# The receiver: per-association state shared by the handlers


class Receiver:
    """Association policy and C-STORE intake for one AE; thread-safe."""

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        events: ReceiverEvents,
        *,
        slots: Slots | None = None,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        """Bind the policy (cfg), the spool objects go to, and where to report.

        `slots` counts associations under max_associations (shared by the receiving
        processes); by default this receiver's own.
        """
        self.cfg = cfg
        self.spool = spool
        self.events = events
        self.refusing: str | None = None  # a reason: answer Out of Resources to every store
        self.progress_seconds = progress_seconds
        self._slots = slots or Slots(cfg.node.max_associations, None, 0)
        self._lock = threading.Lock()
        self._states: dict[Association, AssociationInfo] = {}
        self._holding: set[Association] = set()  # associations that hold a slot

    @property
    def active(self) -> int:
        """Associations accepted or being negotiated whose connection has not closed yet."""
        with self._lock:
            return len(self._states)

    def _take_slot(self, assoc: Association, info: AssociationInfo) -> bool:
        if not self._slots.take(SLOT_WAIT_SECONDS):
            return False
        with self._lock:
            self._states[assoc] = info
            self._holding.add(assoc)
            self.events.associations_changed(len(self._states))
        return True

    def _free_slot(self, assoc: Association) -> None:
        # Call with the lock held. Released and aborted associations free their slot at
        # once, although their threads (which pynetdicom would count) are still winding down.
        if assoc in self._holding:
            self._holding.discard(assoc)
            self._slots.free()

    def info(self, assoc: Association) -> AssociationInfo | None:
        """The state of an association, if it is one of ours."""
        with self._lock:
            return self._states.get(assoc)

    # -- association life cycle -----------------------------------------------------------

    def requested(self, assoc: Association) -> None:
        """Decide on an A-ASSOCIATE-RQ; reject it here if the policy says so."""
        calling, called = compat.requested_titles(assoc)
        peer = str(assoc.requestor.address or "")
        decision = decide(self.cfg, calling, called, peer)
        info = AssociationInfo(
            id=uuid.uuid4().hex,
            calling_ae=calling,
            called_ae=called,
            peer_address=peer,
            profile=decision.profile,
            started_at=now(),
        )
        # Reported before the A-ASSOCIATE-RJ goes out: once the peer has it, the node's
        # books (in another process) already have the rejection on its way.
        if not decision.accepted:
            self._rejected(info, decision.reason)
            compat.reject_request(assoc, REJECT_PERMANENT, SOURCE_SERVICE_USER, decision.diagnostic)
            return
        if not self._take_slot(assoc, info):
            limit = self.cfg.node.max_associations
            self._rejected(info, f"too many associations (max_associations = {limit})")
            compat.reject_request(
                assoc, REJECT_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, DIAG_LOCAL_LIMIT_EXCEEDED
            )
            return
        compat.set_no_delay(assoc)
        accept_unknown_classes(assoc)

    def rejected(self, assoc: Association) -> None:
        """pynetdicom rejected an association our policy had accepted."""
        with self._lock:
            info = self._states.pop(assoc, None)
            self._free_slot(assoc)
        if info is not None:
            self._rejected(info, "rejected during negotiation")
        self._report_active()

    @staticmethod
    def _unnamed(assoc: Association) -> AssociationInfo:
        """An association known by its peer's address only."""
        peer = str(assoc.requestor.address or "")
        return AssociationInfo(uuid.uuid4().hex, "", "", peer, None, now())

    def _rejected(self, info: AssociationInfo, reason: str) -> None:
        info.outcome = "rejected"
        log.info("%s rejected: %s", info.describe(), reason)
        self.events.association_rejected(info, reason)

    def accepted(self, assoc: Association) -> None:
        """The association is established."""
        with self._lock:  # closed() may report it first (see there)
            info = self._states.get(assoc)
            if info is None or info.accepted:
                return
            info.accepted = True
        self.events.association_accepted(info)

    def ended(self, assoc: Association, outcome: str) -> None:
        """Note how an association ended (released, aborted); its slot is free again."""
        with self._lock:
            info = self._states.get(assoc)
            if info is not None and info.outcome is None:
                info.outcome = outcome
            self._free_slot(assoc)

    def closed(self, assoc: Association) -> None:
        """The connection closed: report the association once, drop half-received files."""
        after_acceptance = compat.refused_after_acceptance(assoc)
        with self._lock:
            info = self._states.pop(assoc, None)
            self._free_slot(assoc)
            unreported = False
            if info is not None and not info.accepted and after_acceptance:
                info.accepted = unreported = True  # under the lock: accepted() won't
        dropped = self.spool.discard_owner(assoc)
        error = compat.protocol_error(assoc)
        if info is None:
            if error is not None:  # refused before its request was read: no titles known
                self._rejected(self._unnamed(assoc), error)
            return
        if unreported:
            # Accepted, and cut by a PDU only an accepted association sends before the
            # association thread could report it: its row must exist before its end.
            self.events.association_accepted(info)
        if not info.accepted:
            if error is not None:
                self._rejected(info, error)
            self._report_active()
            return
        # The close may be reported before the release it follows (see compat.ending).
        info.outcome = "aborted" if error else info.outcome or compat.ending(assoc) or "closed"
        notes = [f"{dropped} object(s) cut off mid-transfer"] if dropped else []
        info.note = "; ".join([*notes, *([error] if error else [])]) or None
        log.info(
            "%s: %d object(s), %d stored in spool, %d refused, %.2f s, %s",
            info.describe(),
            info.objects,
            info.stored,
            info.refused,
            time.monotonic() - info.started,
            info.outcome + (f" ({info.note})" if info.note else ""),
        )
        self.events.association_ended(info)
        self._report_active()

    def _report_active(self) -> None:
        # After the association's last report: whoever waits for none open has them all.
        with self._lock:
            self.events.associations_changed(len(self._states))

    def reap(self) -> None:
        """Close the books on associations whose thread died without a close event."""
        with self._lock:
            dead = [a for a in self._states if not a.is_alive()]
        for assoc in dead:
            self.closed(assoc)

    # -- C-STORE --------------------------------------------------------------------------

    def store(self, event: Event) -> int | Dataset:
        """Spool one C-STORE data set; Success only once it is durable in spool/."""
        status = self._store(event)
        info = self.info(event.assoc)
        if info is not None and time.monotonic() - info.last_progress >= self.progress_seconds:
            info.last_progress = time.monotonic()
            log.info(
                "%s: %d object(s) so far, %d stored in spool, %d refused, %.0f s",
                info.describe(),
                info.objects,
                info.stored,
                info.refused,
                info.last_progress - info.started,
            )
        return status

    def _store(self, event: Event) -> int | Dataset:
        info = self.info(event.assoc)
        req = cast(C_STORE, event.request)
        cx = event.context
        sop_class = str(req.AffectedSOPClassUID or "")
        ts = str(cx.transfer_syntax or "")
        try:
            incoming = self.spool.incoming(event.dataset_path)
        except AttributeError:
            incoming = None
        if info is None:
            if incoming is not None:
                self.spool.discard(incoming)
            return failure(STATUS_PROCESSING_FAILURE, "association not accepted")

        def refuse(status: int, reason: str) -> Dataset:
            size = 0
            if incoming is not None:
                size = incoming.size
                self.spool.discard(incoming)
            assert info is not None
            info.refused += 1
            log.warning("%s: C-STORE refused (0x%04X): %s", info.describe(), status, reason)
            self.events.object_refused(
                RefusedObject(now(), info, sop_class or None, ts or None, size, status, reason)
            )
            return failure(status, reason)

        if incoming is None:
            return refuse(STATUS_PROCESSING_FAILURE, "data set was not received into the spool")
        if self.refusing is not None:
            return refuse(STATUS_OUT_OF_RESOURCES, self.refusing)
        if incoming.failure is not None:
            return refuse(STATUS_OUT_OF_RESOURCES, incoming.failure)
        if sop_class != str(cx.abstract_syntax):
            return refuse(
                STATUS_SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from the presentation context's",
            )
        if sop_class in _UNKNOWN_CLASSES:
            return refuse(STATUS_SOP_CLASS_NOT_SUPPORTED, "not a storage SOP class the node knows")
        incoming.flush()
        try:
            header = check_header(incoming.path)
        except UnreadableObject as exc:
            return refuse(exc.status, exc.reason)
        if header.sop_class_uid != sop_class:
            return refuse(STATUS_DATASET_MISMATCH, "data set SOP class differs from the command's")
        if header.sop_instance_uid != str(req.AffectedSOPInstanceUID or ""):
            return refuse(
                STATUS_CANNOT_UNDERSTAND, "data set SOP instance differs from the command's"
            )
        assert info.profile is not None
        receipt = Receipt(
            received_at=now(),
            association_id=info.id,
            calling_ae=info.calling_ae,
            called_ae=info.called_ae,
            peer_address=info.peer_address,
            profile=info.profile,
            size_bytes=incoming.size,
            sop_class_uid=sop_class,
            transfer_syntax_uid=header.transfer_syntax_uid or ts,
        )
        try:
            item = self.spool.publish(incoming, receipt)
        except SpoolFullError as exc:
            incoming = None  # publish discarded it
            return refuse(STATUS_OUT_OF_RESOURCES, str(exc))
        except StorageError as exc:
            incoming = None
            return refuse(STATUS_OUT_OF_RESOURCES, str(exc))
        info.stored += 1
        self.events.object_received(item)
        return STATUS_SUCCESS


# Abstract syntaxes no dictionary knows (private or made up). pynetdicom would reject their
# presentation contexts, so a sender learns nothing per object and nothing is audited. We
# accept them as storage (registered with pynetdicom's storage service, which it needs to
# route the C-STORE to our handler), then refuse each object with 0x0122 and an audit row.
# Bounded: a peer proposing endless new UIDs cannot grow the registry without limit.
_UNKNOWN_CLASSES: dict[str, str] = {}
_UNKNOWN_LOCK = threading.Lock()
MAX_UNKNOWN_CLASSES: Final = 1024


def accept_unknown_classes(assoc: Association) -> None:
    """Add supported contexts for the unknown abstract syntaxes this association proposes."""
    known = compat.supported_abstract_syntaxes(assoc)
    extra: list[PresentationContext] = []
    for uid in compat.requested_abstract_syntaxes(assoc):
        if uid in known or is_dictionary_uid(uid) or not _is_uid(uid):
            continue  # ours, or a known non-storage service we do not offer
        if not _register_unknown(uid):
            continue
        cx = PresentationContext()
        cx.abstract_syntax = UID(uid)
        cx.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
        extra.append(cx)
        known.add(uid)
    if extra:
        compat.add_supported_contexts(assoc, extra)


def _is_uid(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text)


def _register_unknown(uid: str) -> bool:
    with _UNKNOWN_LOCK:
        if uid in _UNKNOWN_CLASSES:
            return True
        if len(_UNKNOWN_CLASSES) >= MAX_UNKNOWN_CLASSES:
            return False
        keyword = f"DeidNodeUnknownStorage{len(_UNKNOWN_CLASSES)}"
        if not compat.register_storage_class(uid, keyword):
            return False  # pynetdicom refuses it: leave the context rejected
        _UNKNOWN_CLASSES[uid] = keyword
        return True


def failure(status: int, reason: str) -> Dataset:
    """A status dataset with an ErrorComment (LO: at most 64 characters, no PHI)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = reason[:64]
    return ds
