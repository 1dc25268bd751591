"""The Storage SCP: AE, presentation contexts, association policy, handlers, status codes.

Handlers are plain ``handle_<event>(event, receiver)`` functions bound with the
:class:`Receiver` as their extra argument (see :func:`event_handlers`). They never raise
and never log PHI: AE titles and peer addresses only, never UIDs or dataset values.

C-STORE data sets are received chunked (``STORE_RECV_CHUNKED_DATASET``): pynetdicom writes
each fragment to a file as it arrives, and :func:`install_intake_hook` makes that file an
:class:`~deid_node.intake.spool.IncomingFile` in ``spool/incoming/`` (same filesystem as spool/,
so publishing is one rename, and limits apply while the bytes arrive).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, cast

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid

from deid_node.config import Config
from deid_node.dicom.encoding import EncodingError, check_file
from deid_node.errors import StorageError
from deid_node.intake.spool import IncomingFile, Receipt, Spool, SpoolFullError, SpoolItem

log = logging.getLogger(__name__)

# C-STORE response statuses (PS3.4 Annex B.2.3, PS3.7 Annex C).
STATUS_SUCCESS: Final = 0x0000
STATUS_PROCESSING_FAILURE: Final = 0x0110
STATUS_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
STATUS_OUT_OF_RESOURCES: Final = 0xA700
STATUS_DATASET_MISMATCH: Final = 0xA900
STATUS_CANNOT_UNDERSTAND: Final = 0xC210

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, diagnostic.
REJECT_PERMANENT: Final = 0x01
REJECT_TRANSIENT: Final = 0x02
SOURCE_SERVICE_USER: Final = 0x01
SOURCE_PROVIDER_PRESENTATION: Final = 0x03
DIAG_CALLING_AE_NOT_RECOGNISED: Final = 0x03
DIAG_CALLED_AE_NOT_RECOGNISED: Final = 0x07
DIAG_LOCAL_LIMIT_EXCEEDED: Final = 0x02
# How long a request over max_associations waits for a slot before it is rejected. A
# released association frees its slot when EVT_RELEASED fires, a moment after the A-RELEASE-RP
# went out: a sender that associates again at once must not be refused for that moment.
SLOT_WAIT_SECONDS: Final = 1.0
# A long association logs how far it got this often (else nothing until it ends).
PROGRESS_SECONDS: Final = 30.0

VERIFICATION: Final = UID("1.2.840.10008.1.1")
# Largest PDU we accept. pynetdicom reads each PDU whole into memory (about 4 copies):
# with 0 (unlimited) a peer may send a 134 MB object as one PDU and the node peaks at
# +527 MB; with 1 MiB it peaks at +6 MB and receives faster (0.36 s vs 0.83 s).
MAX_PDU_LENGTH: Final = 1024 * 1024
PYNETDICOM_ASSOCIATIONS_CAP: Final = 1_000_000  # never reached: see build_ae


def now() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(UTC)


def printable(text: str, limit: int = 16) -> str:
    """An AE title or address safe to log: printable ASCII only, bounded length."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return clean.strip() or "(empty)"


# --------------------------------------------------------------------------------------------
# Association policy


@dataclass(frozen=True)
class Decision:
    """What to do with an association request: its profile, or a rejection and why."""

    profile: str | None
    reason: str = ""
    diagnostic: int = 0

    @property
    def accepted(self) -> bool:
        """True if the association is to be accepted."""
        return self.profile is not None


def decide(cfg: Config, calling_ae: str, called_ae: str, peer: str) -> Decision:
    """Apply the policy: called AE is ours; calling AE is a source used from its hosts.

    A configured AE title from an address outside its ``hosts`` is rejected even when
    ``[unknown_sources] action`` names a profile: it is a known sender's title misused.
    """
    if called_ae != cfg.node.ae_title:
        return Decision(
            None,
            f"called AE title '{printable(called_ae)}' is not this node's",
            DIAG_CALLED_AE_NOT_RECOGNISED,
        )
    source = cfg.source_for(calling_ae)
    if source is not None:
        if source.allows(peer):
            return Decision(source.profile)
        return Decision(
            None,
            f"calling AE title '{printable(calling_ae)}' is not allowed from {printable(peer, 64)}",
            DIAG_CALLING_AE_NOT_RECOGNISED,
        )
    if cfg.unknown_action != "reject":
        return Decision(cfg.unknown_action)
    return Decision(
        None,
        f"calling AE title '{printable(calling_ae)}' is not a configured source",
        DIAG_CALLING_AE_NOT_RECOGNISED,
    )


# --------------------------------------------------------------------------------------------
# What the receiver reports


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

    def __init__(self, cfg: Config, spool: Spool, events: ReceiverEvents) -> None:
        """Bind the policy (cfg), the spool objects go to, and where to report."""
        self.cfg = cfg
        self.spool = spool
        self.events = events
        self.refusing: str | None = None  # a reason: answer Out of Resources to every store
        self.progress_seconds = PROGRESS_SECONDS
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._states: dict[Association, AssociationInfo] = {}

    @property
    def active(self) -> int:
        """Associations accepted or being negotiated whose connection has not closed yet."""
        with self._lock:
            return len(self._states)

    def _slots_taken(self) -> int:
        # Call with the lock held. Released and aborted associations no longer count,
        # although their threads (which pynetdicom would count) are still winding down.
        return sum(
            1
            for assoc, info in self._states.items()
            if info.outcome is None and not assoc.is_released and not assoc.is_aborted
        )

    def _take_slot(self, assoc: Association, info: AssociationInfo) -> bool:
        limit = self.cfg.node.max_associations
        deadline = time.monotonic() + SLOT_WAIT_SECONDS
        with self._slot_freed:
            while self._slots_taken() >= limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._slot_freed.wait(left)
            self._states[assoc] = info
            return True

    def info(self, assoc: Association) -> AssociationInfo | None:
        """The state of an association, if it is one of ours."""
        with self._lock:
            return self._states.get(assoc)

    # -- association life cycle -----------------------------------------------------------

    def requested(self, assoc: Association) -> None:
        """Decide on an A-ASSOCIATE-RQ; reject it here if the policy says so."""
        rq = assoc.requestor.primitive
        calling = str(getattr(rq, "calling_ae_title", "") or "").strip()
        called = str(getattr(rq, "called_ae_title", "") or "").strip()
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
        if not decision.accepted:
            reject(assoc, decision.diagnostic)
            self._rejected(info, decision.reason)
            return
        if not self._take_slot(assoc, info):
            reject(assoc, DIAG_LOCAL_LIMIT_EXCEEDED, REJECT_TRANSIENT, SOURCE_PROVIDER_PRESENTATION)
            limit = self.cfg.node.max_associations
            self._rejected(info, f"too many associations (max_associations = {limit})")
            return
        _no_delay(assoc)
        accept_unknown_classes(assoc)

    def rejected(self, assoc: Association) -> None:
        """pynetdicom rejected an association our policy had accepted."""
        with self._slot_freed:
            info = self._states.pop(assoc, None)
            self._slot_freed.notify_all()
        if info is not None:
            self._rejected(info, "rejected during negotiation")

    def _rejected(self, info: AssociationInfo, reason: str) -> None:
        info.outcome = "rejected"
        log.info("%s rejected: %s", info.describe(), reason)
        self.events.association_rejected(info, reason)

    def accepted(self, assoc: Association) -> None:
        """The association is established."""
        info = self.info(assoc)
        if info is not None:
            info.accepted = True
            self.events.association_accepted(info)

    def ended(self, assoc: Association, outcome: str) -> None:
        """Note how an association ended (released, aborted); its slot is free again."""
        with self._slot_freed:
            info = self._states.get(assoc)
            if info is not None and info.outcome is None:
                info.outcome = outcome
            self._slot_freed.notify_all()

    def closed(self, assoc: Association) -> None:
        """The connection closed: report the association once, drop half-received files."""
        with self._slot_freed:
            info = self._states.pop(assoc, None)
            self._slot_freed.notify_all()
        dropped = self.spool.discard_owner(assoc)
        if info is None:
            return
        info.outcome = info.outcome or "closed"
        if dropped:
            info.note = f"{dropped} object(s) cut off mid-transfer"
        if not info.accepted:
            return
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
    supported = assoc.acceptor.supported_contexts
    known = {str(cx.abstract_syntax) for cx in supported}
    extra: list[PresentationContext] = []
    for rq in assoc.requestor.requested_contexts:
        uid = str(rq.abstract_syntax or "")
        if uid in known or uid in UID_dictionary or not _is_uid(uid):
            continue  # ours, or a known non-storage service we do not offer
        if not _register_unknown(uid):
            continue
        cx = PresentationContext()
        cx.abstract_syntax = UID(uid)
        cx.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
        extra.append(cx)
        known.add(uid)
    if extra:
        assoc.acceptor.supported_contexts = [*supported, *extra]


def _is_uid(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text)


def _register_unknown(uid: str) -> bool:
    with _UNKNOWN_LOCK:
        if uid in _UNKNOWN_CLASSES:
            return True
        if len(_UNKNOWN_CLASSES) >= MAX_UNKNOWN_CLASSES:
            return False
        keyword = f"DeidNodeUnknownStorage{len(_UNKNOWN_CLASSES)}"
        try:
            register_uid(uid, keyword, StorageServiceClass)
        except Exception:  # pynetdicom refuses it: leave the context rejected
            return False
        _UNKNOWN_CLASSES[uid] = keyword
        return True


def reject(
    assoc: Association,
    diagnostic: int,
    result: int = REJECT_PERMANENT,
    source: int = SOURCE_SERVICE_USER,
) -> None:
    """Send A-ASSOCIATE-RJ (by default rejected-permanent, service user) from EVT_REQUESTED.

    pynetdicom skips its own negotiation once EVT_REQUESTED has rejected, but then shuts
    the socket at once, racing the DUL thread that still has to send the RJ PDU. kill()
    waits, as pynetdicom's own rejections do, until the DUL is idle: the peer has read
    the RJ and closed, or the ARTIM timer (acse_timeout) has expired.
    """
    assoc.acse.send_reject(result, source, diagnostic)
    assoc.kill()


def _no_delay(assoc: Association) -> None:
    # Responses are small PDUs; without TCP_NODELAY each can wait for a delayed ACK.
    sock = getattr(assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def failure(status: int, reason: str) -> Dataset:
    """A status dataset with an ErrorComment (LO: at most 64 characters, no PHI)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = reason[:64]
    return ds


# --------------------------------------------------------------------------------------------
# Handlers (bound with the Receiver as extra argument)


def _internal_error(what: str, exc: Exception) -> None:
    # The exception's message may quote values from the request: log its type only.
    log.error("internal error in the %s handler (%s)", what, type(exc).__name__)


def handle_requested(event: Event, receiver: Receiver) -> None:
    """EVT_REQUESTED: apply the association policy, rejecting here if it says so."""
    try:
        receiver.requested(event.assoc)
    except Exception as exc:
        _internal_error("association request", exc)
        if not event.assoc.is_rejected:  # fail closed: a request we could not judge
            with contextlib.suppress(Exception):
                reject(event.assoc, DIAG_CALLING_AE_NOT_RECOGNISED)


def handle_rejected(event: Event, receiver: Receiver) -> None:
    """EVT_REJECTED: pynetdicom rejected a request itself (association limit)."""
    try:
        receiver.rejected(event.assoc)
    except Exception as exc:
        _internal_error("association rejected", exc)


def handle_accepted(event: Event, receiver: Receiver) -> None:
    """EVT_ACCEPTED: the association is established."""
    try:
        receiver.accepted(event.assoc)
    except Exception as exc:
        _internal_error("association accepted", exc)


def handle_released(event: Event, receiver: Receiver) -> None:
    """EVT_RELEASED: remember the outcome."""
    try:
        receiver.ended(event.assoc, "released")
    except Exception as exc:
        _internal_error("association released", exc)


def handle_aborted(event: Event, receiver: Receiver) -> None:
    """EVT_ABORTED: remember the outcome."""
    try:
        receiver.ended(event.assoc, "aborted")
    except Exception as exc:
        _internal_error("association aborted", exc)


def handle_conn_close(event: Event, receiver: Receiver) -> None:
    """EVT_CONN_CLOSE: close the association's books."""
    try:
        receiver.closed(event.assoc)
    except Exception as exc:
        _internal_error("connection close", exc)


def handle_echo(event: Event, receiver: Receiver) -> int:
    """EVT_C_ECHO: Success."""
    return STATUS_SUCCESS


def handle_store(event: Event, receiver: Receiver) -> int | Dataset:
    """EVT_C_STORE: spool the data set, then answer."""
    try:
        return receiver.store(event)
    except Exception as exc:
        _internal_error("C-STORE", exc)
        return failure(STATUS_PROCESSING_FAILURE, "internal error")


def event_handlers(receiver: Receiver) -> list[EventHandlerType]:
    """The (event, handler, [receiver]) bindings for ``AE.start_server``."""
    return [
        (evt.EVT_REQUESTED, handle_requested, [receiver]),
        (evt.EVT_REJECTED, handle_rejected, [receiver]),
        (evt.EVT_ACCEPTED, handle_accepted, [receiver]),
        (evt.EVT_RELEASED, handle_released, [receiver]),
        (evt.EVT_ABORTED, handle_aborted, [receiver]),
        (evt.EVT_CONN_CLOSE, handle_conn_close, [receiver]),
        (evt.EVT_C_ECHO, handle_echo, [receiver]),
        (evt.EVT_C_STORE, handle_store, [receiver]),
    ]


# --------------------------------------------------------------------------------------------
# The AE


def build_ae(cfg: Config) -> ApplicationEntity:
    """An AE with our title, limits and timeouts, every storage SOP class in every
    transfer syntax pynetdicom knows, and Verification."""
    configure_pynetdicom()
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


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings the node relies on."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to disk, never whole in memory
    _config.LOG_HANDLER_LEVEL = "none"  # the standard handlers log UIDs at DEBUG
    install_intake_hook()


# pynetdicom writes chunked data sets with tempfile.NamedTemporaryFile in the system temp
# folder (no way to choose another). We replace that name in its module with a factory that
# finds the receiving AE from the DUL thread and opens an IncomingFile in its spool instead.
_SPOOLS: weakref.WeakKeyDictionary[ApplicationEntity, Spool] = weakref.WeakKeyDictionary()
_HOOK_LOCK = threading.Lock()
_original_ntf: Callable[..., Any] | None = None


def attach_spool(ae: ApplicationEntity, spool: Spool) -> None:
    """Receive this AE's C-STORE data sets into `spool`."""
    with _HOOK_LOCK:
        _SPOOLS[ae] = spool


def detach_spool(ae: ApplicationEntity) -> None:
    """Undo :func:`attach_spool`."""
    with _HOOK_LOCK:
        _SPOOLS.pop(ae, None)


def _incoming_file(*args: Any, **kwargs: Any) -> Any:
    assoc = getattr(threading.current_thread(), "assoc", None)  # the DUL thread's association
    ae = getattr(assoc, "ae", None)
    with _HOOK_LOCK:
        spool = _SPOOLS.get(ae) if isinstance(ae, ApplicationEntity) else None
    if spool is None:
        assert _original_ntf is not None
        return _original_ntf(*args, **kwargs)
    return spool.open_incoming(assoc)


def install_intake_hook() -> None:
    """Make pynetdicom's chunked C-STORE files IncomingFiles (idempotent)."""
    global _original_ntf
    with _HOOK_LOCK:
        if _original_ntf is None:
            _original_ntf = tempfile.NamedTemporaryFile
        _dimse_messages.NamedTemporaryFile = _incoming_file  # type: ignore[attr-defined]


__all__ = [
    "AssociationInfo",
    "Decision",
    "HeaderInfo",
    "IncomingFile",
    "Receiver",
    "ReceiverEvents",
    "RefusedObject",
    "UnreadableObject",
    "attach_spool",
    "build_ae",
    "check_header",
    "decide",
    "detach_spool",
    "event_handlers",
    "handle_echo",
    "handle_store",
]
