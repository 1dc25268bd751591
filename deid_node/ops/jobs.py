"""The console's jobs: a folder of images and a form about the project in, de-identified
files and a manifest out. Uploads land in data_dir/jobs (0700, PHI) and are deleted once
processed.

One job runs at a time, in a thread of the console's process, through the same pipeline
and key as the node, so pseudonyms match what the node writes. The routes that take
uploads and hand out results are in :mod:`deid_node.web.jobs`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Final

from deid_node.audit.db import AuditDB
from deid_node.clock import now
from deid_node.config import Config, ProfileConfig, TrialConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.deid.secret import load_secret
from deid_node.errors import DeidNodeError, describe_error
from deid_node.ops.records import PSEUDONYM_COLUMNS, manifest_row

__all__ = [
    "MANIFEST",
    "PROJECT_FIELDS",
    "TRIAL_FIELDS",
    "JobRefused",
    "JobRunner",
    "clean_interrupted",
    "job_profile",
    "jobs_folder",
]

log = logging.getLogger(__name__)


class JobRefused(DeidNodeError):
    """A job's files are beyond the console's limits."""


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
    *PSEUDONYM_COLUMNS,
    *PROJECT_FIELDS,
    *TRIAL_FIELDS,
)


def jobs_folder(cfg: Config) -> Path:
    """Where uploads and results of jobs live (PHI until processed)."""
    return cfg.node.data_dir / "jobs"


def job_profile(cfg: Config, name: str, fields: dict[str, str]) -> ProfileConfig:
    """The profile `name`, with the trial modules the form filled in (sponsor and protocol)."""
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
                        raise JobRefused("the ZIPs unpack beyond the upload limits")
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
            project = {k: fields.get(k, "") for k in (*PROJECT_FIELDS, *TRIAL_FIELDS)}
            for i, path in enumerate(inputs, 1):
                outcome = process_file(path, compiled, key, output)
                path.unlink(missing_ok=True)  # the original holds PHI: gone once processed
                if outcome.output_path is not None:
                    written += 1
                else:
                    quarantined += 1
                rows.append({**manifest_row(outcome, output), **project})
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
