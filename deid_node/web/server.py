"""`deid-node web`: uvicorn serving the console on [web] host and port."""

from __future__ import annotations

import logging

import uvicorn

from deid_node.config import Config
from deid_node.web.app import create_app

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(cfg: Config) -> None:
    """Serve until interrupted (its own process, never the node's)."""
    web = cfg.web
    app = create_app(cfg)
    scheme = "https" if web.https else "http"
    log.info("web console on %s://%s:%d", scheme, web.host, web.port)
    uvicorn.run(
        app,
        host=web.host,
        port=web.port,
        ssl_certfile=str(web.certificate) if web.certificate else None,
        ssl_keyfile=str(web.key) if web.key else None,
        log_level="warning",
        access_log=False,  # request lines carry pseudonymous UIDs only, but stay quiet
        server_header=False,
        # uvicorn would trust X-Forwarded-For from 127.0.0.1 by default (or
        # $FORWARDED_ALLOW_IPS): the app trusts [web] trusted_proxies only (app.py).
        proxy_headers=False,
    )
