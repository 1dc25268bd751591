"""Jobs from the form: upload streamed to disk, processed, downloaded with a manifest."""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from typer.testing import CliRunner

from deid_node.config import Config
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.web.app import create_app
from tests.support.node import console_user, node_table

runner = CliRunner()
PASSWORD = "a long enough password"
CONFIG = node_table() + '\n[profiles.research]\nkeep = ["SeriesDescription"]\n'


def files(tmp_path: Path, n: int, seed: int) -> list[bytes]:
    out = []
    for i, ds in enumerate(
        ct_series(n, patient=SyntheticPatient.make(PhiTokens(), seed), seed=seed)
    ):
        path = tmp_path / f"{seed}-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path.read_bytes())
    return out


@pytest.fixture
def setup(write_config: Callable[[str], Config], tmp_path: Path) -> tuple[Config, dict[str, str]]:
    cfg = write_config(CONFIG)
    return cfg, {"Authorization": f"Bearer {console_user(cfg, 'ana', PASSWORD)}"}


def wait_done(client: TestClient, job: int, auth: dict[str, str]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}", headers=auth).json()
        if state["status"] in ("done", "failed"):
            return state  # type: ignore[no-any-return]
        time.sleep(0.05)
    pytest.fail("job did not finish in 60 s")


def logged_in(client: TestClient, name: str) -> TestClient:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    form = {"username": name, "password": PASSWORD, "csrf": csrf.group(1)}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 303
    return client


def test_a_job_from_files_and_a_zip_to_a_download_with_a_manifest(
    setup: tuple[Config, dict[str, str]], tmp_path: Path
) -> None:
    cfg, auth = setup
    plain = files(tmp_path, 3, seed=1)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        for i, data in enumerate(files(tmp_path, 2, seed=2)):
            archive.writestr(f"SMITH_JOHN/{i}.dcm", data)  # a PHI-ish name, never kept
    upload = [("files", (f"{i}.dcm", d, "application/dicom")) for i, d in enumerate(plain)]
    upload.append(("files", ("study.zip", zipped.getvalue(), "application/zip")))
    upload.append(("files", ("notes.txt", b"not dicom at all", "text/plain")))
    form = {
        "profile": "research", "project": "Brain study", "requester": "Dr Research",
        "notes": "pilot", "sponsor": "Example University", "protocol_id": "EX-001",
    }  # fmt: skip
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        assert client.post("/api/jobs", data=form, files=upload).status_code == 401
        created = client.post("/api/jobs", data=form, files=upload, headers=auth)
        assert created.status_code == 200, created.text
        job = created.json()["id"]
        state = wait_done(client, job, auth)
        assert (state["status"], state["total"], state["done"]) == ("done", 6, 6)
        assert (state["written"], state["quarantined"]) == (5, 1)
        download = client.get(f"/api/jobs/{job}/download", headers=auth)
        assert download.status_code == 200
        # A job is its owner's: another user neither follows, downloads nor lists it.
        other = {"Authorization": f"Bearer {console_user(cfg, 'bob', PASSWORD)}"}
        for path in (f"/api/jobs/{job}", f"/api/jobs/{job}/download"):
            refused = client.get(path, headers=other)
            assert refused.status_code == 404 and "of yours" in refused.json()["detail"]
        assert f"/api/jobs/{job}/download" not in logged_in(client, "bob").get("/jobs").text
        assert f"/api/jobs/{job}/download" in logged_in(client, "ana").get("/jobs").text
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    names = archive.namelist()
    assert names[0] == "manifest.csv" and len(names) == 6
    assert all(n.startswith("research/") and n.endswith(".dcm") for n in names[1:])
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert len(rows) == 6 and {r["project"] for r in rows} == {"Brain study"}
    assert sorted(r["status"] for r in rows).count("stored") == 5
    assert all(r["file"] in names for r in rows if r["status"] == "stored")
    first = dcmread(io.BytesIO(archive.read(names[1])))
    assert first.ClinicalTrialSponsorName == "Example University"
    assert first.PatientIdentityRemoved == "YES"
    folder = cfg.node.data_dir / "jobs" / str(job)
    leftovers = [p.name for p in folder.rglob("*") if p.is_file() and "output" not in p.parts]
    assert leftovers == ["manifest.csv"]  # the uploaded originals are gone
    assert b"SMITH_JOHN" not in download.content


def test_uploads_are_bounded_and_forms_need_csrf(
    write_config: Callable[[str], Config], tmp_path: Path
) -> None:
    cfg = write_config(CONFIG + "\n[web]\nmax_upload_bytes = 2048\n")
    auth = {"Authorization": f"Bearer {console_user(cfg, 'ana', PASSWORD)}"}
    big = [("files", ("a.dcm", files(tmp_path, 1, seed=3)[0], "application/dicom"))]
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        refused = client.post("/api/jobs", data={"profile": "research"}, files=big, headers=auth)
        assert refused.status_code == 413 and "larger than 2048" in refused.json()["detail"]
        assert not [p for p in (cfg.node.data_dir / "jobs").rglob("*") if p.is_file()]
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        form = {"username": "ana", "password": PASSWORD, "csrf": csrf.group(1)}
        assert client.post("/login", data=form, follow_redirects=False).status_code == 303
        small = [("files", ("a.dcm", b"x" * 10, "application/dicom"))]
        no_csrf = client.post("/api/jobs", data={"profile": "research"}, files=small)
        assert no_csrf.status_code == 403
        fresh = re.search(r'name="csrf" value="([^"]+)"', client.get("/jobs").text)
        assert fresh and fresh.group(1) != csrf.group(1)  # a new session, a new token
        unknown = client.post(
            "/api/jobs", data={"profile": "nope", "csrf": fresh.group(1)}, files=small
        )
        assert unknown.status_code == 400 and "unknown profile" in unknown.json()["detail"]


def test_a_job_interrupted_by_a_stop_is_failed_and_its_upload_deleted(
    setup: tuple[Config, dict[str, str]],
) -> None:
    from deid_node.audit.db import open_audit
    from deid_node.clock import now

    cfg, auth = setup
    with open_audit(cfg.database_url) as db:
        job = db.jobs.add(now(), "ana", "research", {"project": "x"})
        db.jobs.update(job, status="running")
    upload = cfg.node.data_dir / "jobs" / str(job) / "upload"
    upload.mkdir(parents=True)
    (upload / "000000.dcm").write_bytes(b"PHI would be here")
    stale = cfg.node.data_dir / "jobs" / "incoming-20261202T000000000000"
    stale.mkdir()
    (stale / "000000.dcm").write_bytes(b"and here")
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        state = client.get(f"/api/jobs/{job}", headers=auth).json()
    assert state["status"] == "failed" and "interrupted" in state["error"]
    assert not upload.exists() and not stale.exists()
