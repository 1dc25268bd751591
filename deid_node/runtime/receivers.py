"""The supervisor's side of the receiving processes: start, listen, steer, stop.

The node binds the listening socket once and hands it to every receiving process
(:mod:`deid_node.intake.process`), which all accept on it: associations run in parallel
across cores, port 0 works, and ``max_associations`` and ``spool_max_bytes`` hold across
them through shared counters created here. One thread reads every pipe and turns each
message (deid_node.intake.messages) into a
:class:`~deid_node.intake.receiver.ReceiverEvents` call on the node, in the order each
process sent them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Final, assert_never

from deid_node.config import Config
from deid_node.errors import DeidNodeError
from deid_node.intake import boot
from deid_node.intake.capacity import clear_slots, shared_slot_counts
from deid_node.intake.messages import (
    Abort,
    Accepted,
    Active,
    Command,
    Ended,
    Log,
    Ping,
    Pong,
    Ready,
    Received,
    Refused,
    Refusing,
    Rejected,
    Report,
    Stop,
)
from deid_node.intake.process import ReceiverSpec
from deid_node.intake.receiver import ReceiverEvents
from deid_node.runtime.signals import stop_signals_ignored

log = logging.getLogger(__name__)

READY_SECONDS: Final = 60.0  # a receiving process imports pynetdicom and pydicom first
STOP_GRACE_SECONDS: Final = 10.0  # beyond the drain timeout, before a process is killed


@dataclass
class _Child:
    index: int
    process: BaseProcess
    conn: Connection
    ready: bool = False
    active: int = 0
    pong: int = 0
    gone: bool = False
    associations: set[str] = field(default_factory=set)  # accepted, not yet ended


class ReceivingProcesses:
    """N receiving processes on one listening socket, reporting to `events`."""

    def __init__(
        self,
        cfg: Config,
        sock: socket.socket,
        events: ReceiverEvents,
        *,
        budget_cells: SynchronizedArray[int],
        progress_seconds: float,
        drain_timeout: float,
        changed: Callable[[], None],
        lost: Callable[[int, frozenset[str]], None],
    ) -> None:
        """Describe them; :meth:`start` starts them. `changed` is called after each message,
        `lost` with the index of a process that died, once all it sent was handled, and the
        ids of the associations it cut."""
        self.cfg = cfg
        self._budget_cells = budget_cells
        self._sock = sock
        self._events = events
        self._progress = progress_seconds
        self._drain = drain_timeout
        self._changed_cb = changed
        self._lost_cb = lost
        self._count = cfg.node.receiver_count
        self._slots = shared_slot_counts(self._count)
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._children: list[_Child] = []
        self._refusing: str | None = None
        self._stopping = False
        self._ping = 0
        self._reader: threading.Thread | None = None

    @property
    def active(self) -> int:
        """Associations open in all receiving processes, as last reported."""
        with self._lock:
            return sum(c.active for c in self._children if not c.gone)

    @property
    def serving(self) -> bool:
        """Whether every receiving process is up and serving (none being replaced)."""
        with self._lock:
            return bool(self._children) and all(c.ready and not c.gone for c in self._children)

    def start(self) -> None:
        """Start every process and wait until each one serves."""
        for index in range(self._count):
            self._children.append(self._spawn(index))
        self._reader = threading.Thread(target=self._read, name="deid-receivers", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_SECONDS
        with self._changed:
            while not all(c.ready for c in self._children):
                if any(c.gone for c in self._children) or time.monotonic() > deadline:
                    raise DeidNodeError("a receiving process did not start")
                self._changed.wait(0.1)

    def _spawn(self, index: int) -> _Child:
        spec = ReceiverSpec(self.cfg, index, self._progress, self._drain)
        ours, theirs = self._ctx.Pipe()
        process = self._ctx.Process(
            target=boot.run,
            args=(
                pickle.dumps(spec),
                os.getpid(),
                theirs,
                self._sock,
                self._budget_cells,
                self._slots,
            ),
            name=f"deid-receiver-{index}",
            daemon=True,
        )
        with stop_signals_ignored(), _main_module_hidden():
            process.start()
        theirs.close()
        child = _Child(index, process, ours)
        if self._refusing is not None:
            child.conn.send(Refusing(self._refusing))
        return child

    def set_refusing(self, reason: str | None) -> None:
        """Answer every C-STORE Out of Resources with `reason` (None: accept again)."""
        with self._lock:
            self._refusing = reason
            children = [c for c in self._children if not c.gone]
        for child in children:
            self._send(child, Refusing(reason))

    def sync(self, timeout: float) -> bool:
        """Wait until every message sent before now has been handled."""
        with self._lock:
            self._ping += 1
            ping = self._ping
            children = [c for c in self._children if not c.gone]
        for child in children:
            self._send(child, Ping(ping))
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(c.pong < ping and not c.gone for c in children):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self, force: threading.Event) -> None:
        """Stop accepting, let each process finish its associations, wait for them to end."""
        with self._lock:
            self._stopping = True
            children = list(self._children)
        for child in children:
            self._send(child, Stop())
        aborted = False
        deadline = time.monotonic() + self._drain + STOP_GRACE_SECONDS
        for child in children:
            while child.process.is_alive() and time.monotonic() < deadline:
                if force.is_set() and not aborted:
                    aborted = True
                    for c in children:
                        self._send(c, Abort())
                child.process.join(0.1)
            if child.process.is_alive():
                log.error("receiving process %d did not stop: killing it", child.index)
                child.process.kill()
                child.process.join(5)
        if self._reader is not None:
            self._reader.join(5)

    def _send(self, child: _Child, command: Command) -> None:
        with contextlib.suppress(OSError, ValueError):
            child.conn.send(command)

    # -- the reader thread ----------------------------------------------------------------

    def _read(self) -> None:
        while True:
            with self._lock:
                live = {c.conn: c for c in self._children if not c.gone}
                stopping = self._stopping
            if not live:
                if stopping:
                    return
                time.sleep(0.05)
                continue
            for conn in wait(list(live), timeout=0.5):
                child = live[conn]  # type: ignore[index]
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):
                    self._lost(child)
                    continue
                try:
                    self._handle(child, message)
                except Exception as exc:  # one bad message must not stop the others
                    log.error("receiver message not handled (%s)", type(exc).__name__)
                self._changed_cb()

    def _handle(self, child: _Child, message: Report) -> None:
        match message:
            case Received(item):
                self._events.object_received(item)
            case Log(logger, level, text):
                logging.getLogger(logger).log(level, "%s", text)
            case Accepted(info):
                child.associations.add(info.id)
                self._events.association_accepted(info)
            case Ended(info):
                child.associations.discard(info.id)
                self._events.association_ended(info)
            case Rejected(info, reason):
                self._events.association_rejected(info, reason)
            case Refused(refused):
                self._events.object_refused(refused)
            case Active(count):
                with self._changed:
                    child.active = count
            case Pong(number):
                with self._changed:
                    child.pong = number
            case Ready():
                with self._changed:
                    child.ready = True
            case _:
                assert_never(message)
        with self._changed:
            self._changed.notify_all()

    def _lost(self, child: _Child) -> None:
        child.process.join(1)
        clear_slots(self._slots, child.index)
        with self._changed:
            child.gone = True
            child.active = 0
            stopping = self._stopping
            self._changed.notify_all()
        child.conn.close()
        if stopping or not child.ready:
            return
        log.error(
            "receiving process %d died (exit code %s): starting a new one",
            child.index,
            child.process.exitcode,
        )
        # Its pipe is at EOF: every report it sent is handled. What it published and did
        # not report (it died in between) is found by its index, before a new one reuses it.
        self._lost_cb(child.index, frozenset(child.associations))
        replacement = self._spawn(child.index)
        with self._changed:
            self._children[self._children.index(child)] = replacement


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned process without it importing our ``__main__`` again.

    multiprocessing's spawn re-imports the parent's main module in the child (to find
    functions defined there); for ``deid-node serve`` that is the CLI, which imports the
    whole node. Our target lives in a module, so the child needs none of it.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


__all__ = ["ReceivingProcesses"]
