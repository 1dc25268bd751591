"""The synthetic PHI library produces readable, valid objects and a sound token registry."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_has_tag
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from deid_node.testing.synthetic import (
    ACME_CREATOR,
    GEMS_CREATOR,
    KINDS,
    SAFE_PRIVATE_VALUE,
    TOKEN_RE,
    UID_PREFIX,
    PhiTokens,
    SyntheticPatient,
    annex_e_tags,
    ct_series,
    phi_everywhere,
    rt_structure_set,
    secondary_capture,
    sr_document,
    us_multiframe,
    write_bad_files,
    write_files,
)
from tests.support.dcmtk import DCIODVFY
from tests.support.paths import REPO


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            _ = elem.value  # decode everything, including deferred values
    return ds


def _assert_substring_free(values: list[str]) -> None:
    assert len(values) == len(set(values)), "duplicate token values"
    ordered = sorted(values, key=len)
    for i, short in enumerate(ordered):
        for long in ordered[i + 1 :]:
            assert short not in long, f"{short!r} is a substring of {long!r}"


# ---- PhiTokens ------------------------------------------------------------------------------


def test_tokens_have_fixed_shape_and_are_recorded() -> None:
    tokens = PhiTokens()
    a = tokens.new_token("A")
    b = tokens.new_token("B", "id")
    name = tokens.new_name("PatientName")
    assert TOKEN_RE.fullmatch(a) and TOKEN_RE.fullmatch(b)
    family, given = name.split("^")
    assert tokens.values("name") == [family, given]
    assert tokens.values("id") == [b]
    assert tokens.paths(family) == ["PatientName^family"]
    tokens.record(family, "StudyDescription", "name")
    assert tokens.paths(family) == ["PatientName^family", "StudyDescription"]
    assert len(tokens) == 4
    with pytest.raises(ValueError):
        tokens.record(family, "X", "id")  # a value has one kind
    with pytest.raises(ValueError):
        tokens.values("bogus")


def test_dates_times_uids_are_valid_and_distinct() -> None:
    tokens = PhiTokens()
    dates = [tokens.new_date(f"d{i}") for i in range(40)]
    times = [tokens.new_time(f"t{i}") for i in range(40)]
    datetimes = [tokens.new_datetime(f"dt{i}") for i in range(40)]
    uids = [tokens.new_uid(f"u{i}", "seed") for i in range(40)]
    for d in dates:
        dt.datetime.strptime(d, "%Y%m%d")
    for t in times:
        dt.datetime.strptime(t, "%H%M%S.%f")
    for v in datetimes:
        dt.datetime.strptime(v, "%Y%m%d%H%M%S.%f")
    for u in uids:
        assert UID(u).is_valid and u.startswith(UID_PREFIX) and not u.startswith("2.25")
    _assert_substring_free(tokens.values())
    assert set(tokens.values("date")) == set(dates + times + datetimes)


def test_find_in_reports_planted_values() -> None:
    tokens = PhiTokens()
    token = tokens.new_token("A")
    date = tokens.new_date("B")
    tokens.new_token("C")
    assert tokens.find_in(f"xx{token}yy{date}".encode()) == [token, date]


# ---- phi_everywhere -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhiTokens, Dataset, Path]:
    tokens = PhiTokens()
    ds = phi_everywhere(tokens, seed=0)
    (path,) = write_files([ds], tmp_path_factory.mktemp("everywhere"))
    return tokens, ds, path


def test_phi_everywhere_plants_many_unique_tokens(
    everywhere: tuple[PhiTokens, Dataset, Path],
) -> None:
    tokens, _, _ = everywhere
    values = tokens.values()
    assert len(values) >= 400
    assert {r.kind for r in tokens.records} == set(KINDS)
    _assert_substring_free(values)
    for value in tokens.values("text") + tokens.values("id") + tokens.values("name"):
        assert TOKEN_RE.fullmatch(value)


def test_phi_everywhere_reads_back_with_every_token(
    everywhere: tuple[PhiTokens, Dataset, Path],
) -> None:
    tokens, _, path = everywhere
    ds = _read(path)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert TOKEN_RE.fullmatch(ds.file_meta.SourceApplicationEntityTitle)
    assert ds.pixel_array.shape == (8, 8)
    data = path.read_bytes()
    missing = [v for v in tokens.values() if v not in tokens.find_in(data)]
    assert missing == []


def test_phi_everywhere_covers_table_e1_1(everywhere: tuple[PhiTokens, Dataset, Path]) -> None:
    _, ds, _ = everywhere
    skipped = {0xFFFCFFFC}
    expected = [
        tag
        for tag in annex_e_tags()
        if dictionary_has_tag(tag) and tag >> 16 not in (0x0000, 0x0002) and tag not in skipped
    ]
    assert len(expected) > 550
    assert [f"{t:08X}" for t in expected if t not in ds] == []


def test_phi_everywhere_special_places(everywhere: tuple[PhiTokens, Dataset, Path]) -> None:
    tokens, ds, _ = everywhere
    family, given = str(ds.PatientName).split("^")
    assert {family, given} <= set(tokens.values("name"))
    assert ds.PatientID in tokens.values("id")
    assert ds.StudyDescription == f"CT for {family} {given} {ds.PatientID}"
    assert family in ds.ImageComments and ds.PatientID in ds.ImageComments
    assert "StudyDescription" in tokens.paths(family)
    assert ds.PatientBirthDate in tokens.values("date")
    assert ds.AccessionNumber in tokens.values("id")
    assert len(ds.OtherPatientIDsSequence) == 2
    # overlay and curve groups
    for tag in (0x60000022, 0x60003000, 0x60004000, 0x50000022, 0x50003000):
        assert tag in ds
    assert tokens.find_in(ds[0x60003000].value)
    # private blocks
    acme = ds.private_block(0x0009, ACME_CREATOR)
    assert TOKEN_RE.fullmatch(acme[0x01].value)
    assert acme[0x04].VR == "UN" and tokens.find_in(acme[0x04].value)
    item = acme[0x05].value[0]
    assert TOKEN_RE.search(str(item.private_block(0x0009, ACME_CREATOR)[0x01].value))
    gems = ds.private_block(0x0019, GEMS_CREATOR)
    assert gems[0x9E].value == SAFE_PRIVATE_VALUE
    assert 0x00111001 in ds and 0x00110010 not in ds
    # nested sequences
    refs = [i.ReferencedSOPInstanceUID for i in ds.ReferencedImageSequence]
    refs += [i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence]
    assert refs and set(refs) <= set(tokens.values("uid"))
    deep = ds.RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0]
    pn = str(deep.ProtocolContextSequence[0].PersonName)
    assert all(part in tokens.values("name") for part in pn.split("^"))
    texts = [i.TextValue for i in ds.ContentSequence if "TextValue" in i]
    assert texts and all(TOKEN_RE.search(t) for t in texts)
    assert any("PersonName" in i for i in ds.ContentSequence)


def test_phi_everywhere_is_deterministic() -> None:
    a, b = PhiTokens(), PhiTokens()
    phi_everywhere(a, seed=5)
    phi_everywhere(b, seed=5)
    assert a.records == b.records
    c = PhiTokens()
    phi_everywhere(c, seed=6)
    assert a.values("uid") != c.values("uid")


# ---- realistic objects ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=2)
    ct = ct_series(4, patient=patient, seed=2)
    study_uid = ct[0].StudyInstanceUID
    objects = {
        "ct": ct[1],
        "rtstruct": rt_structure_set(ct),
        "sr": sr_document(patient, study_uid),
        "us": us_multiframe(patient, burned_in="YES", study_uid=study_uid),
        "sc": secondary_capture(patient, burned_in="NO", study_uid=study_uid),
    }
    folder = tmp_path_factory.mktemp("study")
    paths = write_files([*ct, *list(objects.values())[1:]], folder)
    files = {"ct": paths[1], **dict(zip(list(objects)[1:], paths[len(ct) :], strict=True))}
    return {"tokens": tokens, "patient": patient, "ct": ct, "objects": objects, "files": files}


def test_write_files_names_and_reads_back(tmp_path: Path) -> None:
    patient = SyntheticPatient.make(PhiTokens())
    paths = write_files(ct_series(3, patient=patient), tmp_path / "out")
    assert [p.name for p in paths] == ["1.dcm", "2.dcm", "3.dcm"]
    for p in paths:
        assert p.read_bytes()[128:132] == b"DICM"
        _read(p)


def test_ct_series_is_one_consistent_series(study: dict[str, object]) -> None:
    ct: list[Dataset] = study["ct"]  # type: ignore[assignment]
    patient: SyntheticPatient = study["patient"]  # type: ignore[assignment]
    tokens: PhiTokens = study["tokens"]  # type: ignore[assignment]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds.data_element(key).value for ds in ct}) == 1  # type: ignore[union-attr]
    assert [ds.InstanceNumber for ds in ct] == [1, 2, 3, 4]
    assert len({ds.SOPInstanceUID for ds in ct}) == 4
    zs = [float(ds.ImagePositionPatient[2]) for ds in ct]
    step = -float(ct[0].SliceThickness)
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(zs))
    ds = ct[0]
    assert str(ds.PatientName) == patient.name and ds.PatientID == patient.patient_id
    assert ds.StationName in tokens.values("text")
    assert ds.InstitutionName in tokens.values("text")
    assert ds.pixel_array.shape == (64, 64)
    for value in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.StudyDate, ds.AccessionNumber):
        assert value in tokens
    _assert_substring_free(tokens.values())


def test_rt_structure_set_references_every_ct_slice(study: dict[str, object]) -> None:
    ct: list[Dataset] = study["ct"]  # type: ignore[assignment]
    files: dict[str, Path] = study["files"]  # type: ignore[assignment]
    rs = _read(files["rtstruct"])
    ct_uids = {ds.SOPInstanceUID for ds in ct}
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    study_ref = frame.RTReferencedStudySequence[0]
    assert study_ref.ReferencedSOPInstanceUID == ct[0].StudyInstanceUID
    series_ref = study_ref.RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series_ref.ContourImageSequence} == ct_uids
    for roi in rs.StructureSetROISequence:
        assert roi.ReferencedFrameOfReferenceUID == ct[0].FrameOfReferenceUID
    for roi_contour in rs.ROIContourSequence:
        refs = {
            c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in roi_contour.ContourSequence
        }
        assert refs == ct_uids
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber"):
        assert rs.data_element(key).value == ct[0].data_element(key).value  # type: ignore[union-attr]
    tokens: PhiTokens = study["tokens"]  # type: ignore[assignment]
    assert rs.SOPInstanceUID in tokens.values("uid")  # planted in the patient's registry


def test_sr_document_mentions_the_patient(study: dict[str, object]) -> None:
    files: dict[str, Path] = study["files"]  # type: ignore[assignment]
    patient: SyntheticPatient = study["patient"]  # type: ignore[assignment]
    sr = _read(files["sr"])
    assert sr.SOPClassUID == pydicom.uid.BasicTextSRStorage
    value_types = [i.ValueType for i in sr.ContentSequence]
    assert {"TEXT", "PNAME", "DATE", "UIDREF"} <= set(value_types)
    texts = " ".join(str(e.value) for e in sr.iterall() if e.keyword == "TextValue")
    assert patient.family in texts and patient.given in texts and patient.patient_id in texts


def test_us_and_sc_burned_in_annotation(study: dict[str, object]) -> None:
    files: dict[str, Path] = study["files"]  # type: ignore[assignment]
    us = _read(files["us"])
    assert us.NumberOfFrames == 3 and us.PhotometricInterpretation == "RGB"
    assert us.pixel_array.shape == (3, 48, 64, 3)
    assert us.BurnedInAnnotation == "YES"
    sc = _read(files["sc"])
    assert sc.BurnedInAnnotation == "NO"
    assert sc.pixel_array.shape == (64, 64)
    patient = SyntheticPatient.make(PhiTokens(), seed=1)
    assert "BurnedInAnnotation" not in us_multiframe(patient)
    assert "BurnedInAnnotation" not in secondary_capture(patient)


def test_all_objects_share_patient_and_study(study: dict[str, object]) -> None:
    objects: dict[str, Dataset] = study["objects"]  # type: ignore[assignment]
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
        values = {str(ds.data_element(key).value) for ds in objects.values()}  # type: ignore[union-attr]
        assert len(values) == 1, key


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("name", ["ct", "rtstruct", "sr", "us", "sc"])
def test_dciodvfy_reports_no_errors(study: dict[str, object], name: str) -> None:
    files: dict[str, Path] = study["files"]  # type: ignore[assignment]
    assert DCIODVFY is not None
    result = subprocess.run(
        [DCIODVFY, str(files[name])], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "Error" in line]
    assert errors == [], output


# ---- bad files ------------------------------------------------------------------------------


def test_write_bad_files(tmp_path: Path) -> None:
    bad = write_bad_files(tmp_path)
    expected = {
        "truncated",
        "truncated_pixels",
        "garbage",
        "text",
        "no_sop_instance_uid",
        "bad_length",
        "wrong_vr",
        "empty",
    }
    assert set(bad) == expected
    assert all(p.is_file() and p.parent == tmp_path for p in bad.values())
    assert bad["empty"].stat().st_size == 0
    for name in ("garbage", "text", "empty"):
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(bad[name])
    for name in ("bad_length", "wrong_vr"):
        with pytest.raises(Exception):  # noqa: B017 - pydicom raises BytesLengthException
            _read(bad[name])
    no_uid = _read(bad["no_sop_instance_uid"])
    assert "SOPInstanceUID" not in no_uid and "MediaStorageSOPInstanceUID" in no_uid.file_meta
    truncated = _read(bad["truncated"])
    assert "PixelData" not in truncated
    assert bad["truncated"].read_bytes()[128:132] == b"DICM"
    with pytest.raises(ValueError):
        _read(bad["truncated_pixels"]).pixel_array  # noqa: B018


# ---- the CLI --------------------------------------------------------------------------------


def test_make_synthetic_cli(tmp_path: Path) -> None:
    out = tmp_path / "ct"
    tokens_json = tmp_path / "tokens.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_synthetic.py"),
            *("--ct", "3", "--out", str(out), "--rows", "32", "--cols", "32", "--seed", "4"),
            *("--tokens-json", str(tokens_json)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert len(result.stdout.strip().splitlines()) == 1
    assert "wrote 3 CT slices" in result.stdout
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 3
    ds = _read(files[0])
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (32, 32, 16)
    records = json.loads(tokens_json.read_text())
    assert {r["value"] for r in records} >= {ds.PatientID, ds.SOPInstanceUID}
