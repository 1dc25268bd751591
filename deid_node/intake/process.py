"""A receiving process: accept, check, spool, acknowledge; nothing else.

The supervisor (:mod:`deid_node.runtime.receivers`) starts several, all accepting on the
one listening socket it bound. Each runs the AE, the :class:`Receiver` and the spool
intake, and reports over its pipe in typed messages (deid_node.intake.messages); the
supervisor audits and schedules. Imports only intake/, net/ and dicom/ (and the
top-level config, clock, errors, logs, child_process), never audit/, deid/ or runtime/:
what this process imports is what it carries through every association.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Final, assert_never

from deid_node.allocator import give_back_freed_memory, hold_freed_memory
from deid_node.config import Config, Durability
from deid_node.intake.capacity import Budget, Slots
from deid_node.intake.connections import PendingConnections
from deid_node.intake.handlers import event_handlers
from deid_node.intake.messages import (
    Abort,
    Channel,
    Command,
    Ping,
    Pong,
    Ready,
    Refusing,
    Stop,
)
from deid_node.intake.receiver import Receiver
from deid_node.intake.scp import attach_spool, build_ae
from deid_node.intake.spool import Spool
from deid_node.logs import quiet_libraries
from deid_node.net.pynetdicom_compat import (
    GuardedAssociationServer,
    configure_receiving,
    start_server,
)
from deid_node.net.server_tls import log_handshake_failure, server_context

REAP_SECONDS: Final = 0.5  # how often associations whose thread died are closed
ABORT_GRACE_SECONDS: Final = 2.0  # for aborted associations to report their end
TRIM_AFTER_THREADS: Final = 64  # this many association threads ended: memory back to the kernel


@dataclass(frozen=True)
class ReceiverSpec:
    """What one receiving process needs to know (picklable)."""

    cfg: Config
    index: int
    progress_seconds: float
    drain_timeout: float


def run(
    spec: ReceiverSpec,
    conn: Connection,
    channel: Channel,
    sock: socket.socket,
    budget_cells: SynchronizedArray[int],
    slot_counts: SynchronizedArray[int],
) -> None:
    """The receiving process's main, after the prologue (deid_node.intake.boot): serve on
    `sock` until told to stop."""
    configure_receiving()
    hold_freed_memory()
    try:
        server, receiver = _start(spec, sock, channel, budget_cells, slot_counts)
    except Exception as exc:  # one line in the node's log, never a traceback on stderr
        logging.getLogger(__name__).error(
            "receiving process %d cannot start (%s)", spec.index, type(exc).__name__
        )
        os._exit(1)
    channel.send(Ready(os.getpid()))
    _serve(spec, conn, channel, receiver, server)
    conn.close()  # the supervisor, stopping, reads its end of the pipe at EOF: we are done
    os._exit(0)  # association threads that linger must not hold the process


def _start(
    spec: ReceiverSpec,
    sock: socket.socket,
    channel: Channel,
    budget_cells: SynchronizedArray[int],
    slot_counts: SynchronizedArray[int],
) -> tuple[GuardedAssociationServer, Receiver]:
    node = spec.cfg.node
    spool = Spool(
        node.spool,
        node.quarantine,
        max_bytes=node.spool_max_bytes,
        max_object_bytes=node.max_object_bytes,
        fsync=node.durability is Durability.FSYNC,
        budget=Budget(node.spool_max_bytes, budget_cells, spec.index),
        tag=spool_tag(spec.index),
    )
    slots = Slots(node.max_associations, slot_counts, spec.index)
    receiver = Receiver(
        spec.cfg, spool, channel, slots=slots, progress_seconds=spec.progress_seconds
    )
    ae = build_ae(spec.cfg)
    quiet_libraries()  # again, now that pynetdicom's loggers exist
    attach_spool(ae, spool)
    server = start_server(
        ae,
        sock.getsockname()[:2],
        evt_handlers=event_handlers(receiver),
        ssl_context=server_context(node.tls) if node.tls is not None else None,
        handshake_failed=log_handshake_failure,
        sock=sock,
        pending=PendingConnections.for_associations(node.request_timeout, node.max_associations),
    )
    return server, receiver


def _serve(
    spec: ReceiverSpec,
    conn: Connection,
    channel: Channel,
    receiver: Receiver,
    server: GuardedAssociationServer,
) -> None:
    """Obey the supervisor; after :class:`Stop`, let open associations finish, then return."""
    drain_until: float | None = None
    aborted = False
    last_reap = time.monotonic()
    peak_threads = threading.active_count()
    while True:
        if conn.poll(0.05):
            try:
                command: Command = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the supervisor is gone: so are we (spool/ keeps what we took)
            match command:
                case Refusing(reason):
                    receiver.refusing = reason
                case Ping(number):
                    channel.send(Pong(number))
                case Stop():
                    if drain_until is None:
                        server.shutdown()  # no new associations here; the running ones go on
                        server.server_close()
                        drain_until = time.monotonic() + spec.drain_timeout
                case Abort():
                    if drain_until is not None:
                        drain_until = min(drain_until, time.monotonic())
                case _:
                    assert_never(command)
        if time.monotonic() - last_reap >= REAP_SECONDS:
            receiver.reap()
            last_reap = time.monotonic()
            threads = threading.active_count()
            peak_threads = max(peak_threads, threads)
            if peak_threads - threads >= TRIM_AFTER_THREADS:  # a crowd of connections is gone
                gc.collect()  # an association and its DUL refer to each other
                give_back_freed_memory()
                peak_threads = threads
        if drain_until is None:
            continue
        # A connection that never became an association (a port probe, a sender still
        # negotiating) holds nothing acknowledged: pynetdicom keeps its thread until the
        # ACSE timeout, which must not hold the stop.
        if not receiver.active and not any(a.is_established for a in server.active_associations):
            return
        if time.monotonic() >= drain_until:
            if aborted:
                receiver.reap()
                return
            aborted = True
            _abort_all(server)
            drain_until = time.monotonic() + ABORT_GRACE_SECONDS


def _abort_all(server: GuardedAssociationServer) -> None:
    associations = server.active_associations
    if associations:
        logging.getLogger(__name__).warning(
            "stopping: aborting associations still open after the drain timeout"
        )
    for assoc in associations:
        assoc.abort()


def spool_tag(index: int) -> str:
    """The stem tag of what receiving process `index` publishes (``r0-``; see Spool)."""
    return f"r{index}-"


__all__ = ["ReceiverSpec", "run", "spool_tag"]
