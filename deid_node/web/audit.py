"""The audit: objects with every CLI filter, newest first, paginated; CSV streamed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from deid_node.audit.export import csv_values
from deid_node.audit.records import Filters, format_time, parse_association_filters, parse_filters
from deid_node.audit.schema import OBJECT_COLUMNS
from deid_node.audit.users import User
from deid_node.errors import AuditError, ConfigError
from deid_node.web.auth import api_user, csrf_token, page_user
from deid_node.web.params import Offset
from deid_node.web.state import config_of, db_of, render

router = APIRouter()

PAGE: Final = 50
MAX_LIMIT: Final = 1000
# What the page and the API show of an object: no paths on the server.
SHOWN: Final = tuple(c for c in OBJECT_COLUMNS if c not in ("output_path", "quarantine_path"))


def filter_args(
    request: Request,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    calling_ae: str | None = None,
    profile: str | None = None,
    study: str | None = None,
    node: str | None = None,
) -> Filters:
    """The query's filters, as `audit` and `export-csv` take them; 400 if one is wrong
    (an unknown profile too, as on the command line)."""
    try:
        if profile:
            config_of(request).profile(profile)
        return parse_filters(since, until, calling_ae, profile, status, study, node)
    except (AuditError, ConfigError) as exc:
        raise HTTPException(400, str(exc)) from None


def _json(row: dict[str, object], *, all_columns: bool = False) -> dict[str, object]:
    return {
        k: format_time(v) if isinstance(v, datetime) else v
        for k, v in row.items()
        if all_columns or k in SHOWN
    }


def objects_page(request: Request, filters: Filters, limit: int, offset: int) -> dict[str, Any]:
    """One page of objects, newest first, with the offset of the next page (or None)."""
    db = db_of(request)
    rows = list(db.iter_objects(filters, limit + 1, newest_first=True, offset=offset))
    more = len(rows) > limit
    return {
        "items": [_json(r) for r in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


@router.get("/api/objects")
def api_objects(
    request: Request,
    user: Annotated[User, Depends(api_user)],
    filters: Annotated[Filters, Depends(filter_args)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = PAGE,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Objects newest first: `items`, and `next_offset` while there are more."""
    return objects_page(request, filters, limit, offset)


@router.get("/api/objects.csv")
def api_objects_csv(
    request: Request,
    user: Annotated[User, Depends(api_user)],
    filters: Annotated[Filters, Depends(filter_args)],
) -> StreamingResponse:
    """Every matching object as CSV (the columns of `export-csv`), streamed."""
    db = db_of(request)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(OBJECT_COLUMNS)
        rows = db.iter_objects(filters)
        try:  # a generator: closing it ends its query if the client goes away
            for i, row in enumerate(rows, 1):
                writer.writerow(csv_values(row, OBJECT_COLUMNS))
                if i % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        finally:
            close = getattr(rows, "close", None)
            if callable(close):
                close()
        yield buffer.getvalue()

    headers = {"Content-Disposition": 'attachment; filename="deid-node-audit.csv"'}
    return StreamingResponse(lines(), media_type="text/csv", headers=headers)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    user: Annotated[User, Depends(page_user)],
    filters: Annotated[Filters, Depends(filter_args)],
    offset: Offset = 0,
) -> Response:
    """The audit page: filters, one page of objects, links to the next and previous."""
    page = objects_page(request, filters, PAGE, offset)
    query = {k: v for k, v in request.query_params.items() if k != "offset" and v}
    context = {
        "user": user,
        "csrf": csrf_token(request),
        "page": page,
        "query": query,
        "columns": (
            "id",
            "received_at",
            "calling_ae",
            "profile",
            "node",
            "status",
            "pseudo_study_uid",
            "reason",
        ),
    }
    return render(request, "audit.html", context)


@router.get("/api/associations")
def api_associations(
    request: Request,
    user: Annotated[User, Depends(api_user)],
    since: str | None = None,
    until: str | None = None,
    calling_ae: str | None = None,
    outcome: str | None = None,
    node: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = PAGE,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Associations newest first, rejected ones included: `items` and `next_offset`."""
    try:
        filters = parse_association_filters(since, until, calling_ae, outcome, node)
    except AuditError as exc:
        raise HTTPException(400, str(exc)) from None
    rows = list(db_of(request).iter_associations(filters, limit + 1, offset=offset))
    return {
        "items": [_json(r, all_columns=True) for r in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(rows) > limit else None,
    }
