"""The audit writer: one thread that writes every audit row, objects in batches, in order."""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from deid_node.audit.db import AuditDB
from deid_node.audit.records import Forwarding, LinkageRecord, ObjectRecord
from deid_node.errors import AuditError, AuditUnavailable, describe_error

__all__ = ["WRITER_BATCH", "WRITER_LINGER_SECONDS", "AuditWriter"]

log = logging.getLogger(__name__)

WRITER_BATCH: Final = 500
WRITER_LINGER_SECONDS: Final = 0.02
_CALL_ATTEMPTS: Final = 4
_RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)  # then every 10 s


@dataclass
class _ObjectJob:
    record: ObjectRecord
    linkage: LinkageRecord | None
    after_commit: Callable[[], None] | None = None
    forwarding: Forwarding | None = None
    redo: bool = False


@dataclass
class _CallJob:
    what: str
    call: Callable[[AuditDB], None]


class AuditWriter(threading.Thread):
    """The one thread that writes the audit database: objects in batches, in order.

    A failed write is retried (with a growing pause) until it succeeds or the writer is
    abandoned at shutdown: an ``after_commit`` action (removing a spool file) runs only
    after its row is committed, so objects wait in spool/ while the database is away.
    Other writes (association rows) give up after a few failures, but never while the
    database is only unreachable (:class:`~deid_node.errors.AuditUnavailable`).
    """

    def __init__(self, db: AuditDB, on_idle: Callable[[], None]) -> None:
        """Write to `db`; call `on_idle` whenever a batch is done."""
        super().__init__(name="deid-audit-writer", daemon=True)
        self._db = db
        self._queue: queue.Queue[_ObjectJob | _CallJob | None] = queue.Queue()
        self._outstanding = 0
        self._lock = threading.Lock()
        self._on_idle = on_idle
        self._abandon = threading.Event()

    @property
    def idle(self) -> bool:
        """True when every job put so far is written and its action done."""
        with self._lock:
            return self._outstanding == 0

    def put_object(
        self,
        record: ObjectRecord,
        linkage: LinkageRecord | None = None,
        after_commit: Callable[[], None] | None = None,
        forwarding: Forwarding | None = None,
        *,
        redo: bool = False,
    ) -> None:
        """Queue an object row (its linkage row, its forward jobs); `after_commit` runs once
        they are written. `redo`: the object may have been processed before a crash
        (:meth:`AuditDB.record_objects` records it once)."""
        self._put(_ObjectJob(record, linkage, after_commit, forwarding, redo))

    def put_call(self, what: str, call: Callable[[AuditDB], None]) -> None:
        """Queue another write, e.g. an association row; `what` names it in log lines."""
        self._put(_CallJob(what, call))

    def _put(self, job: _ObjectJob | _CallJob) -> None:
        with self._lock:
            self._outstanding += 1
        self._queue.put(job)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, then stop; False if that took longer than `timeout`."""
        self._queue.put(None)
        self.join(timeout)
        if self.is_alive():
            self._abandon.set()
            self.join(5)
            return False
        return True

    def run(self) -> None:
        """Take jobs in batches until closed."""
        stopping = False
        while not stopping:
            first = self._queue.get()
            jobs: list[_ObjectJob | _CallJob] = []
            if first is None:
                stopping = True
            else:
                jobs.append(first)
            # Objects arrive one at a time: a short linger turns one transaction per
            # object into one per batch (each SQLite commit costs the receiving process
            # CPU that pynetdicom needs), delaying spool clean-up by at most the linger.
            linger_until = time.monotonic() + WRITER_LINGER_SECONDS
            while len(jobs) < WRITER_BATCH and not stopping:
                try:
                    job = self._queue.get(timeout=max(0.0, linger_until - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            if jobs:
                self._write(jobs)
                with self._lock:
                    self._outstanding -= len(jobs)
                self._on_idle()
            if self._abandon.is_set():
                return

    def _write(self, jobs: list[_ObjectJob | _CallJob]) -> None:
        i = 0
        while i < len(jobs):
            job = jobs[i]
            if isinstance(job, _CallJob):
                # Association rows are bookkeeping: a few attempts, then a log line. Object
                # rows are retried until written, since their spool files wait for them.
                self._retry(job.what, functools.partial(job.call, self._db), _CALL_ATTEMPTS)
                i += 1
                continue
            j = i
            while j < len(jobs) and isinstance(jobs[j], _ObjectJob):
                j += 1
            batch = [b for b in jobs[i:j] if isinstance(b, _ObjectJob)]
            items = [(b.record, b.linkage) for b in batch]
            forwards = [b.forwarding for b in batch]
            redone = [b.redo for b in batch]
            # After a failed attempt the batch may be committed all the same (the connection
            # was cut after COMMIT was sent): from then on every row with a receipt is
            # recorded as a redo, which finds it and does not write it twice.
            again = [
                flag or b.record.receipt_id is not None
                for flag, b in zip(redone, batch, strict=True)
            ]
            tries = itertools.chain([redone], itertools.repeat(again))
            record = functools.partial(self._record, items, forwards, tries)
            if not self._retry("record objects", record):
                return
            for b in batch:
                if b.after_commit is not None:
                    try:
                        b.after_commit()
                    except Exception as exc:
                        log.error("after audit commit: %s", describe_error(exc))
            i = j

    def _record(
        self,
        items: list[tuple[ObjectRecord, LinkageRecord | None]],
        forwards: list[Forwarding | None],
        tries: Iterator[list[bool]],
    ) -> None:
        self._db.record_objects(items, forwards, redone=next(tries))

    def _retry(self, what: str, fn: Callable[[], object], attempts: int | None = None) -> bool:
        pauses = itertools.chain(_RETRY_SECONDS, itertools.repeat(10.0))
        failed = 0  # attempts that failed for a reason other than an unreachable database
        for attempt in itertools.count(1):
            try:
                fn()
                return True
            except AuditUnavailable as exc:  # a restart, a cut connection: wait it out
                problem = str(exc)
            except AuditError as exc:
                problem = str(exc)
                failed += 1
            except Exception as exc:
                problem = f"cannot {what} ({type(exc).__name__})"
                failed += 1
            if attempts is not None and failed >= attempts:
                log.error("audit database: %s; gave up after %d attempts", problem, attempt)
                return False
            log.error("audit database: %s; retrying", problem)
            if self._abandon.wait(next(pauses)):
                return False
        raise AssertionError("unreachable: itertools.count() never ends")
