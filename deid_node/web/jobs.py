"""Jobs: a folder of images and a form about the project in, de-identified files and a
manifest out. Uploads land in data_dir/jobs (0700, PHI) and are deleted once processed.

One job runs at a time, in a thread of the console's process, through the same pipeline
and key as the node, so pseudonyms match what the node writes. A job is its owner's: only
the user who made it sees it, follows it and downloads it (there are no admins).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from deid_node.audit.db import AuditDB
from deid_node.audit.users import User
from deid_node.clock import now
from deid_node.config import Config, ProfileConfig, TrialConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.deid.secret import load_secret
from deid_node.errors import AuditError, describe_error
from deid_node.web.auth import api_user, check_csrf, csrf_token, page_user, peer_of
from deid_node.web.params import RowId
from deid_node.web.state import config_of, db_of, render, users_of
from deid_node.web.uploads import UploadRefused, receive

__all__ = ["PROJECT_FIELDS", "TRIAL_FIELDS", "JobRunner", "router"]

log = logging.getLogger(__name__)
router = APIRouter()

PROJECT_FIELDS: Final = ("project", "requester", "notes")
TRIAL_FIELDS: Final = (
    "sponsor",
    "protocol_id",
    "protocol_name",
    "site_id",
    "site_name",
    "coordinating_center",
)
MANIFEST: Final = (
    "file",
    "status",
    "reason",
    "pseudo_patient_id",
    "pseudo_study_uid",
    "pseudo_series_uid",
    "pseudo_sop_uid",
    *PROJECT_FIELDS,
    *TRIAL_FIELDS,
)


def jobs_folder(cfg: Config) -> Path:
    """Where uploads and results of jobs live (PHI until processed)."""
    return cfg.node.data_dir / "jobs"


def _profile(cfg: Config, name: str, fields: dict[str, str]) -> ProfileConfig:
    profile = cfg.profile(name)
    if fields.get("sponsor") and fields.get("protocol_id"):
        trial = TrialConfig(**{k: fields.get(k, "") for k in TRIAL_FIELDS})
        profile = replace(profile, trial=trial)
    return profile


def _expand(files: list[Path], into: Path, cfg: Config) -> list[Path]:
    """The uploaded files, ZIPs unpacked (bounded; member names are never used)."""
    out: list[Path] = []
    budget = cfg.web.max_upload_bytes
    into.mkdir(mode=0o700, exist_ok=True)
    for path in files:
        if path.suffix != ".zip":
            out.append(path)
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if member.is_dir():
                        continue
                    budget -= member.file_size
                    if budget < 0 or len(out) >= cfg.web.max_files:
                        raise UploadRefused("the ZIPs unpack beyond the upload limits")
                    target = into / f"{len(out):06d}.dcm"
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    out.append(target)
        except zipfile.BadZipFile:
            out.append(path)  # reported as not DICOM, like any unreadable file
            continue
        path.unlink(missing_ok=True)
    return out


class JobRunner:
    """Runs queued jobs one at a time."""

    def __init__(self, cfg: Config, db: AuditDB) -> None:
        """Prepare; jobs start with :meth:`submit`."""
        self.cfg, self.db = cfg, db
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="deid-web-job")

    def submit(
        self, job_id: int, profile: ProfileConfig, fields: dict[str, str], files: list[Path]
    ) -> None:
        """Queue a job whose files are in its folder."""
        self._pool.submit(self._run, job_id, profile, fields, files)

    def close(self) -> None:
        """Let the running job finish; drop the queued ones (their uploads stay)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(
        self, job_id: int, profile: ProfileConfig, fields: dict[str, str], files: list[Path]
    ) -> None:
        jobs = self.db.jobs
        folder = jobs_folder(self.cfg) / str(job_id)
        try:
            inputs = _expand(files, folder / "upload", self.cfg)
            jobs.update(job_id, status="running", total=len(inputs))
            compiled = compile_profile(profile)
            key = load_secret(self.cfg.node.secret_path)
            output = folder / "output"
            rows = []
            written = quarantined = 0
            for i, path in enumerate(inputs, 1):
                outcome = process_file(path, compiled, key, output)
                path.unlink(missing_ok=True)  # the original holds PHI: gone once processed
                relative = ""
                if outcome.output_path is not None:
                    relative = str(outcome.output_path.relative_to(output))
                    written += 1
                else:
                    quarantined += 1
                rows.append(
                    {
                        "file": relative,
                        "status": outcome.status.value,
                        "reason": outcome.reason or "",
                        "pseudo_patient_id": outcome.pseudo_patient_id or "",
                        "pseudo_study_uid": outcome.pseudo_study_uid or "",
                        "pseudo_series_uid": outcome.pseudo_series_uid or "",
                        "pseudo_sop_uid": outcome.pseudo_sop_uid or "",
                        **{k: fields.get(k, "") for k in (*PROJECT_FIELDS, *TRIAL_FIELDS)},
                    }
                )
                if i % 10 == 0 or i == len(inputs):
                    jobs.update(job_id, done=i, written=written, quarantined=quarantined)
            with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, MANIFEST, lineterminator="\r\n")
                writer.writeheader()
                writer.writerows(rows)
            jobs.update(job_id, status="done", finished_at=now())
        except Exception as exc:
            log.error("job %d failed: %s", job_id, describe_error(exc))
            with contextlib.suppress(Exception):
                jobs.update(
                    job_id, status="failed", error=describe_error(exc)[:300], finished_at=now()
                )
        finally:
            shutil.rmtree(folder / "upload", ignore_errors=True)
            for path in files:  # what never reached the pipeline
                path.unlink(missing_ok=True)


def clean_interrupted(cfg: Config, db: AuditDB) -> int:
    """At start: uploads a stopped console left (PHI) are deleted, their jobs failed."""
    folder = jobs_folder(cfg)
    if folder.is_dir():
        for stale in folder.glob("incoming-*"):
            shutil.rmtree(stale, ignore_errors=True)
    count = 0
    for job in db.jobs.recent(limit=1000):
        if job["status"] in ("queued", "running"):
            job_id = int(str(job["id"]))
            shutil.rmtree(folder / str(job_id), ignore_errors=True)
            db.jobs.update(
                job_id, status="failed", error="interrupted: the console stopped", finished_at=now()
            )
            count += 1
    return count


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
        profile = _profile(cfg, name, fields)
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
