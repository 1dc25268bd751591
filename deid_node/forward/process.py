"""The forwarding process: started by the node, never by a receiving process.

It sends from the outbox on its own cores, so a sender's pace never slows the node's
receiving and de-identification; it ends when told to, or at once when the node is gone.
"""

from __future__ import annotations

import logging
import os
from multiprocessing.synchronize import Event

from deid_node.audit.db import open_audit
from deid_node.child_process import start_child
from deid_node.config import Config
from deid_node.errors import describe_error
from deid_node.forward.forwarder import Forwarder
from deid_node.net.pynetdicom_compat import configure_sending

__all__ = ["node_owner", "run"]

log = logging.getLogger(__name__)


def node_owner(cfg: Config) -> str:
    """How this node names itself in the claims it makes: the same across restarts."""
    return f"{cfg.node.name}:{cfg.node.data_dir.resolve()}"[:255]


def run(cfg: Config, parent_pid: int, wake: Event, stop: Event, level: int) -> None:
    """The process's main: forward until `stop` is set or the node dies."""
    start_child(parent_pid, pixels=True, log_level=level)  # decodes what must go uncompressed
    configure_sending()
    # pynetdicom logs every refused connection at ERROR; the batch line says it once.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        forwarder_threads = sum(d.max_associations for d in cfg.destinations.values())
        db = open_audit(cfg.database_url, connections=forwarder_threads + 1)
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
