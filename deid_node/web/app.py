"""The web console's ASGI app: one router per concern, over the same library as the CLI.

It serves de-identified output and audit metadata only: objects that hold PHI (spool,
quarantine) are never rendered or downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from deid_node.audit.db import AuditDB, open_audit
from deid_node.config import Config
from deid_node.deid.secret import load_secret
from deid_node.web import audit, dashboard, jobs, login, quarantine, studies, viewer
from deid_node.web.auth import LoginLimiter, NeedsLogin

__all__ = ["create_app"]

_PACKAGE = Path(str(resources.files("deid_node"))) / "web"


def _session_secret(cfg: Config) -> str:
    # Derived from the node's key: sessions survive a restart, and no second secret file.
    key = load_secret(cfg.node.secret_path)
    return hmac.new(key, b"deid-node web session cookie", hashlib.sha256).hexdigest()


def create_app(cfg: Config, db: AuditDB | None = None) -> FastAPI:
    """The console for `cfg`; it opens the audit database unless given one."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs.clean_interrupted(cfg, app.state.db)
        yield
        runner = getattr(app.state, "jobs", None)
        if runner is not None:
            runner.close()  # the running job finishes; its upload is deleted

    app = FastAPI(
        title="deid-node", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.cfg = cfg
    app.state.db = db if db is not None else open_audit(cfg.database_url)
    app.state.limiter = LoginLimiter()
    app.state.templates = Jinja2Templates(directory=str(_PACKAGE / "templates"))
    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_secret(cfg),
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
    async def no_caching(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    return app
