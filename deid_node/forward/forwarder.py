"""The forwarder: per destination, up to max_associations threads that claim and send.

Each thread claims a batch of due jobs, sends it over its own long-lived association and
records every result in one transaction. A destination that cannot be reached holds its
queue: the thread waits (exponential backoff, capped) and tries again by itself. Jobs it
had claimed when the process died are put back by the next start (:meth:`Outbox.release`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Final, TypeVar

from deid_node.audit.db import AuditDB
from deid_node.audit.outbox import ForwardJob, ForwardResult, Outbox
from deid_node.clock import now
from deid_node.config import Config, DestinationConfig
from deid_node.errors import describe_error
from deid_node.forward.sender import Sender

__all__ = ["BATCH", "LEASE_SECONDS", "Forwarder"]

log = logging.getLogger(__name__)

BATCH: Final = 32  # jobs per claim: one log line, one transaction of results
_POLL_SECONDS: Final = 1.0  # without a wake-up, look for due jobs this often
LEASE_SECONDS: Final = 600.0  # a claim this old, by anyone, was abandoned
_DB_PAUSES: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
T = TypeVar("T")


class Forwarder:
    """Every destination's sending threads, over one audit database."""

    def __init__(
        self, cfg: Config, db: AuditDB, owner: str, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        """Prepare threads for every destination a profile forwards to; `owner` names us
        in the claims we make (the same across restarts of one node). A claim older than
        `lease_seconds`, of any node, was abandoned: it goes back to the queue."""
        self.cfg = cfg
        # The jobs whose file this node can read: its own, and with shared output every
        # node's that shares it too.
        self._outbox: Outbox = db.outbox.for_node(cfg.node.name, cfg.node.output_shared)
        self._owner = owner
        self._lease = lease_seconds
        self._lease_lock = threading.Lock()
        self._lease_checked = time.monotonic()
        self._stop = threading.Event()
        self._wakes: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        used = {name for p in cfg.profiles.values() for name in p.forward_to}
        self.destinations = [d for name, d in sorted(cfg.destinations.items()) if name in used]

    def start(self) -> None:
        """Put back what this node claimed before it stopped, then start every thread."""
        cutoff = now() - timedelta(seconds=self._lease)
        released = self._db_call(
            "release forward jobs", lambda: self._outbox.release(self._owner, cutoff)
        )
        if released:
            log.info("forward: %d unfinished job(s) of an earlier run back in the queue", released)
        for dest in self.destinations:
            for slot in range(dest.max_associations):
                wake = threading.Event()
                thread = threading.Thread(
                    target=self._run,
                    args=(dest, wake),
                    name=f"deid-forward-{dest.name}-{slot}",
                    daemon=True,
                )
                self._wakes.append(wake)
                self._threads.append(thread)
                thread.start()

    def wake(self) -> None:
        """New jobs may be due: every thread looks now."""
        for wake in self._wakes:
            wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the object being sent, put the rest of each batch back, release, end."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- one sending thread -----------------------------------------------------------

    def _run(self, dest: DestinationConfig, wake: threading.Event) -> None:
        sender = Sender(dest, self.cfg.node.ae_title)
        failures = 0  # batches in a row that could not reach the destination
        jobs: list[ForwardJob] | None = None  # None: claim first; [] nothing was due
        try:
            while not self._stop.is_set():
                if jobs is None:
                    jobs = self._db_call(
                        "claim forward jobs",
                        lambda: self._outbox.claim(dest.name, self._owner, now(), BATCH),
                    )
                if not jobs:
                    jobs = None
                    self._release_expired()
                    sender.release_if_idle()
                    wake.wait(self._idle_wait(dest, sender))
                    wake.clear()
                    continue
                started = time.monotonic()
                results = sender.send(jobs, self._stop)
                unreachable = not sender.connected and all(r.state == "retry" for r in results)
                failures = failures + 1 if unreachable else 0
                # The next batch is claimed in the transaction that records this one, unless
                # the destination is to be left alone for a while or we are stopping.
                again = not unreachable and not self._stop.is_set()
                claim = (dest.name, self._owner, BATCH) if again else None
                spent, jobs = self._finish(results, claim)
                self._delete(spent)
                self._log_batch(dest, results, time.monotonic() - started, failures)
                if unreachable:
                    # Hold the whole queue, not only this batch, until the pause is over.
                    self._stop.wait(dest.retry.pause(failures))
        except Exception as exc:  # a bug must not end forwarding silently
            log.error("forward %s: thread stopped: %s", dest.name, describe_error(exc))
        finally:
            with contextlib.suppress(Exception):
                sender.release()

    def _release_expired(self) -> None:
        """Now and then (a quarter lease apart), put back claims older than the lease: a
        node that died mid-batch must not hold its jobs until it comes back."""
        with self._lease_lock:
            if time.monotonic() - self._lease_checked < self._lease / 4:
                return
            self._lease_checked = time.monotonic()
        cutoff = now() - timedelta(seconds=self._lease)
        released = self._db_call(
            "release forward jobs", lambda: self._outbox.release_expired(cutoff)
        )
        if released:
            log.warning("forward: %d job(s) claimed more than a lease ago put back", released)

    def _idle_wait(self, dest: DestinationConfig, sender: Sender) -> float:
        wait = _POLL_SECONDS
        if sender.connected:
            wait = min(wait, max(0.05, dest.idle_release))
        due = self._db_call("read forward jobs", lambda: self._outbox.next_due(dest.name))
        if due is not None:
            wait = min(wait, max(0.01, (due - now()).total_seconds()))
        return wait

    def _finish(
        self, results: list[ForwardResult], claim: tuple[str, str, int] | None
    ) -> tuple[list[str], list[ForwardJob] | None]:
        # Results are retried until written: a job left in flight is sent again after a
        # restart, so giving up here would only cost a duplicate, but why pay it.
        pauses = iter(_DB_PAUSES)
        while True:
            done = self._db_call(
                "record forward attempts",
                lambda: self._outbox.finish(results, now(), claim=claim),
            )
            if done is not None:
                return done[0], done[1] if claim is not None else None
            if self._stop.wait(next(pauses, 10.0)):
                return [], None

    def _delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("forward: cannot delete a forwarded output file: %s", exc.strerror)

    def _db_call(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:
            log.error("forward: audit database: cannot %s (%s)", what, describe_error(exc))
            return None

    def _log_batch(
        self, dest: DestinationConfig, results: list[ForwardResult], seconds: float, failures: int
    ) -> None:
        counts = {state: 0 for state in ("sent", "retry", "failed", "release")}
        errors: dict[str, int] = {}
        for r in results:
            counts[r.state] += 1
            if r.error and r.state != "sent":
                errors[r.error] = errors.get(r.error, 0) + 1
        why = "; ".join(f"{e} ({n})" for e, n in sorted(errors.items()))
        line = (
            f"forward {dest.name}: {counts['sent']} sent, {counts['retry']} to retry, "
            f"{counts['failed']} failed in {seconds:.2f} s"
        )
        if failures:
            pause = dest.retry.pause(failures)
            line += f"; destination unreachable, next try in {pause:.1f} s"
        if why:
            line += f": {why}"
        (log.warning if counts["failed"] or counts["retry"] else log.info)(line)
