"""Studies, their series and instances: what the node wrote, as the viewer needs it."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from deid_node.audit.records import format_time
from deid_node.audit.users import User
from deid_node.web.auth import api_user, csrf_token, page_user
from deid_node.web.images import InstanceInfo, OutsideOutput, checked_path, info
from deid_node.web.params import Offset
from deid_node.web.state import config_of, db_of, render

router = APIRouter()
PAGE: Final = 50


def _instances(
    request: Request, rows: list[dict[str, object]] | None = None, **where: str
) -> list[tuple[dict[str, object], InstanceInfo]]:
    """Output rows (those given, else those `where` selects) with their file's summary."""
    root = config_of(request).node.output
    found = []
    for row in rows if rows is not None else db_of(request).stored_instances(**where):
        try:
            path = checked_path(root, str(row["output_path"]))
        except OutsideOutput:
            continue  # deleted after forwarding (keep_output = false), or moved
        found.append((row, info(path)))
    return found


def studies(request: Request, profile: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """Studies with output, newest first, each with its modalities (one header a series)."""
    db = db_of(request)
    out = []
    for study in db.stored_studies(profile, limit, offset):
        firsts: dict[object, dict[str, object]] = {}
        for row in db.stored_instances(study=str(study["pseudo_study_uid"])):
            firsts.setdefault(row["pseudo_series_uid"], row)
        modalities = {summary.modality for _, summary in _instances(request, list(firsts.values()))}
        out.append(
            {
                "pseudo_study_uid": study["pseudo_study_uid"],
                "pseudo_patient_id": study["pseudo_patient_id"],
                "profile": study["profile"],
                "node": study["node"],
                "instances": study["instances"],
                "first": format_time(study["first"]),  # type: ignore[arg-type]
                "last": format_time(study["last"]),  # type: ignore[arg-type]
                "modalities": sorted(m for m in modalities if m),
            }
        )
    return out


def series_of(request: Request, study: str) -> list[dict[str, Any]]:
    """A study's series, in the order they arrived."""
    found: dict[str, dict[str, Any]] = {}
    for row, summary in _instances(request, study=study):
        uid = str(row["pseudo_series_uid"])
        entry = found.setdefault(
            uid,
            {
                "pseudo_series_uid": uid,
                "modality": summary.modality,
                "series_description": summary.series_description,
                "instances": 0,
                "first_instance": row["pseudo_sop_uid"],
            },
        )
        entry["instances"] += 1
    return list(found.values())


def instances_of(request: Request, series: str) -> list[dict[str, Any]]:
    """A series' instances, by instance number (then arrival)."""
    rows = [
        {
            "pseudo_sop_uid": row["pseudo_sop_uid"],
            "instance_number": s.instance_number,
            "frames": s.frames,
            "rows": s.rows,
            "columns": s.columns,
            "photometric_interpretation": s.photometric_interpretation,
        }
        for row, s in _instances(request, series=series)
    ]
    rows.sort(key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0))
    return rows


@router.get("/api/studies")
def api_studies(
    request: Request,
    user: Annotated[User, Depends(api_user)],
    profile: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Studies with output, newest first."""
    return studies(request, profile, limit, offset)


@router.get("/api/studies/{study}/series")
def api_series(
    request: Request, study: str, user: Annotated[User, Depends(api_user)]
) -> list[dict[str, Any]]:
    """A study's series."""
    found = series_of(request, study)
    if not found:
        raise HTTPException(404, "no such study with output")
    return found


@router.get("/api/series/{series}/instances")
def api_instances(
    request: Request, series: str, user: Annotated[User, Depends(api_user)]
) -> list[dict[str, Any]]:
    """A series' instances."""
    found = instances_of(request, series)
    if not found:
        raise HTTPException(404, "no such series with output")
    return found


@router.get("/studies", response_class=HTMLResponse)
def studies_page(
    request: Request,
    user: Annotated[User, Depends(page_user)],
    offset: Offset = 0,
) -> Response:
    """The studies page."""
    rows = studies(request, None, PAGE + 1, offset)
    context = {
        "user": user,
        "csrf": csrf_token(request),
        "studies": rows[:PAGE],
        "offset": offset,
        "more": len(rows) > PAGE,
        "page": PAGE,
    }
    return render(request, "studies.html", context)


@router.get("/studies/{study}", response_class=HTMLResponse)
def study_page(request: Request, study: str, user: Annotated[User, Depends(page_user)]) -> Response:
    """A study's series, each opening the viewer."""
    found = series_of(request, study)
    if not found:
        raise HTTPException(404, "no such study with output")
    context = {"user": user, "csrf": csrf_token(request), "study": study, "series": found}
    return render(request, "study.html", context)
