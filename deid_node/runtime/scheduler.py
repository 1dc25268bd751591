"""The node's work: the worker pool, its crash policy, the retry heap and the dispatcher.

Every acknowledged object is pending here from the moment it is reported (or recovered)
until its audit row is committed and its spool file removed. The dispatcher thread submits
due objects to the pool, so an association thread never waits on it; a worker that dies
breaks the pool, which is replaced (with a growing pause when pools keep breaking) and its
objects retried, each quarantined once it has killed its worker :data:`MAX_WORKER_CRASHES`
times. An output that cannot be written is retried with a growing pause while every new
C-STORE is refused.

A crash of the node leaves every pending object in spool/, and the next start processes
it again before serving. That redo may find the output its first attempt wrote (the
pipeline then says ``duplicate``) or even the row it committed: its row carries the spool
stem as ``receipt_id``, and the audit records it once, as ``stored`` unless another row
stored that output (a real second send). The associations a crash cut are closed as
``interrupted`` once the redo is recorded.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Final, Protocol

from deid_node.config import BurnedInPolicy, Config, Durability
from deid_node.deid.pipeline import Outcome
from deid_node.errors import DeidNodeError, describe_error
from deid_node.intake.process import spool_tag
from deid_node.intake.spool import Spool, SpoolItem
from deid_node.object_status import Status
from deid_node.runtime.metrics import NodeMetrics
from deid_node.runtime.signals import stop_signals_ignored
from deid_node.runtime.worker import WorkResult, init_worker, kill_workers, pool_context, work

log = logging.getLogger(__name__)

MAX_WORKER_CRASHES: Final = 3  # an object that kills its worker this often is quarantined
_STORAGE_RETRY_SECONDS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)


class OutcomeSink(Protocol):
    """Where the scheduler hands what became of each object (the recorder)."""

    def record_outcome(self, item: SpoolItem, outcome: Outcome, *, redo: bool) -> None:
        """Audit `item`'s outcome; :meth:`WorkScheduler.release` it once committed."""

    def close_cut(self, ids: frozenset[str]) -> None:
        """Close associations a dead receiving process cut (their objects are recorded)."""


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


class WorkScheduler:
    """Pending objects, the worker pool that de-identifies them and the dispatcher thread.

    `refusing` is called with a reason when output storage fails (None once it works
    again). One condition (:meth:`wait`, :meth:`notify`) tells waiters that something
    changed: an object finished, an association ended, a batch was written.
    """

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        *,
        refusing: Callable[[str | None], None],
        metrics: NodeMetrics | None = None,
    ) -> None:
        """Prepare; :meth:`start` starts the pool and the dispatcher."""
        self.cfg = cfg
        self._metrics = metrics
        self._in_flight = 0  # submitted to the pool, not yet done
        self._spool = spool
        self._refusing_cb = refusing
        self._fsync = cfg.node.durability is Durability.FSYNC
        # Any policy but `allow` looks at pixels (a derived image is looked at even under
        # `quarantine`), so workers then need the pixel libraries.
        self._cleans_pixels = any(
            p.burned_in_annotation is not BurnedInPolicy.ALLOW for p in cfg.profiles.values()
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
        self._sink: OutcomeSink | None = None
        self._dispatcher: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()

    @property
    def pool(self) -> ProcessPoolExecutor | None:
        """The worker pool now (tests look at its processes)."""
        return self._pool

    @property
    def in_flight(self) -> int:
        """Objects submitted to a worker and not yet done."""
        return self._in_flight

    @property
    def refusing(self) -> str | None:
        """Why every C-STORE is refused now (output storage failing), if it is."""
        return self._refusing

    @property
    def pending(self) -> int:
        """Objects acknowledged and not yet recorded."""
        # No lock: len() of a dict is atomic, and wait()'s predicates read it holding it.
        return len(self._pending)

    def start(self, key: bytes, sink: OutcomeSink) -> None:
        """Start the workers (and wait until each one runs), then the dispatcher."""
        self._key, self._sink = key, sink
        with stop_signals_ignored():
            self._pool = self._new_pool()
            self._warm_up(self._pool)
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="deid-dispatcher", daemon=True
        )
        self._dispatcher.start()

    def stop_dispatching(self) -> None:
        """End the dispatcher thread: nothing more is submitted."""
        self._closing.set()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(5)

    def shutdown(self, *, forced: bool) -> None:
        """Shut the pool down (without waiting for its workers if `forced`)."""
        if self._pool is not None:
            self._pool.shutdown(wait=not forced, cancel_futures=True)

    def recover(self, items: list[SpoolItem]) -> None:
        """Process what a crash left in spool/ and wait until it is recorded."""
        if not items:
            return
        log.info("recovery: %d acknowledged object(s) left in spool, processing first", len(items))
        for item in items:
            self.schedule(item, redo=True)
        last = time.monotonic()
        with self._changed:
            while self._pending:
                self._changed.wait(1.0)
                if time.monotonic() - last > 10:
                    log.info("recovery: %d object(s) to go", len(self._pending))
                    last = time.monotonic()
        log.info("recovery: done")

    def schedule(self, item: SpoolItem, *, redo: bool = False) -> None:
        """De-identify an acknowledged object (submitted by the dispatcher thread)."""
        with self._lock:
            self._pending[item.stem] = _Pending(item, redo=redo)
        self._retry_later(item.stem, 0.0)

    def release(self, stem: str) -> None:
        """An object's row is committed and its spool file gone: it is no longer pending."""
        with self._changed:
            self._pending.pop(stem, None)
            self._changed.notify_all()

    def notify(self) -> None:
        """Wake whoever waits in :meth:`wait`."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until `predicate` holds (looked at after every change); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Association threads end without notifying us: look again now and then.
                self._changed.wait(0.05 if left is None else min(left, 0.05))
        return True

    def receiver_lost(self, index: int, cut: frozenset[str] = frozenset()) -> None:
        """A receiving process died: free what it held, process what it acknowledged, and
        close the associations it cut once their objects are recorded."""
        tag = spool_tag(index)
        self._spool.budget.clear(index)
        self._spool.abandon_incoming(tag)  # never acknowledged: the senders got no Success
        # Listed and checked under the lock: release() comes after the file is deleted, so
        # an object not pending here is not being finished.
        with self._lock:
            orphans = [i for i in self._spool.published(tag) if i.stem not in self._pending]
            for item in orphans:
                self._pending[item.stem] = _Pending(item)
            self._cut.update(cut)
        if orphans:
            log.warning("%d acknowledged object(s) of that receiving process adopted", len(orphans))
        for item in orphans:
            self._retry_later(item.stem, 0.0)

    # -- the pool -------------------------------------------------------------------------

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

    def _replace_pool(self) -> None:
        # Back off when pools keep breaking (e.g. workers cannot start): objects stay in
        # spool/ meanwhile, nothing is lost.
        if time.monotonic() < self._next_pool_at:
            return
        self._pool_replacements += 1
        if self._metrics is not None:
            self._metrics.worker_crashed()
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

    # -- the dispatcher -------------------------------------------------------------------

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
            self.notify()

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
        with self._lock:
            self._in_flight += 1
        future.add_done_callback(functools.partial(self._done, stem, generation))

    def _retry_later(self, stem: str, delay: float) -> None:
        with self._lock:
            heapq.heappush(self._retries, _Retry(time.monotonic() + delay, stem))
        self._wake.set()

    def _done(self, stem: str, generation: int, future: Future[WorkResult]) -> None:
        with self._lock:
            self._in_flight -= 1
            pending = self._pending.get(stem)
        if pending is None:
            return
        try:
            result = future.result()
        except BrokenProcessPool:
            self._crashed(pending, generation)
            return
        except Exception as exc:
            reason = f"internal error ({describe_error(exc)})"
            self._record(pending, Outcome(Status.QUARANTINED, reason))
            return
        self._pool_replacements = 0
        if self._metrics is not None:
            self._metrics.object_processed(pending.item.receipt.profile, result.seconds)
        if result.outcome is None:
            self._storage_failed(pending, result.storage_error)
            return
        if self._refusing is not None:
            log.info("output storage writable again; accepting objects")
            self._set_refusing(None)
        self._record(pending, result.outcome)

    def _crashed(self, pending: _Pending, generation: int) -> None:
        with self._lock:
            self._pool_broken = True
            failed = self._failed_calls.get(generation, 0)
            self._failed_calls[generation] = failed + 1
        # A broken pool fails every call it holds, in the order they were submitted, and
        # its workers take them in that order: only the first worker_count can have been
        # running. The rest waited in its queue; they are not blamed.
        if failed < self.cfg.node.worker_count:
            pending.crashes += 1
        # Its worker (or another) may have written the output before it died.
        pending.redo = True
        stem = pending.item.stem
        if pending.crashes >= MAX_WORKER_CRASHES:
            log.error("spool object %s crashed its worker %d times", stem, pending.crashes)
            self._record(pending, Outcome(Status.QUARANTINED, "de-identification crashed"))
        else:
            self._retry_later(stem, 0.25)

    def _storage_failed(self, pending: _Pending, error: str | None) -> None:
        pending.storage_failures += 1
        pending.redo = True  # the output may be in place (a failed fsync after the move)
        delay = _STORAGE_RETRY_SECONDS[
            min(pending.storage_failures, len(_STORAGE_RETRY_SECONDS)) - 1
        ]
        log.error("cannot write output: %s; refusing new objects, retrying in %.0f s", error, delay)
        self._set_refusing("output storage unavailable")
        self._retry_later(pending.item.stem, delay)

    def _set_refusing(self, reason: str | None) -> None:
        if reason == self._refusing:
            return
        self._refusing = reason
        self._refusing_cb(reason)

    def _record(self, pending: _Pending, outcome: Outcome) -> None:
        assert self._sink is not None
        self._sink.record_outcome(pending.item, outcome, redo=pending.redo)

    def _close_cut(self) -> None:
        """Close the associations a dead receiving process cut, once none of their objects
        waits: their rows are committed, or queued to the writer before this call."""
        with self._lock:
            if not self._cut:
                return
            waiting = {p.item.receipt.association_id for p in self._pending.values()}
            ready = self._cut - waiting
            self._cut -= ready
        if ready and self._sink is not None:
            self._sink.close_cut(frozenset(ready))


__all__ = ["MAX_WORKER_CRASHES", "OutcomeSink", "WorkScheduler"]
