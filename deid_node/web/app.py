"""The web console's ASGI app: one router per concern, over the same library as the CLI.

It serves de-identified output and audit metadata only: objects that hold PHI (spool,
quarantine) are never rendered or downloaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from deid_node.audit.db import AuditDB, open_audit
from deid_node.config import Config
from deid_node.deid.secret import key_file
from deid_node.ops.jobs import clean_interrupted
from deid_node.web import audit, dashboard, jobs, login, quarantine, studies, viewer
from deid_node.web.auth import NeedsLogin
from deid_node.web.limiter import LoginLimiter

__all__ = ["SECURITY_HEADERS", "create_app", "session_key_path"]

_PACKAGE = Path(str(resources.files("deid_node"))) / "web"
# Every response: scripts, styles, images and requests from the console itself only (no
# inline script or style anywhere), never framed, no Referer leaving with a UID in the URL.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def session_key_path(cfg: Config) -> Path:
    """The session cookie's key file, beside (never derived from) the pseudonym key."""
    return cfg.node.data_dir / "web-session.key"


def _session_key(cfg: Config) -> str:
    # Its own random key, so that rotating it (delete the file: every session ends) leaves
    # pseudonyms alone, and a new pseudonym key leaves sessions alone.
    return key_file(session_key_path(cfg), "session key").hex()


def create_app(cfg: Config, db: AuditDB | None = None) -> FastAPI:
    """The console for `cfg`; it opens the audit database unless given one."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clean_interrupted(cfg, app.state.db)
        yield
        runner = getattr(app.state, "jobs", None)
        if runner is not None:
            runner.close()  # the running job finishes; its upload is deleted

    session_key = _session_key(cfg)  # first: a refused key opens nothing
    app = FastAPI(
        title="deid-node", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.cfg = cfg
    app.state.db = db if db is not None else open_audit(cfg.database_url)
    app.state.limiter = LoginLimiter()
    app.state.templates = Jinja2Templates(directory=str(_PACKAGE / "templates"))
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key,
        session_cookie="deid_node_session",
        max_age=int(cfg.web.session_hours * 3600),
        same_site="strict",
        https_only=cfg.web.https,
    )
    app.mount("/static", StaticFiles(directory=str(_PACKAGE / "static")), name="static")
    for module in (login, dashboard, audit, studies, viewer, quarantine, jobs):
        app.include_router(module.router)

    @app.exception_handler(NeedsLogin)
    async def to_login(request: Request, exc: NeedsLogin) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.middleware("http")
    async def headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.update(SECURITY_HEADERS)
        return response

    if cfg.web.trusted_proxies:
        # Outermost, so that the limiter and the web events see the client's address.
        # Only these peers' X-Forwarded-For counts; uvicorn's own is off (server.py).
        trusted = [str(net) for net in cfg.web.trusted_proxies]
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    return app
