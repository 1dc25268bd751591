"""The node's one listening socket, which every receiving process accepts on."""

from __future__ import annotations

import socket
from typing import Final

from deid_node.config import Config
from deid_node.errors import ConfigError
from deid_node.net.server_tls import server_context

LISTEN_BACKLOG: Final = 128  # connections the kernel holds until a receiving process accepts


def listen(cfg: Config, host: str, port: int) -> socket.socket:
    """Bind (host, port); a ConfigError if the TLS files are bad or the port is taken."""
    tls = cfg.node.tls
    if tls is not None:
        server_context(tls)  # a bad certificate or key is a ConfigError here, not there
    try:
        # SO_REUSEADDR as pynetdicom's server sets it: a restart finds the port free.
        return socket.create_server((host, port), backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise ConfigError(
            f"node.port: cannot listen on {host}:{port}: {exc.strerror}; "
            "is another node or program using it?"
        ) from None


__all__ = ["LISTEN_BACKLOG", "listen"]
