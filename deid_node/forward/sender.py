"""One association to one destination: propose what a batch needs, send, judge each status.

An association is kept open across batches while it covers their SOP class / transfer
syntax pairs; one that does not is replaced by one that proposes them all. Each pair is
proposed as it is and, as a fallback, in Explicit and Implicit VR Little Endian: a file
the destination will not take compressed is decoded by pydicom's pixel plugins and sent
uncompressed, or fails with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from deid_node.audit.outbox import ForwardJob, ForwardResult
from deid_node.clock import now
from deid_node.config import DestinationConfig
from deid_node.net.client_tls import client_context
from deid_node.net.pynetdicom_compat import (
    install_wakeups,
    only_senders_take_responses,
    set_no_delay,
)

__all__ = ["Sender"]

log = logging.getLogger(__name__)

# The forwarding process configures pynetdicom at its start (configure_sending): a file is
# streamed from disk as it is (no decoding) whenever its own syntax was accepted, and the
# reactor threads of our associations wait for work instead of polling.
_UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS: Final = 128  # PS3.8: presentation context IDs are odd numbers 1..255
_WARNINGS: Final = frozenset({0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class _Verdict:
    transient: bool  # True: retried for as long as it takes; False: counts towards failure
    error: str


def _status_text(status: int) -> str:
    if 0xA700 <= status <= 0xA7FF:
        return f"0x{status:04X} (out of resources)"
    if 0xA900 <= status <= 0xA9FF:
        return f"0x{status:04X} (data set does not match SOP class)"
    if 0xC000 <= status <= 0xCFFF:
        return f"0x{status:04X} (cannot understand)"
    if status == 0x0122:
        return "0x0122 (SOP class not supported)"
    if status in _WARNINGS:
        return f"0x{status:04X} (warning)"
    return f"0x{status:04X}"


class Sender:
    """Sends batches of one destination's jobs over a long-lived association."""

    def __init__(self, dest: DestinationConfig, calling_ae: str) -> None:
        """Prepare for `dest`; nothing is opened before the first :meth:`send`."""
        self.dest = dest
        self._calling_ae = dest.calling_ae or calling_ae
        self._tls = client_context(dest.tls, dest.name) if dest.tls is not None else None
        self._assoc: Association | None = None
        self._pairs: set[tuple[str, str]] = set()
        self._last_used = 0.0
        self.associations = 0  # opened so far, for the log line

    # -- association ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether an association is open now."""
        return self._assoc is not None and self._assoc.is_established

    def release(self) -> None:
        """Release the association, if one is open."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def release_if_idle(self) -> None:
        """Release an association that had nothing to send for `idle_release` seconds."""
        if self._assoc is not None and time.monotonic() - self._last_used >= self.dest.idle_release:
            self.release()

    def _associate(self, pairs: set[tuple[str, str]]) -> str | None:
        """Open an association proposing every pair; None, or why it could not be opened."""
        ae = AE(ae_title=self._calling_ae)
        timeout = self.dest.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        # One transfer syntax per context, so that the destination says yes or no to each:
        # the file's own (sent from disk as it is), then the two uncompressed fallbacks.
        for sop in sorted({sop for sop, _ in pairs}):
            own = sorted({ts for s, ts in pairs if s == sop})
            for syntax in [*own, *(ts for ts in _UNCOMPRESSED if ts not in own)]:
                ae.add_requested_context(sop, [syntax])
        tls_args = None
        if self._tls is not None:
            tls_args = (self._tls, self.dest.tls.server_name or self.dest.host)  # type: ignore[union-attr]
        connected: list[bool] = []
        assoc = ae.associate(
            self.dest.host,
            self.dest.port,
            ae_title=self.dest.ae_title,
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))],
        )
        if assoc.is_established:
            # Each C-STORE-RSP is a small PDU: without TCP_NODELAY each object would wait
            # for the destination's delayed ACK (about 40 ms).
            set_no_delay(assoc)
            only_senders_take_responses(assoc)
            install_wakeups(assoc)  # no 1 ms polling sleeps between an object and its answer
            self._assoc, self._pairs = assoc, set(pairs)
            self.associations += 1
            return None
        where = f"{self.dest.host}:{self.dest.port}"
        if not connected:
            tls = ", or TLS refused" if self._tls is not None else ""
            return f"cannot associate: no connection to {where} (down or unreachable{tls})"
        if assoc.is_rejected:
            return f"cannot associate: rejected by {where}"
        return f"cannot associate: aborted by {where}"

    def _contexts_for(self, jobs: Sequence[ForwardJob]) -> str | None:
        needed = {(j.sop_class_uid, j.transfer_syntax_uid) for j in jobs}
        if self.connected and needed <= self._pairs:
            return None
        pairs = self._pairs | needed
        if 2 * len({s for s, _ in pairs}) + len(pairs) > _MAX_CONTEXTS:
            pairs = needed  # too many for one association: only this batch's
        self.release()
        return self._associate(pairs)

    # -- sending ----------------------------------------------------------------------

    def send(
        self, jobs: Sequence[ForwardJob], stop: threading.Event | None = None
    ) -> list[ForwardResult]:
        """Send every job (per study, in order); one result each.

        `stop` ends the batch early: what is left goes back to the queue unattempted.
        """
        ordered = sorted(jobs, key=lambda j: (j.pseudo_study_uid, j.id))
        problem = self._contexts_for(ordered)
        if problem is not None:
            return [self._judge(j, _Verdict(True, problem)) for j in ordered]
        results: list[ForwardResult] = []
        for i, job in enumerate(ordered):
            if stop is not None and stop.is_set():
                results.extend(ForwardResult(j.id, "release") for j in ordered[i:])
                break
            verdict = self._send_one(job)
            self._last_used = time.monotonic()
            results.append(self._judge(job, verdict))
            if not self.connected:
                lost = "association lost while sending"
                results.extend(self._judge(j, _Verdict(True, lost)) for j in ordered[i + 1 :])
                self._assoc = None
                break
        return results

    def _judge(self, job: ForwardJob, verdict: _Verdict | None) -> ForwardResult:
        if verdict is None:
            return ForwardResult(job.id, "sent")
        attempts = job.attempts + 1
        retry = self.dest.retry
        if not verdict.transient and attempts >= retry.max_retries:
            return ForwardResult(job.id, "failed", verdict.error)
        at: datetime = now() + timedelta(seconds=retry.pause(attempts))
        return ForwardResult(job.id, "retry", verdict.error, at)

    def _send_one(self, job: ForwardJob) -> _Verdict | None:
        """None when sent; else why not, and whether trying again later may help."""
        assoc = self._assoc
        assert assoc is not None
        path = Path(job.output_path)
        if not path.is_file():
            return _Verdict(False, "the output file is gone")
        exact, fallback = None, None
        for cx in assoc.accepted_contexts:
            if cx.abstract_syntax != job.sop_class_uid:
                continue
            syntax = cx.transfer_syntax[0]
            if syntax == job.transfer_syntax_uid:
                exact = cx
            elif syntax in _UNCOMPRESSED:
                fallback = cx
        if exact is None and fallback is None:
            name = UID(job.sop_class_uid).name
            return _Verdict(False, f"the destination refused SOP class {name}")
        try:
            if exact is not None:
                status = assoc.send_c_store(path)
            else:
                dataset = _uncompressed(path)
                if isinstance(dataset, str):
                    return _Verdict(False, dataset)
                status = assoc.send_c_store(dataset)
        except OSError as exc:
            return _Verdict(True, f"cannot read the output file ({exc.strerror})")
        except (ValueError, AttributeError) as exc:
            return _Verdict(False, f"cannot send the object ({exc.__class__.__name__})")
        except RuntimeError:
            return _Verdict(True, "association lost while sending")
        if "Status" not in status:
            return _Verdict(True, "no response (the association was aborted or timed out)")
        code = int(status.Status)
        if code == 0x0000:
            return None
        if code in _WARNINGS and self.dest.accept_warnings:
            return None
        return _Verdict(0xA700 <= code <= 0xA7FF, f"C-STORE status {_status_text(code)}")


def _uncompressed(path: Path) -> Dataset | str:
    """The file as an Explicit VR Little Endian data set, or why it cannot be."""
    ds = dcmread(path)
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax in _UNCOMPRESSED or not syntax.is_compressed:
        return ds
    try:
        ds.decompress()
    except Exception as exc:  # a codec's own error types: any failure is the same to us
        reason = exc.__class__.__name__
        return f"the destination refused {syntax.name} and it cannot be decoded ({reason})"
    return ds
