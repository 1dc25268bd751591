"""The supervisor: recovery, the receiving processes, a worker pool, the audit writer, signals.

Life of an object: a receiving process (:mod:`deid_node.runtime.receivers`) publishes it
into spool/, acknowledges it and reports it over its pipe; the node submits
it to a process pool running :func:`deid_node.deid.pipeline.process_file`; the outcome becomes
an audit row written by the audit writer thread (batched); only once that row is committed
is the spool file removed (or moved to quarantine/). A crash anywhere in between leaves the
spool file, which the next start processes again before serving. That redo may find the
output its first attempt wrote (the pipeline then says ``duplicate``) or even the row it
committed: its row carries the spool stem as ``receipt_id``, and the audit records it
once, as ``stored`` unless another row stored that output (a real second send). The
associations a crash cut are closed as ``interrupted`` once the redo is recorded.
"""

from __future__ import annotations

import functools
import heapq
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final

from deid_node.audit.db import AuditDB, Forwarding, open_audit
from deid_node.audit.records import ObjectRecord, Status
from deid_node.audit.writer import AuditWriter
from deid_node.clock import now
from deid_node.config import BurnedInPolicy, Config, Durability
from deid_node.deid.pipeline import Outcome
from deid_node.deid.secret import load_secret
from deid_node.durable import write_atomic
from deid_node.errors import AuditError, ConfigError, DeidNodeError, StorageError, describe_error
from deid_node.intake.process import spool_tag
from deid_node.intake.receiver import PROGRESS_SECONDS, AssociationInfo, RefusedObject
from deid_node.intake.shared import Budget, shared_budget_cells
from deid_node.intake.spool import Spool, SpoolItem
from deid_node.logs import quiet_libraries
from deid_node.net.server_tls import server_context
from deid_node.runtime.linkage import linkage_for
from deid_node.runtime.receivers import ReceivingProcesses
from deid_node.runtime.signals import stop_signals_ignored
from deid_node.runtime.worker import WorkResult, init_worker, kill_workers, pool_context, work

log = logging.getLogger(__name__)

LISTEN_BACKLOG: Final = 128  # connections the kernel holds until a receiving process accepts
MAX_WORKER_CRASHES: Final = 3  # an object that kills its worker this often is quarantined
NODE_ID_FILE: Final = "node.id"  # in data_dir: names this node on its association rows
_STORAGE_RETRY_SECONDS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _Pending:
    item: SpoolItem
    crashes: int = 0
    storage_failures: int = 0
    redo: bool = False  # may have been processed before (recovered, or its worker died)


@dataclass(order=True)
class _Retry:
    due: float
    stem: str = field(compare=False)


class Node:
    """A running deid-node: ``start()``, ``wait_idle()``, ``stop()``; or ``serve_forever()``.

    ``host``/``port`` override the config (tests use port 0 and read :attr:`address`).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        host: str | None = None,
        port: int | None = None,
        drain_timeout: float | None = None,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        """Prepare a node for `cfg`; nothing is opened before :meth:`start`.

        `progress_seconds`: how often a long association logs how far it got.
        """
        self.cfg = cfg
        self._bind = (host or cfg.node.host, cfg.node.port if port is None else port)
        self._drain_timeout = (
            drain_timeout
            if drain_timeout is not None
            else cfg.node.network_timeout + cfg.node.dimse_timeout
        )
        self._fsync = cfg.node.durability is Durability.FSYNC
        # Any policy but `allow` looks at pixels (a derived image is looked at even under
        # `quarantine`), so workers then need the pixel libraries.
        self._cleans_pixels = any(
            p.burned_in_annotation is not BurnedInPolicy.ALLOW for p in cfg.profiles.values()
        )
        self._progress_seconds = progress_seconds
        # Shared with the receiving processes: they reserve, we release once processed.
        self._budget_cells = shared_budget_cells(cfg.node.receiver_count)
        self.spool = Spool(
            cfg.node.spool,
            cfg.node.quarantine,
            max_bytes=cfg.node.spool_max_bytes,
            max_object_bytes=cfg.node.max_object_bytes,
            fsync=self._fsync,
            budget=Budget(
                cfg.node.spool_max_bytes, self._budget_cells, index=cfg.node.receiver_count
            ),
        )
        self._refusing: str | None = None  # why every C-STORE is refused now, if it is
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, _Pending] = {}
        self._retries: list[_Retry] = []
        self._pool: ProcessPoolExecutor | None = None
        self._pool_broken = False
        self._pool_replacements = 0
        self._next_pool_at = 0.0
        self._pool_generation = 0  # which pool a call went to: its failures are counted apart
        self._failed_calls: dict[int, int] = {}  # generation -> calls its break failed so far
        self._cut: set[str] = set()  # associations of a dead receiving process, to close
        self._key = b""
        self._node_id = ""
        self._db: AuditDB | None = None
        self._writer: AuditWriter | None = None
        self._sock: socket.socket | None = None
        self._receivers: ReceivingProcesses | None = None
        self._dispatcher: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop_requested = threading.Event()  # serve_forever: a signal arrived
        self._closing = threading.Event()  # stop(): the dispatcher ends
        self._force_stop = threading.Event()
        self._started = False
        self._forward_context = multiprocessing.get_context("spawn")
        self._forward_wake = self._forward_context.Event()
        self._forward_stop = self._forward_context.Event()
        self._forwarder: BaseProcess | None = None

    # -- life cycle -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the SCP listens on."""
        if self._sock is None:
            raise RuntimeError("the node is not serving: call start() first")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Open everything, process what a crash left in spool/, then serve."""
        if self._started:
            return
        quiet_libraries()
        node = self.cfg.node
        try:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {node.data_dir}: {exc.strerror}") from None
        self.spool.prepare()
        self._key = load_secret(node.secret_path)
        self._node_id = node_identity(node.data_dir)
        self._db = open_audit(self.cfg.database_url)
        self._started = True
        try:
            self._writer = AuditWriter(self._db, self._notify)
            self._writer.start()
            if self.cfg.forwarding:
                self._start_forwarder()
            with stop_signals_ignored():
                self._pool = self._new_pool()
                self._warm_up(self._pool)
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="deid-dispatcher", daemon=True
            )
            self._dispatcher.start()
            self._recover()
            self._close_interrupted()
            self._sock = self._listen()
            self._receivers = ReceivingProcesses(
                self.cfg,
                self._sock,
                self,
                budget_cells=self._budget_cells,
                progress_seconds=self._progress_seconds,
                drain_timeout=self._drain_timeout,
                changed=self._notify,
                lost=self._receiver_lost,
            )
            self._receivers.start()
        except BaseException:
            self.stop(timeout=10)
            raise
        host, port = self.address
        log.info(
            "serving AE %s on %s:%d: %d source(s), %d receiving process(es), %d worker(s), "
            "durability %s",
            node.ae_title,
            host,
            port,
            len(self.cfg.sources),
            node.receiver_count,
            node.worker_count,
            node.durability.value,
        )

    def _listen(self) -> socket.socket:
        """Bind the one listening socket every receiving process accepts on."""
        tls = self.cfg.node.tls
        if tls is not None:
            server_context(tls)  # a bad certificate or key is a ConfigError here, not there
        host, port = self._bind
        try:
            # SO_REUSEADDR as pynetdicom's server sets it: a restart finds the port free.
            return socket.create_server((host, port), backlog=LISTEN_BACKLOG)
        except OSError as exc:
            raise ConfigError(
                f"node.port: cannot listen on {host}:{port}: {exc.strerror}; "
                "is another node or program using it?"
            ) from None

    def _start_forwarder(self) -> None:
        """Start the forwarding process (forward/process.py): it sends from the outbox."""
        from deid_node.forward.process import run
        from deid_node.net.client_tls import client_context

        for dest in self.cfg.destinations.values():
            if dest.tls is not None:
                client_context(dest.tls, dest.name)  # a bad certificate: ConfigError now

        with stop_signals_ignored():
            self._forwarder = self._forward_context.Process(
                target=run,
                args=(
                    self.cfg,
                    os.getpid(),
                    self._forward_wake,
                    self._forward_stop,
                    logging.getLogger("deid_node").getEffectiveLevel(),
                ),
                name="deid-forwarder",
                daemon=True,
            )
            self._forwarder.start()
        destinations = sorted({d for p in self.cfg.profiles.values() for d in p.forward_to})
        log.info("forwarding to %s", ", ".join(destinations))

    def _stop_forwarder(self, timeout: float) -> None:
        process, self._forwarder = self._forwarder, None
        if process is None:
            return
        self._forward_stop.set()
        self._forward_wake.set()
        process.join(timeout)
        if process.is_alive():  # claims it held go back to the queue at the next start
            log.warning("forwarding process did not stop in %.0f s; killing it", timeout)
            process.kill()
            process.join(5)

    def wait_forwarded(self, timeout: float) -> bool:
        """Wait until no forward job is pending or in flight (tests, scripts/bench)."""
        deadline = time.monotonic() + timeout
        while self._db is not None:
            counts = self._db.outbox.counts()
            if not any(c.pending or c.in_flight for c in counts):
                return True
            if self._stop_requested.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                return False
            if time.monotonic() >= deadline:
                return False
        return False

    def _recover(self) -> None:
        items = self.spool.recover()
        if not items:
            return
        log.info("recovery: %d acknowledged object(s) left in spool, processing first", len(items))
        for item in items:
            self._schedule(item, redo=True)
        last = time.monotonic()
        with self._changed:
            while self._pending:
                self._changed.wait(1.0)
                if time.monotonic() - last > 10:
                    log.info("recovery: %d object(s) to go", len(self._pending))
                    last = time.monotonic()
        log.info("recovery: done")

    def _close_interrupted(self) -> None:
        """Close the associations a crash of this node left open; their objects are
        recorded now (recovery), so their counts are right."""
        assert self._db is not None
        try:
            closed = self._db.close_interrupted(self._node_id)
        except AuditError as exc:  # bookkeeping: the node serves on, the next start retries
            log.error("cannot close interrupted associations: %s", exc)
            return
        if closed:
            log.warning("%d association(s) cut by a crash closed as interrupted", closed)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, let associations finish, drain spool/, close; True if drained."""
        if not self._started:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._receivers is not None:
            # Each receiving process stops accepting, lets its associations finish (up to
            # the drain timeout, aborting the rest) and ends; their reports are handled.
            self._receivers.stop(self._force_stop)
        if self._sock is not None:
            self._sock.close()
        self._wait(lambda: not self._pending or self._force_stop.is_set(), _remaining(deadline))
        with self._lock:
            left = len(self._pending)
        drained = left == 0
        if not drained:
            log.warning("stopping with %d object(s) left in spool for the next start", left)
        self._closing.set()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(5)
        forced = self._force_stop.is_set()
        if self._writer is not None:
            self._writer.close(5.0 if forced else _remaining(deadline))
        self._stop_forwarder(2.0 if forced else 15.0)
        if self._pool is not None:
            self._pool.shutdown(wait=not forced, cancel_futures=True)
        if self._db is not None:
            self._db.close()
        self._started = False
        log.info("stopped")
        return drained

    def _associations_running(self) -> bool:
        return self._receivers is not None and self._receivers.active > 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no association is open, spool/ is drained and audit rows are written."""

        def idle() -> bool:
            writer_idle = self._writer is None or self._writer.idle
            return not self._pending and writer_idle and not self._associations_running()

        deadline = time.monotonic() + timeout
        while self._wait(idle, _remaining(deadline)):
            # What the receiving processes sent before now may still be in their pipes.
            receivers = self._receivers
            if receivers is None or (receivers.sync(_remaining(deadline) or 0.0) and idle()):
                return True
        return False

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    return False
                # Association threads end without notifying us: look again now and then.
                self._changed.wait(0.05 if left is None else min(left, 0.05))
        return True

    def serve_forever(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully (drained)."""
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.getsignal(s) for s in handled}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested.is_set():
                self._force_stop.set()  # a second signal: stop now, the spool waits
            self._stop_requested.set()

        for s in handled:
            signal.signal(s, on_signal)
        try:
            self.start()
            while not self._stop_requested.wait(1.0):
                pass
            log.info("stopping: no new associations; finishing open ones and the spool")
            self.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (thread-safe)."""
        self._stop_requested.set()

    def __enter__(self) -> Node:
        """Start the node."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the node."""
        self.stop(timeout=60)

    # -- scheduling -----------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.cfg.node.worker_count,
            mp_context=pool_context(pixels=self._cleans_pixels),
            initializer=init_worker,
            initargs=(
                dict(self.cfg.profiles),
                self._key,
                self.cfg.node.output,
                self._fsync,
                os.getpid(),
            ),
        )

    def _warm_up(self, pool: ProcessPoolExecutor) -> None:
        # Start the forkserver and the workers now, not on the first object.
        try:
            for future in [pool.submit(os.getpid) for _ in range(self.cfg.node.worker_count)]:
                future.result()
        except (BrokenProcessPool, OSError) as exc:
            raise DeidNodeError(
                f"cannot start the de-identification worker processes ({describe_error(exc)})"
            ) from None

    def _schedule(self, item: SpoolItem, *, redo: bool = False) -> None:
        # The dispatcher thread submits: an association thread never waits on the pool.
        with self._lock:
            self._pending[item.stem] = _Pending(item, redo=redo)
        self._retry_later(item.stem, 0.0)

    def _receiver_lost(self, index: int, cut: frozenset[str] = frozenset()) -> None:
        """A receiving process died: free what it held, process what it acknowledged, and
        close the associations it cut once their objects are recorded."""
        tag = spool_tag(index)
        self.spool.budget.clear(index)
        self.spool.abandon_incoming(tag)  # never acknowledged: the senders got no Success
        # Listed and checked under the lock: finish() deletes the file before it takes the
        # lock to drop the entry, so an object not pending here is not being finished.
        with self._lock:
            orphans = [i for i in self.spool.published(tag) if i.stem not in self._pending]
            for item in orphans:
                self._pending[item.stem] = _Pending(item)
            self._cut.update(cut)
        if orphans:
            log.warning("%d acknowledged object(s) of that receiving process adopted", len(orphans))
        for item in orphans:
            self._retry_later(item.stem, 0.0)

    def _submit(self, stem: str) -> None:
        with self._lock:
            pending = self._pending.get(stem)
            pool = self._pool
            broken = self._pool_broken
            generation = self._pool_generation
        if pending is None:
            return
        if pool is None or broken:
            self._retry_later(stem, 0.25)
            return
        try:
            future = pool.submit(work, str(pending.item.path), pending.item.receipt.profile)
        except (BrokenProcessPool, RuntimeError):
            with self._lock:
                self._pool_broken = True
            self._retry_later(stem, 0.25)
            return
        future.add_done_callback(functools.partial(self._done, stem, generation))

    def _retry_later(self, stem: str, delay: float) -> None:
        with self._lock:
            heapq.heappush(self._retries, _Retry(time.monotonic() + delay, stem))
        self._wake.set()

    def _done(self, stem: str, generation: int, future: Future[WorkResult]) -> None:
        with self._lock:
            pending = self._pending.get(stem)
        if pending is None:
            return
        try:
            result = future.result()
        except BrokenProcessPool:
            with self._lock:
                self._pool_broken = True
                failed = self._failed_calls.get(generation, 0)
                self._failed_calls[generation] = failed + 1
            # A broken pool fails every call it holds, in the order they were submitted,
            # and its workers take them in that order: only the first worker_count can
            # have been running. The rest waited in its queue; they are not blamed.
            if failed < self.cfg.node.worker_count:
                pending.crashes += 1
            # Its worker (or another) may have written the output before it died.
            pending.redo = True
            if pending.crashes >= MAX_WORKER_CRASHES:
                log.error("spool object %s crashed its worker %d times", stem, pending.crashes)
                self._record(pending, Outcome(Status.QUARANTINED, "de-identification crashed"))
            else:
                self._retry_later(stem, 0.25)
            return
        except Exception as exc:
            reason = f"internal error ({describe_error(exc)})"
            self._record(pending, Outcome(Status.QUARANTINED, reason))
            return
        self._pool_replacements = 0
        if result.outcome is None:
            pending.storage_failures += 1
            pending.redo = True  # the output may be in place (a failed fsync after the move)
            delay = _STORAGE_RETRY_SECONDS[
                min(pending.storage_failures, len(_STORAGE_RETRY_SECONDS)) - 1
            ]
            log.error(
                "cannot write output: %s; refusing new objects, retrying in %.0f s",
                result.storage_error,
                delay,
            )
            self._set_refusing("output storage unavailable")
            self._retry_later(stem, delay)
            return
        if self._refusing is not None:
            log.info("output storage writable again; accepting objects")
            self._set_refusing(None)
        self._record(pending, result.outcome)

    def _set_refusing(self, reason: str | None) -> None:
        if reason == self._refusing:
            return
        self._refusing = reason
        if self._receivers is not None:
            self._receivers.set_refusing(reason)

    def _record(self, pending: _Pending, outcome: Outcome) -> None:
        item = pending.item
        receipt = item.receipt
        status = outcome.status
        reason = outcome.reason
        if status is Status.SKIPPED:  # not DICOM after all: the header check let it through
            status, reason = Status.QUARANTINED, reason or "not a DICOM data set"
        quarantine = self.spool.quarantine_path(item) if status is Status.QUARANTINED else None
        record = ObjectRecord(
            received_at=receipt.received_at,
            processed_at=now(),
            association_id=receipt.association_id,
            calling_ae=receipt.calling_ae,
            called_ae=receipt.called_ae,
            peer_address=receipt.peer_address,
            profile=receipt.profile,
            sop_class_uid=outcome.sop_class_uid or receipt.sop_class_uid,
            transfer_syntax_uid=outcome.transfer_syntax_uid or receipt.transfer_syntax_uid,
            size_bytes=receipt.size_bytes,
            status=status,
            reason=reason,
            pseudo_patient_id=outcome.pseudo_patient_id,
            pseudo_study_uid=outcome.pseudo_study_uid,
            pseudo_series_uid=outcome.pseudo_series_uid,
            pseudo_sop_uid=outcome.pseudo_sop_uid,
            output_path=str(outcome.output_path) if outcome.output_path else None,
            quarantine_path=str(quarantine) if quarantine else None,
            pixels=outcome.pixels,
            receipt_id=item.stem,
        )
        profile = self.cfg.profiles.get(receipt.profile)
        record_linkage = profile is not None and profile.record_linkage
        linkage = linkage_for(receipt.profile, record_linkage, outcome)
        if status is Status.QUARANTINED:
            log.warning("spool object %s quarantined: %s", item.stem, reason)

        forwarding = None
        if profile is not None and profile.forward_to and outcome.output_path is not None:
            forwarding = Forwarding(profile.forward_to, profile.keep_output)

        def finish() -> None:
            try:
                if status is Status.QUARANTINED:
                    self.spool.move_to_quarantine(item, reason or "")
                else:
                    self.spool.remove(item)
            finally:
                if forwarding is not None:
                    self._forward_wake.set()  # its jobs are committed: send them now
                with self._changed:
                    self._pending.pop(item.stem, None)
                    self._changed.notify_all()

        assert self._writer is not None
        self._writer.put_object(record, linkage, finish, forwarding, redo=pending.redo)

    def _dispatch(self) -> None:
        """Submissions, retries, pool replacement after a crash, association bookkeeping."""
        while not self._closing.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                broken = self._pool_broken
            if broken:
                self._replace_pool()
            due: list[str] = []
            with self._lock:
                t = time.monotonic()
                while self._retries and self._retries[0].due <= t:
                    due.append(heapq.heappop(self._retries).stem)
            for stem in due:
                self._submit(stem)
            self._close_cut()
            self._notify()

    def _close_cut(self) -> None:
        """Close the associations a dead receiving process cut, once none of their objects
        waits: their rows are committed, or queued to the writer before this call."""
        with self._lock:
            if not self._cut:
                return
            waiting = {p.item.receipt.association_id for p in self._pending.values()}
            ready = self._cut - waiting
            self._cut -= ready
        if not ready:
            return
        node = self._node_id

        def close(db: AuditDB) -> None:
            closed = db.close_interrupted(node, ready)
            log.warning("%d association(s) a receiving process cut closed as interrupted", closed)

        self._call("close interrupted associations", close)

    def _replace_pool(self) -> None:
        # Back off when pools keep breaking (e.g. workers cannot start): objects stay in
        # spool/ meanwhile, nothing is lost.
        if time.monotonic() < self._next_pool_at:
            return
        self._pool_replacements += 1
        self._next_pool_at = time.monotonic() + min(30.0, 0.25 * 2**self._pool_replacements)
        log.error("a de-identification worker died; starting a new worker pool")
        with self._lock:
            old, self._pool = self._pool, None
        if old is not None:
            kill_workers(old)  # a survivor ignores the pool's SIGTERM and may hang its pool
            old.shutdown(wait=False, cancel_futures=True)
        pool = self._new_pool()
        with self._lock:
            self._pool = pool
            self._pool_broken = False
            self._pool_generation += 1
            # A broken pool's failures arrive before it is replaced; older ones are done.
            for gone in [g for g in self._failed_calls if g < self._pool_generation - 2]:
                del self._failed_calls[gone]

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- ReceiverEvents -------------------------------------------------------------------

    def association_accepted(self, info: AssociationInfo) -> None:
        """Audit the start of an accepted association."""
        self._call(
            "record an association",
            lambda db: db.record_association_start(
                info.id,
                info.started_at,
                info.peer_address,
                info.calling_ae,
                info.called_ae,
                self._node_id,
            ),
        )

    def association_rejected(self, info: AssociationInfo, reason: str) -> None:
        """Audit a rejected association."""
        self._call(
            "record a rejected association",
            lambda db: db.record_rejected_association(
                info.id,
                info.started_at,
                info.peer_address,
                info.calling_ae,
                info.called_ae,
                reason,
                self._node_id,
            ),
        )

    def association_ended(self, info: AssociationInfo) -> None:
        """Audit the end of an association."""
        ended = now()
        self._call(
            "record an association end",
            lambda db: db.record_association_end(
                info.id, ended, info.objects, info.outcome or "closed", info.note
            ),
        )
        self._notify()

    def object_refused(self, refused: RefusedObject) -> None:
        """Audit a C-STORE answered with a failure status."""
        info = refused.association
        record = ObjectRecord(
            received_at=refused.received_at,
            processed_at=refused.received_at,
            association_id=info.id,
            calling_ae=info.calling_ae,
            called_ae=info.called_ae,
            peer_address=info.peer_address,
            profile=info.profile or "",
            sop_class_uid=refused.sop_class_uid,
            transfer_syntax_uid=refused.transfer_syntax_uid,
            size_bytes=refused.size_bytes,
            status=Status.REJECTED,
            reason=f"refused with 0x{refused.status:04X}: {refused.reason}",
            pseudo_patient_id=None,
            pseudo_study_uid=None,
            pseudo_series_uid=None,
            pseudo_sop_uid=None,
            output_path=None,
        )
        if self._writer is not None:
            self._writer.put_object(record)

    def object_received(self, item: SpoolItem) -> None:
        """Schedule an acknowledged object for de-identification."""
        self._schedule(item)

    def associations_changed(self, active: int) -> None:
        """Nothing to do: :meth:`wait_idle` reads the count from the receiving processes."""

    def _call(self, what: str, call: Callable[[AuditDB], None]) -> None:
        if self._writer is not None:
            self._writer.put_call(what, call)


def node_identity(data_dir: Path) -> str:
    """This node's name on its association rows: data_dir/node.id, made at first start.

    Per data_dir, as spool/ is: nodes sharing one database each close only their own
    interrupted associations, and a restart (new host name, new container) keeps it.
    """
    path = data_dir / NODE_ID_FILE
    try:
        found = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        found = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {describe_error(exc)}") from None
    if found:
        return found[:64]
    made = secrets.token_hex(8)
    write_atomic(path, [made.encode("ascii") + b"\n"], fsync=True)  # StorageError if not
    return made


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


__all__ = ["NODE_ID_FILE", "Node", "node_identity"]
