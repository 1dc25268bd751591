"""Typed access to what the app holds (FastAPI's app.state is untyped)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from deid_node.audit.db import AuditDB
from deid_node.audit.users import Users
from deid_node.config import Config
from deid_node.web.limiter import LoginLimiter

__all__ = ["config_of", "db_of", "limiter_of", "render", "users_of"]


def db_of(request: Request) -> AuditDB:
    """The audit database."""
    return cast(AuditDB, request.app.state.db)


def users_of(request: Request) -> Users:
    """Users, tokens and web events."""
    return db_of(request).users


def config_of(request: Request) -> Config:
    """The node's config."""
    return cast(Config, request.app.state.cfg)


def limiter_of(request: Request) -> LoginLimiter:
    """The failed-login counter."""
    return cast(LoginLimiter, request.app.state.limiter)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page from the package's templates."""
    templates = cast(Jinja2Templates, request.app.state.templates)
    return templates.TemplateResponse(request, template, context, status_code=status)
