"""`GET /health` and `GET /metrics` of a node, served from a thread of the supervisor.

/health answers 200 ``ok`` while the node accepts associations and can write its spool
and its audit database, else 503 and one line saying why (starting, draining, refusing
objects, spool or database not writable): what a load balancer's check needs.
/metrics is the Prometheus text format of :class:`~deid_node.runtime.metrics.NodeMetrics`.
Nothing here is on the path of an object: a scrape reads counters and a few gauges.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deid_node.runtime.metrics import NodeMetrics

log = logging.getLogger(__name__)

HealthCheck = Callable[[], str | None]  # None: healthy; else why not, in one line
_TEXT: Final = "text/plain; charset=utf-8"


class HealthServer:
    """An HTTP server on (host, port) answering /health and /metrics, in a daemon thread."""

    def __init__(self, host: str, port: int, check: HealthCheck, metrics: NodeMetrics) -> None:
        """Bind now (a taken port fails the node's start); serve from :meth:`start`."""
        handler = _handler(check, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="deid-metrics",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def _handler(check: HealthCheck, metrics: NodeMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "deid-node"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                try:
                    problem = check()
                except Exception as exc:  # a check that fails says so, it does not hang up
                    problem = f"health check failed ({type(exc).__name__})"
                self._answer(503 if problem else 200, _TEXT, f"{problem or 'ok'}\n".encode())
            elif path == "/metrics":
                self._answer(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            else:
                self._answer(404, _TEXT, b"not found: /health and /metrics are served here\n")

        def _answer(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes and checks come every few seconds: not worth a log line each."""

    return Handler


__all__ = ["HealthCheck", "HealthServer"]
