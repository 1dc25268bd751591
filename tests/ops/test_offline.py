"""`deid-node deidentify` end to end: real files, real subprocesses, dciodvfy on the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters
from deid_node.cli.app import app
from deid_node.config import BurnedInPolicy, Option, ProfileConfig, load_config
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.deid.pseudonym import date_offset_days
from deid_node.object_status import Status
from deid_node.ops.linkage import OfflineLinkage
from deid_node.ops.records import OFFLINE
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    rt_structure_set,
    write_bad_files,
    write_files,
)
from tests.support.dcmtk import DCIODVFY, dciodvfy_errors

KEY = b"\x11" * 32
runner = CliRunner()

BASES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "examples_ybr_color.dcm",  # ultrasound
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "image_dfl.dcm",  # deflated
]
# A research profile: every option that keeps text, so the free-text cleaner runs.
RESEARCH = frozenset(
    {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.RETAIN_SAFE_PRIVATE,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.CLEAN_GRAPHICS,
    }
)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "deid.toml"
    cfg.write_text(
        f"""
[node]
data_dir = "var"
[profiles.research]
options = ["retain-longitudinal-modified-dates", "retain-safe-private"]
patient_id_prefix = "RES"
{extra}
""",
        encoding="utf-8",
    )
    return cfg


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("options", ["basic", "research"])
@pytest.mark.parametrize("name", BASES)
def test_output_is_as_valid_as_input(name: str, options: str, tmp_path: Path) -> None:
    """Removed and cleaned attributes (E.1-1 and beyond) leave every IOD as valid as it was."""
    src = Path(get_testdata_file(name))  # type: ignore[arg-type]
    profile = compile_profile(
        ProfileConfig(
            name="research",
            burned_in_annotation=BurnedInPolicy.ALLOW,
            options=RESEARCH if options == "research" else frozenset(),
        )
    )
    outcome = process_file(src, profile, KEY, tmp_path)
    assert outcome.status is Status.STORED, outcome.reason
    assert outcome.output_path is not None
    new_errors = dciodvfy_errors(outcome.output_path) - dciodvfy_errors(src)
    assert not new_errors, new_errors
    before, after = dcmread(src, force=True), dcmread(outcome.output_path)
    if "TransferSyntaxUID" in getattr(before, "file_meta", {}):
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    if "PixelData" in before:
        assert after.PixelData == before.PixelData  # header-only work: pixels untouched
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID


def test_deidentify_command_layout_summary_and_bad_files(tmp_path: Path) -> None:
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=3)
    ct = ct_series(4, patient=patient, seed=3)
    write_files(ct, tmp_path / "in" / "ct")
    bad = write_bad_files(tmp_path / "in" / "bad", tokens=tokens)
    cfg = write_config(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["deidentify", str(tmp_path / "in"), "-o", str(out), "-p", "research", "-c", str(cfg)],
    )
    assert result.exit_code == 1, result.output  # bad files are failures
    # 4 CT slices; the file whose PatientName has a wrong VR is quarantined like the other
    # malformed ones (the strict encoding check, deid_node/conformance.py).
    assert "4 written" in result.output
    assert "PatientName: VR" in result.output
    assert "quarantined" in result.output and "not DICOM" in result.output
    for value in tokens.values():
        assert value not in result.output  # no PHI on the terminal
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 4
    rel = files[0].relative_to(out).parts
    assert rel[0] == "research" and rel[1].startswith("RES") and len(rel) == 5
    written = b"".join(f.read_bytes() for f in files)
    leaks = tokens.find_in(written.decode("latin-1"))
    # retain-longitudinal-modified-dates shifts dates but keeps times (PS3.15 E.3.6).
    assert not [v for v in leaks if not re.fullmatch(r"\d{6}\.\d{6}", v)]
    assert bad  # the generator made them


def test_same_pseudonyms_in_two_separate_processes(tmp_path: Path) -> None:
    tokens = PhiTokens()
    ct = ct_series(3, patient=SyntheticPatient.make(tokens, seed=5), seed=5)
    write_files(ct, tmp_path / "in")
    cfg = write_config(tmp_path)
    env = {**os.environ, "DEID_NODE_SECRET": "ab" * 32}
    trees = []
    for run in ("a", "b"):
        out = tmp_path / run
        cmd = [sys.executable, "-m", "deid_node", "deidentify", str(tmp_path / "in")]
        cmd += ["-o", str(out), "-p", "research", "-c", str(cfg)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        trees.append(sorted(str(p.relative_to(out)) for p in out.rglob("*.dcm")))
    assert trees[0] == trees[1] and len(trees[0]) == 3


def test_deidentify_records_linkage_for_a_profile_that_keeps_it(tmp_path: Path) -> None:
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=6)
    ct = ct_series(20, patient=patient, rows=16, cols=16, seed=6)  # two batches: the pool
    write_files(ct, tmp_path / "in")
    config = write_config(tmp_path, "record_linkage = true")
    args = ["deidentify", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-p", "research"]
    result = runner.invoke(app, [*args, "-c", str(config), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert not tokens.find_in(result.output)
    cfg = load_config(config)
    with open_audit(cfg.database_url) as db:
        objects = list(db.iter_objects(Filters()))
        links = list(db.iter_linkage(Filters()))
    marks = {(o["status"], o["calling_ae"], o["called_ae"], o["peer_address"]) for o in objects}
    assert len(objects) == 20 and marks == {("stored", OFFLINE, OFFLINE, OFFLINE)}
    assert {str(o["output_path"]) for o in objects} == {
        str(p) for p in (tmp_path / "out").rglob("*.dcm")
    }
    assert sorted(str(r["object_id"]) for r in links) == sorted(str(o["id"]) for o in objects)
    by_sop = {str(r["original_sop_uid"]): r for r in links}
    assert set(by_sop) == {str(ds.SOPInstanceUID) for ds in ct}
    assert {r["original_accession_number"] for r in links} == {str(ct[0].AccessionNumber)}
    assert {r["original_patient_id"] for r in links} == {patient.patient_id}
    key = cfg.node.secret_path.read_bytes()
    days = date_offset_days(key, "research", "id:" + patient.patient_id)
    assert {r["date_shift_days"] for r in links} == {days}


def test_deidentify_without_linkage_needs_no_audit_database(tmp_path: Path) -> None:
    write_files(ct_series(2, patient=SyntheticPatient.make(PhiTokens(), seed=7)), tmp_path / "in")
    config = write_config(tmp_path)
    # In a fresh interpreter: is SQLAlchemy imported at all (a third of a second per run)?
    script = (
        "import sys\nfrom typer.testing import CliRunner\nfrom deid_node.cli.app import app\n"
        "result = CliRunner().invoke(app, sys.argv[1:])\n"
        "print(result.exit_code, 'sqlalchemy' in sys.modules)"
    )
    args = ["deidentify", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-p", "research"]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DEID_NODE_SECRET": "cd" * 32},
    )
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stdout + proc.stderr
    assert not (tmp_path / "var" / "audit.db").exists()


def test_offline_linkage_writes_a_batch_per_transaction_and_the_rest_at_the_end(
    tmp_path: Path,
) -> None:
    paths = write_files(ct_series(5, patient=SyntheticPatient.make(PhiTokens(), seed=9)), tmp_path)
    profile = compile_profile(ProfileConfig(name="research", record_linkage=True))
    stored = [process_file(p, profile, KEY, tmp_path / "out") for p in paths]
    url = f"sqlite:///{tmp_path / 'audit.db'}"

    def linked() -> int:
        with open_audit(url) as db:
            return len(list(db.iter_linkage(Filters())))

    with pytest.raises(KeyboardInterrupt), OfflineLinkage(open_audit(url), "research", 2) as log:
        for outcome in stored[:3]:
            log.add(outcome)
        assert linked() == 2  # one batch written, one object pending
        log.add(Outcome(Status.QUARANTINED, "burned-in annotation"))  # nothing to link
        raise KeyboardInterrupt  # an interrupted run still records what it wrote
    assert linked() == 3


def test_rt_structure_set_references_follow_the_ct(tmp_path: Path) -> None:
    tokens = PhiTokens()
    ct = ct_series(5, patient=SyntheticPatient.make(tokens, seed=8), seed=8)
    rt = rt_structure_set(ct)
    paths = write_files([*ct, rt], tmp_path / "in")
    profile = compile_profile(ProfileConfig(name="research"))
    outcomes = [process_file(p, profile, KEY, tmp_path / "out") for p in paths]
    assert all(o.status is Status.STORED for o in outcomes), [o.reason for o in outcomes]
    ct_out = [dcmread(o.output_path) for o in outcomes[:-1]]  # type: ignore[arg-type]
    rt_out = dcmread(outcomes[-1].output_path)  # type: ignore[arg-type]
    ct_uids = {d.SOPInstanceUID for d in ct_out}
    assert len({d.StudyInstanceUID for d in ct_out} | {rt_out.StudyInstanceUID}) == 1
    assert len({d.PatientID for d in ct_out} | {rt_out.PatientID}) == 1
    refs = set()
    frame = rt_out.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct_out[0].FrameOfReferenceUID
    for study in frame.RTReferencedStudySequence:
        for series in study.RTReferencedSeriesSequence:
            assert series.SeriesInstanceUID == ct_out[0].SeriesInstanceUID
            refs |= {img.ReferencedSOPInstanceUID for img in series.ContourImageSequence}
    assert refs == ct_uids
    originals = {d.SOPInstanceUID for d in ct}
    assert not refs & originals


def test_profiles_list_and_show(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    listed = runner.invoke(app, ["profiles", "list", "-c", str(cfg)])
    assert listed.exit_code == 0 and "research" in listed.output
    shown = runner.invoke(app, ["profiles", "show", "research", "-c", str(cfg), "--csv"])
    assert shown.exit_code == 0
    rows = shown.output.splitlines()
    assert rows[0] == "tag,keyword,name,basic,action,source"
    assert len(rows) > 621  # every Table E.1-1 row plus pattern rows
    assert any(r.startswith('"(0008,0020)",StudyDate') and "shift date" in r for r in rows)
    unknown = runner.invoke(app, ["profiles", "show", "nope", "-c", str(cfg)])
    assert unknown.exit_code == 1 and "Error: unknown profile 'nope'" in unknown.output


def test_check_config_errors_name_file_and_key(tmp_path: Path) -> None:
    good = write_config(tmp_path)
    ok = runner.invoke(app, ["check-config", "-c", str(good)])
    assert ok.exit_code == 0 and ok.output.startswith("OK:")
    bad = write_config(tmp_path, 'burned_in_annotation = "sometimes"')
    result = runner.invoke(app, ["check-config", "-c", str(bad)])
    assert result.exit_code == 1
    assert "profiles.research.burned_in_annotation" in result.output
    assert "expected one of 'quarantine', 'clean', 'allow'" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["check-config", "-c", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "config file not found" in missing.output


def test_check_config_creates_missing_folders_and_refuses_unwritable_ones(tmp_path: Path) -> None:
    good = write_config(tmp_path)
    assert not (tmp_path / "var").exists()
    assert runner.invoke(app, ["check-config", "-c", str(good)]).exit_code == 0
    assert (tmp_path / "var" / "output").is_dir()  # created, as the node would

    (tmp_path / "blocker").write_bytes(b"")
    for key, line in [
        ("node.data_dir", 'data_dir = "blocker/var"'),
        ("node.output_dir", 'data_dir = "var"\noutput_dir = "blocker/out"'),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(good.read_text().replace('data_dir = "var"', line), encoding="utf-8")
        result = runner.invoke(app, ["check-config", "-c", str(bad)])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: {key}: ")
        assert "is not a writable folder: a file is in the way" in result.stderr


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('options = ["retain-foo"]', "profiles.research.options[0]"),
        ("patient_id_prefix = 5", "profiles.research.patient_id_prefix"),
        ('keep = ["NotAKeyword"]', "profiles.research.keep[0]"),
        ("colour = 1", "profiles.research.colour"),
    ],
)
def test_config_errors(tmp_path: Path, snippet: str, key: str) -> None:
    text = write_config(tmp_path).read_text()
    if snippet.startswith("options"):
        text = re.sub(r"^options = .*$", snippet, text, flags=re.M)
    else:
        text = text.replace('patient_id_prefix = "RES"', snippet)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    result = runner.invoke(app, ["check-config", "-c", str(cfg)])
    assert result.exit_code == 1 and key in result.output, result.output
