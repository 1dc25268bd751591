"""The supervisor: start-up, recovery, wiring, serving, and a drained stop.

Life of an object: a receiving process (:mod:`deid_node.runtime.receivers`) publishes it
into spool/, acknowledges it and reports it over its pipe; the scheduler
(:mod:`deid_node.runtime.scheduler`) has a worker run
:func:`deid_node.deid.pipeline.process_file` on it; the recorder
(:mod:`deid_node.runtime.recorder`) hands its audit row to the writer thread (batched);
only once that row is committed is the spool file removed (or moved to quarantine/).
A crash anywhere in between leaves the spool file: the next start processes it again
before serving (see the scheduler for how a redo is recorded once).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from types import FrameType, TracebackType
from typing import Final

from deid_node.audit.db import AuditDB, open_audit
from deid_node.audit.writer import AuditWriter
from deid_node.config import Config, Durability
from deid_node.deid.secret import load_secret
from deid_node.errors import AuditError, DeidNodeError, StorageError, describe_error
from deid_node.intake.capacity import Budget, shared_budget_cells
from deid_node.intake.receiver import PROGRESS_SECONDS
from deid_node.intake.spool import Spool
from deid_node.logs import quiet_libraries
from deid_node.runtime.forwarding import ForwardingChild
from deid_node.runtime.health import HealthServer
from deid_node.runtime.listener import listen
from deid_node.runtime.metrics import Gauges, NodeMetrics
from deid_node.runtime.receivers import ReceivingProcesses
from deid_node.runtime.recorder import Recorder, close_interrupted, node_identity
from deid_node.runtime.scheduler import WorkScheduler

log = logging.getLogger(__name__)

AUDIT_STALL_SECONDS: Final = 15.0  # audit rows waiting this long with none written: unhealthy


DATABASE_WAIT_SECONDS: Final = 120.0


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
        audit_stall_seconds: float = AUDIT_STALL_SECONDS,
    ) -> None:
        """Prepare a node for `cfg` (nothing is opened before :meth:`start`);
        `progress_seconds`: how often a long association logs how far it got;
        `audit_stall_seconds`: audit rows waiting this long, none written, make /health 503."""
        self._audit_stall_seconds = audit_stall_seconds
        self.cfg = cfg
        node = cfg.node
        self._bind = (host or node.host, node.port if port is None else port)
        if drain_timeout is None:
            drain_timeout = node.network_timeout + node.dimse_timeout
        self._drain_timeout = drain_timeout
        self._progress_seconds = progress_seconds
        # Shared with the receiving processes: they reserve, we release once processed.
        self._budget_cells = shared_budget_cells(node.receiver_count)
        self.spool = Spool(
            node.spool,
            node.quarantine,
            max_bytes=node.spool_max_bytes,
            max_object_bytes=node.max_object_bytes,
            fsync=node.durability is Durability.FSYNC,
            budget=Budget(node.spool_max_bytes, self._budget_cells, index=node.receiver_count),
        )
        self.metrics = NodeMetrics(cfg)
        self.metrics.add_gauges(self._gauges())  # read at each scrape, across restarts
        self.scheduler = WorkScheduler(
            cfg, self.spool, refusing=self._set_refusing, metrics=self.metrics
        )
        self._forwarding = ForwardingChild(cfg)
        self._db: AuditDB | None = None
        self._writer: AuditWriter | None = None
        self._sock: socket.socket | None = None
        self._receivers: ReceivingProcesses | None = None
        self._stop_requested = threading.Event()  # serve_forever: a signal arrived
        self._force_stop = threading.Event()
        self._started = False
        self._draining = False
        self._health: HealthServer | None = None
        self._audit_busy_since: float | None = None  # the writer seen with work, no batch done

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the SCP listens on."""
        if self._sock is None:
            raise RuntimeError("the node is not serving: call start() first")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def metrics_address(self) -> tuple[str, int]:
        """The (host, port) of /health and /metrics ([metrics] in the config)."""
        if self._health is None:
            raise RuntimeError("no [metrics] table, or the node is not started")
        return self._health.address

    def start(self) -> None:
        """Open everything, process what a crash left in spool/, then serve."""
        if self._started:
            return
        quiet_libraries()
        self._draining = False
        node = self.cfg.node
        try:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {node.data_dir}: {exc.strerror}") from None
        self.spool.prepare()
        key = load_secret(node.secret_path)
        names = node_identity(node.data_dir, node.name)
        # The writer thread, start-up's recovery and status reads; forwarding and the
        # console are processes with pools of their own.
        # A database server that is (re)starting too is waited for, a while.
        self._db = open_audit(self.cfg.database_url, connections=2, wait=DATABASE_WAIT_SECONDS)
        self._started = True
        try:
            if self.cfg.metrics is not None:
                # Before recovery, so a load balancer sees "starting" rather than nothing.
                m = self.cfg.metrics
                try:
                    self._health = HealthServer(m.host, m.port, self.health, self.metrics)
                except OSError as exc:
                    raise DeidNodeError(
                        f"cannot serve /health and /metrics on {m.host}:{m.port}: "
                        f"{describe_error(exc)}"
                    ) from None
                self._health.start()
            self._writer = AuditWriter(self._db, self._audit_written)
            self._writer.start()
            recorder = Recorder(
                self.cfg,
                self._writer,
                self.spool,
                node.name,
                received=self.scheduler.schedule,
                released=self.scheduler.release,
                forwarded=self._forwarding.wake,
                changed=self.scheduler.notify,
                metrics=self.metrics,
            )
            if self.cfg.forwarding:
                self._forwarding.start()
            self.scheduler.start(key, recorder)
            self.scheduler.recover(self.spool.recover())
            close_interrupted(self._db, names)
            self._sock = listen(self.cfg, *self._bind)
            self._receivers = ReceivingProcesses(
                self.cfg,
                self._sock,
                recorder,
                budget_cells=self._budget_cells,
                progress_seconds=self._progress_seconds,
                drain_timeout=self._drain_timeout,
                changed=self.scheduler.notify,
                lost=self.scheduler.receiver_lost,
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

    def health(self) -> str | None:
        """None while the node accepts associations and can write its spool and audit
        database; otherwise why not, in one line (GET /health)."""
        receivers = self._receivers
        if not self._started or receivers is None:
            return "starting"
        if self._draining:
            return "draining: not accepting new associations"
        if not receivers.serving:
            return "a receiving process is restarting"
        refusing = self.scheduler.refusing
        if refusing is not None:
            return f"refusing objects: {refusing}"
        problem = self.spool.probe()
        if problem is not None:
            return problem
        return self._audit_stalled()

    def _audit_stalled(self) -> str | None:
        writer = self._writer
        if writer is None or writer.idle:
            self._audit_busy_since = None
            return None
        t = time.monotonic()
        if self._audit_busy_since is None:
            self._audit_busy_since = t
        stalled = t - self._audit_busy_since
        if stalled > self._audit_stall_seconds:
            return f"audit database not writable: nothing written for {stalled:.0f} s"
        return None

    def _audit_written(self) -> None:
        self._audit_busy_since = None  # progress: a batch is committed
        self.scheduler.notify()

    def _gauges(self) -> Gauges:
        def forward_counts() -> list[tuple[str, str, int]]:
            db = self._db
            if db is None or not self.cfg.forwarding:
                return []
            states = ("pending", "in_flight", "sent", "failed")
            try:
                counts = db.outbox.counts()
            except AuditError:  # the database is away: the rest of the page still helps
                return []
            return [(c.destination, state, getattr(c, state)) for c in counts for state in states]

        return Gauges(
            spool_objects=lambda: self.scheduler.pending,
            spool_bytes=lambda: self.spool.budget.used,
            in_flight=lambda: self.scheduler.in_flight,
            associations_open=lambda: 0 if self._receivers is None else self._receivers.active,
            forward_counts=forward_counts,
        )

    def _set_refusing(self, reason: str | None) -> None:
        if self._receivers is not None:
            self._receivers.set_refusing(reason)

    def wait_forwarded(self, timeout: float) -> bool:
        """Wait until no forward job is pending or in flight (tests, scripts/bench)."""
        db = self._db
        return db is not None and self._forwarding.wait_sent(db, timeout, self._stop_requested)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, let associations finish, drain spool/, close; True if drained."""
        if not self._started:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._draining = True  # /health says so from now: the balancer sends elsewhere
        if self._receivers is not None:
            # Each receiving process stops accepting, lets its associations finish (up to
            # the drain timeout, aborting the rest) and ends; their reports are handled.
            self._receivers.stop(self._force_stop)
        if self._sock is not None:
            self._sock.close()
        scheduler = self.scheduler
        scheduler.wait(lambda: not scheduler.pending or self._force_stop.is_set(), _left(deadline))
        left = scheduler.pending
        if left:
            log.warning("stopping with %d object(s) left in spool for the next start", left)
        forced = self._force_stop.is_set()
        scheduler.stop_dispatching()
        if self._writer is not None:
            self._writer.close(5.0 if forced else _left(deadline))
        self._forwarding.stop(2.0 if forced else 15.0)
        scheduler.shutdown(forced=forced)
        if self._db is not None:
            self._db.close()
        if self._health is not None:
            self._health.stop()
            self._health = None
        self._started = False
        log.info("stopped")
        return left == 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no association is open, spool/ is drained and audit rows are written."""

        def idle() -> bool:
            writer_idle = self._writer is None or self._writer.idle
            receivers = self._receivers
            active = receivers is not None and receivers.active > 0
            return not self.scheduler.pending and writer_idle and not active

        deadline = time.monotonic() + timeout
        while self.scheduler.wait(idle, _left(deadline)):
            # What the receiving processes sent before now may still be in their pipes.
            receivers = self._receivers
            if receivers is None or (receivers.sync(_left(deadline) or 0.0) and idle()):
                return True
        return False

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


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


__all__ = ["Node"]
