"""Jobs' routes: the upload form, a job's state, its download (the job runs in
:mod:`deid_node.ops.jobs`).

A job is its owner's: only the user who made it sees it, follows it and downloads it
(there are no admins).
"""

from __future__ import annotations

import io
import logging
import shutil
import zipfile
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.errors import AuditError
from deid_node.ops.jobs import (
    PROJECT_FIELDS,
    TRIAL_FIELDS,
    JobRunner,
    job_profile,
    jobs_folder,
)
from deid_node.web.auth import api_user, check_csrf, csrf_token, page_user, peer_of
from deid_node.web.params import RowId
from deid_node.web.state import config_of, db_of, render, users_of
from deid_node.web.uploads import UploadRefused, receive

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter()


def _runner(request: Request) -> JobRunner:
    runner = getattr(request.app.state, "jobs", None)
    if runner is None:
        runner = request.app.state.jobs = JobRunner(config_of(request), db_of(request))
    assert isinstance(runner, JobRunner)
    return runner


def _job_view(job: dict[str, object]) -> dict[str, Any]:
    return {
        k: job[k]
        for k in (
            "id",
            "status",
            "done",
            "total",
            "written",
            "quarantined",
            "profile",
            "fields",
            "error",
        )
    }


@router.post("/api/jobs")
async def create_job(request: Request, user: Annotated[User, Depends(api_user)]) -> dict[str, int]:
    """Multipart: `profile`, the project and trial fields, and `files` (DICOM or ZIP)."""
    cfg = config_of(request)
    staging = jobs_folder(cfg) / f"incoming-{now().strftime('%Y%m%dT%H%M%S%f')}"
    jobs_folder(cfg).mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        upload = await receive(
            request.headers.get("content-type", ""),
            request.stream(),
            staging,
            max_bytes=cfg.web.max_upload_bytes,
            max_files=cfg.web.max_files,
        )
    except UploadRefused as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(
            413 if "larger" in str(exc) or "more than" in str(exc) else 400, str(exc)
        ) from None
    except ClientDisconnect:
        # The client left mid-upload: nothing to answer, nothing kept, no traceback.
        shutil.rmtree(staging, ignore_errors=True)
        log.info("an upload was cut off: the client went away")
        raise HTTPException(400, "the upload was cut off") from None
    fields = {k: upload.fields.get(k, "").strip()[:1000] for k in (*PROJECT_FIELDS, *TRIAL_FIELDS)}
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        try:
            check_csrf(request, upload.fields.get("csrf"))
        except HTTPException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    name = upload.fields.get("profile", "")
    try:
        profile = job_profile(cfg, name, fields)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(400, str(exc)) from None
    if not upload.files:
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(400, "no files: add DICOM files or ZIPs of them")
    db = db_of(request)
    job_id = db.jobs.add(now(), user.name, name, fields)
    folder = jobs_folder(cfg) / str(job_id)
    staging.rename(folder)
    files = [folder / p.name for p in upload.files]
    users_of(request).record_event(
        now(),
        user.name,
        peer_of(request),
        "job",
        f"job {job_id}: {len(files)} file(s), profile {name}",
    )
    _runner(request).submit(job_id, profile, fields, files)
    return {"id": job_id}


def _get(request: Request, job_id: int, user: User) -> dict[str, object]:
    """The job if it is the user's; another user's is as absent as a missing one."""
    try:
        job = db_of(request).jobs.get(job_id)
    except AuditError:
        job = None
    if job is None or job["user_name"] != user.name:
        raise HTTPException(404, f"no job {job_id} of yours")
    return job


@router.get("/api/jobs/{job_id}")
def job_status(
    request: Request, job_id: RowId, user: Annotated[User, Depends(api_user)]
) -> dict[str, Any]:
    """`status` (queued, running, done, failed), `done`, `total`, `written`, `quarantined`."""
    return _job_view(_get(request, job_id, user))


class _Sink(io.RawIOBase):
    """An unseekable stream the ZIP writer fills and the response empties."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


@router.get("/api/jobs/{job_id}/download")
def download(
    request: Request, job_id: RowId, user: Annotated[User, Depends(api_user)]
) -> StreamingResponse:
    """The de-identified files in the node's layout, and manifest.csv, as a ZIP (streamed)."""
    job = _get(request, job_id, user)
    if job["status"] != "done":
        raise HTTPException(409, f"job {job_id} is {job['status']}: download when it is done")
    folder = jobs_folder(config_of(request)) / str(job_id)
    output = folder / "output"

    def chunks() -> Iterator[bytes]:
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
            archive.write(folder / "manifest.csv", "manifest.csv")
            yield sink.take()
            for path in sorted(output.rglob("*.dcm")) if output.is_dir() else []:
                archive.write(path, str(path.relative_to(output)))
                yield sink.take()
        yield sink.take()

    headers = {"Content-Disposition": f'attachment; filename="deid-node-job-{job_id}.zip"'}
    return StreamingResponse(chunks(), media_type="application/zip", headers=headers)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, user: Annotated[User, Depends(page_user)]) -> Response:
    """The form, and the user's recent jobs."""
    cfg = config_of(request)
    context = {
        "user": user,
        "csrf": csrf_token(request),
        "profiles": sorted(cfg.profiles),
        "jobs": db_of(request).jobs.recent(user=user.name),
        "project_fields": PROJECT_FIELDS,
        "trial_fields": TRIAL_FIELDS,
    }
    return render(request, "jobs.html", context)
