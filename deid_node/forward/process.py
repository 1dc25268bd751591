"""The forwarding process: started by the node, never by a receiving process.

It sends from the outbox on its own cores, so a sender's pace never slows the node's
receiving and de-identification; it ends when told to, or at once when the node is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from multiprocessing.synchronize import Event

from deid_node.audit.db import open_audit
from deid_node.config import Config
from deid_node.errors import describe_error
from deid_node.forward.forwarder import Forwarder
from deid_node.lifeline import watch_parent
from deid_node.logs import quiet_libraries, setup_logging

__all__ = ["node_owner", "run"]

log = logging.getLogger(__name__)


def node_owner(cfg: Config) -> str:
    """How this node names itself in the claims it makes: the same across restarts."""
    return f"{socket.gethostname()}:{cfg.node.data_dir.resolve()}"[:255]


def run(cfg: Config, parent_pid: int, wake: Event, stop: Event, level: int) -> None:
    """The process's main: forward until `stop` is set or the node dies."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)  # sent to the whole group; the node decides
    watch_parent(parent_pid)
    setup_logging(level)
    quiet_libraries()
    # pynetdicom logs every refused connection at ERROR; the batch line says it once.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        db = open_audit(cfg.database_url)
        forwarder = Forwarder(cfg, db, node_owner(cfg))
        forwarder.start()
    except Exception as exc:
        log.error("forwarding process cannot start (%s)", describe_error(exc))
        os._exit(1)
    while not stop.is_set():
        if wake.wait(1.0):
            wake.clear()
            forwarder.wake()
    forwarder.stop()
    db.close()
    os._exit(0)  # sending threads that linger past the stop timeout must not hold us
