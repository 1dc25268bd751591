"""Quarantine: listed with its audit metadata and reason, never rendered or downloaded.

Its files hold PHI. Retry and purge are POST actions (CSRF on the page's forms), each a
web event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deid_node.audit.records import format_time
from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.deid.secret import load_secret
from deid_node.errors import DeidNodeError
from deid_node.ops.quarantine import list_quarantine, purge, retry
from deid_node.web.auth import api_user, check_csrf, csrf_token, page_user, peer_of
from deid_node.web.params import RowId
from deid_node.web.state import config_of, db_of, render, users_of

router = APIRouter()


def entries(request: Request) -> list[dict[str, Any]]:
    """Quarantined objects still held, oldest first (no paths)."""
    return [
        {
            "id": e.id,
            "received_at": format_time(e.received_at),
            "calling_ae": e.calling_ae,
            "profile": e.profile,
            "reason": e.reason,
        }
        for e in list_quarantine(db_of(request))
    ]


def act(request: Request, user: User, action: str, object_id: int) -> dict[str, Any]:
    """Retry or purge one quarantined object; what came of it."""
    cfg, db = config_of(request), db_of(request)
    try:
        if action == "retry":
            [(entry, outcome)] = retry(cfg, db, load_secret(cfg.node.secret_path), [object_id])
            result = {"id": entry.id, "status": outcome.status.value, "reason": outcome.reason}
        else:
            [entry] = purge(db, [object_id])
            result = {"id": entry.id, "status": "purged", "reason": None}
    except DeidNodeError as exc:
        raise HTTPException(404, str(exc)) from None
    detail = f"object {object_id}: {result['status']}"
    users_of(request).record_event(
        now(), user.name, peer_of(request), f"quarantine_{action}", detail
    )
    return result


@router.get("/api/quarantine")
def api_quarantine(
    request: Request, user: Annotated[User, Depends(api_user)]
) -> list[dict[str, Any]]:
    """Quarantined objects still held, oldest first."""
    return entries(request)


@router.post("/api/quarantine/{object_id}/{action}")
def api_act(
    request: Request, object_id: RowId, action: str, user: Annotated[User, Depends(api_user)]
) -> dict[str, Any]:
    """`retry` or `purge` one object (a token, or the page's session with X-CSRF-Token)."""
    if action not in ("retry", "purge"):
        raise HTTPException(404, "expected retry or purge")
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        check_csrf(request, request.headers.get("x-csrf-token"))
    return act(request, user, action, object_id)


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_page(request: Request, user: Annotated[User, Depends(page_user)]) -> Response:
    """The quarantine page: metadata and reasons, with retry and purge buttons."""
    context = {"user": user, "csrf": csrf_token(request), "entries": entries(request)}
    return render(request, "quarantine.html", context)


@router.post("/quarantine/{object_id}/{action}")
def page_act(
    request: Request,
    object_id: RowId,
    action: str,
    user: Annotated[User, Depends(page_user)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The page's retry and purge buttons."""
    check_csrf(request, csrf)
    if action not in ("retry", "purge"):
        raise HTTPException(404, "expected retry or purge")
    act(request, user, action, object_id)
    return RedirectResponse("/quarantine", status_code=303)
