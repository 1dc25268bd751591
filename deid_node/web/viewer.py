"""The viewer: frames as PNG (window and level applied here), the header, the page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from deid_node.audit.users import User
from deid_node.web.auth import api_user, csrf_token, page_user
from deid_node.web.images import OutsideOutput, checked_path, header_rows, info, render_png
from deid_node.web.state import config_of, db_of, render
from deid_node.web.studies import instances_of

router = APIRouter()


def _path(request: Request, sop: str) -> Path:
    rows = db_of(request).stored_instances(sop=sop)
    if not rows:
        raise HTTPException(404, "no such instance with output")
    try:
        return checked_path(config_of(request).node.output, str(rows[-1]["output_path"]))
    except OutsideOutput:
        raise HTTPException(404, "the output file is no longer there") from None


@router.get("/api/instances/{sop}/frames/{index}.png")
def frame_png(
    request: Request,
    sop: str,
    index: int,
    user: Annotated[User, Depends(api_user)],
    window_center: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    window_width: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
) -> Response:
    """Frame `index` (0-based) at native size, 8-bit PNG."""
    path = _path(request, sop)
    summary = info(path)
    if not 0 <= index < summary.frames:
        raise HTTPException(404, f"frame {index} out of range: the instance has {summary.frames}")
    if (window_center is None) != (window_width is None):
        raise HTTPException(400, "give window_center and window_width together")
    window = (window_center, window_width) if window_center is not None else None
    try:
        data = render_png(path, index, window)  # type: ignore[arg-type]
    except Exception as exc:  # a codec's own errors: a clear status, never a traceback
        raise HTTPException(422, f"cannot render this frame ({type(exc).__name__})") from None
    return Response(data, media_type="image/png")


@router.get("/api/instances/{sop}/header")
def header(
    request: Request, sop: str, user: Annotated[User, Depends(api_user)]
) -> list[dict[str, str]]:
    """The de-identified header, element by element."""
    return header_rows(_path(request, sop))


@router.get("/viewer/{series}", response_class=HTMLResponse)
def viewer_page(
    request: Request,
    series: str,
    user: Annotated[User, Depends(page_user)],
    instance: int = 0,
) -> Response:
    """One instance of a series: window/level, zoom, frames, cine, the header."""
    instances = instances_of(request, series)
    if not instances:
        raise HTTPException(404, "no such series with output")
    position = min(max(instance, 0), len(instances) - 1)
    current = instances[position]
    path = _path(request, str(current["pseudo_sop_uid"]))
    context = {
        "user": user,
        "csrf": csrf_token(request),
        "series": series,
        "instances": instances,
        "position": position,
        "current": current,
        "presets": info(path).windows,
        "header": header_rows(path),
    }
    return render(request, "viewer.html", context)
