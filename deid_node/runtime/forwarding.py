"""The node's handle on its forwarding process (:mod:`deid_node.forward.process`).

The process sends what the outbox holds; the node wakes it when an object's forward jobs
are committed, and stops it last, after the writer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.process import BaseProcess

from deid_node.audit.db import AuditDB
from deid_node.config import Config
from deid_node.runtime.signals import stop_signals_ignored

log = logging.getLogger(__name__)


class ForwardingChild:
    """Start, wake and stop the forwarding process of a node whose profiles forward."""

    def __init__(self, cfg: Config) -> None:
        """Prepare its events; nothing starts before :meth:`start`."""
        self.cfg = cfg
        self._context = multiprocessing.get_context("spawn")
        self._wake = self._context.Event()
        self._stop = self._context.Event()
        self._process: BaseProcess | None = None

    def start(self) -> None:
        """Start the forwarding process: it sends from the outbox."""
        from deid_node.forward.process import run
        from deid_node.net.client_tls import client_context

        for dest in self.cfg.destinations.values():
            if dest.tls is not None:
                client_context(dest.tls, dest.name)  # a bad certificate: ConfigError now

        with stop_signals_ignored():
            self._process = self._context.Process(
                target=run,
                args=(
                    self.cfg,
                    os.getpid(),
                    self._wake,
                    self._stop,
                    logging.getLogger("deid_node").getEffectiveLevel(),
                ),
                name="deid-forwarder",
                daemon=True,
            )
            self._process.start()
        destinations = sorted({d for p in self.cfg.profiles.values() for d in p.forward_to})
        log.info("forwarding to %s", ", ".join(destinations))

    def wake(self) -> None:
        """Send what was just committed now, not at the next poll."""
        self._wake.set()

    def wait_sent(self, db: AuditDB, timeout: float, interrupted: threading.Event) -> bool:
        """Wait until no forward job is pending or in flight; False on timeout or when
        `interrupted` is set."""
        deadline = time.monotonic() + timeout
        while True:
            if not any(c.pending or c.in_flight for c in db.outbox.counts()):
                return True
            if interrupted.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                return False
            if time.monotonic() >= deadline:
                return False

    def stop(self, timeout: float) -> None:
        """Ask it to stop, wait up to `timeout` seconds, then kill it."""
        process, self._process = self._process, None
        if process is None:
            return
        self._stop.set()
        self._wake.set()
        process.join(timeout)
        if process.is_alive():  # claims it held go back to the queue at the next start
            log.warning("forwarding process did not stop in %.0f s; killing it", timeout)
            process.kill()
            process.join(5)


__all__ = ["ForwardingChild"]
