"""The dashboard: is the node up, what is open, what arrived today and this week."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from deid_node.audit.records import AssociationFilters, format_time
from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.config import Config
from deid_node.web.auth import api_user, csrf_token, page_user
from deid_node.web.state import config_of, db_of, render

router = APIRouter()


def _node_up(cfg: Config) -> bool:
    # A connection that never asks for an association costs the node nothing.
    try:
        with socket.create_connection((cfg.node.host, cfg.node.port), timeout=0.5):
            return True
    except OSError:
        return False


def _spool_depth(cfg: Config) -> int:
    # Only counted: spool files hold PHI and are never read here.
    folder = cfg.node.spool
    return sum(1 for p in folder.glob("*.dcm")) if folder.is_dir() else 0


def summary(request: Request) -> dict[str, Any]:
    """What the dashboard shows, as JSON."""
    cfg = config_of(request)
    db = db_of(request)
    moment = now()
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    recent = []
    for row in db.iter_associations(AssociationFilters(), limit=10):
        started, ended = row["started_at"], row["ended_at"]
        assert isinstance(started, datetime)
        recent.append(
            {
                "id": row["id"],
                "calling_ae": row["calling_ae"],
                "peer": row["peer_address"],
                "objects": row["objects"],
                "outcome": row["outcome"] or "open",
                "node": row.get("node") or "",
                # Why it was refused or cut (AE titles and addresses, never a value).
                "reason": row.get("reason") or "",
                "started_at": format_time(started),
                "seconds": (ended - started).total_seconds()
                if isinstance(ended, datetime)
                else None,
            }
        )
    return {
        "node_up": _node_up(cfg),
        "ae_title": cfg.node.ae_title,
        "address": f"{cfg.node.host}:{cfg.node.port}",
        "associations_open": db.open_associations(),
        "spool_depth": _spool_depth(cfg),
        "today": db.status_counts(midnight),
        "last_7_days": db.status_counts(moment - timedelta(days=7)),
        "recent_associations": recent,
    }


@router.get("/api/dashboard")
def api_dashboard(request: Request, user: Annotated[User, Depends(api_user)]) -> dict[str, Any]:
    """The dashboard's figures."""
    return summary(request)


@router.get("/", response_class=HTMLResponse)
def dashboard_page(request: Request, user: Annotated[User, Depends(page_user)]) -> Response:
    """The dashboard page."""
    context = {"user": user, "csrf": csrf_token(request), "s": summary(request)}
    return render(request, "dashboard.html", context)
