"""Checks on the generated de-identification tables in deid_node/data."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.paths import REPO

DATA = REPO / "deid_node" / "data"
REFERENCE = REPO.parent / "shared" / "reference"
GENERATOR = REPO / "scripts" / "gen_tables.py"
TABLES = ("annex_e.csv", "safe_private.csv")
TEXT_GENERATOR = REPO / "scripts" / "gen_text_tables.py"
TEXT_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}

BASIC_CODES = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
PATTERN_TAGS = {"50XXXXXX", "60XX3000", "60XX4000", "ODD"}
ANNEX_E_HEADER = (
    "tag,keyword,vr,name,basic,retain-safe-private,retain-uids,retain-device-identity,"
    "retain-institution-identity,retain-patient-characteristics,"
    "retain-longitudinal-full-dates,retain-longitudinal-modified-dates,clean-descriptors,"
    "clean-structured-content,clean-graphics"
)


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _load_generator(path: Path = GENERATOR) -> ModuleType:
    """Import a generator of scripts/, which is a script rather than a package module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def annex_e() -> dict[str, dict[str, str]]:
    rows = _rows("annex_e.csv")
    assert len(rows) == 621
    by_tag = {row["tag"]: row for row in rows}
    assert len(by_tag) == len(rows), "duplicate tags"
    return by_tag


@pytest.fixture(scope="module")
def safe_private() -> list[dict[str, str]]:
    return _rows("safe_private.csv")


def test_annex_e_is_plain_csv_with_header() -> None:
    first = (DATA / "annex_e.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first == ANNEX_E_HEADER


def test_annex_e_has_pattern_rows(annex_e: dict[str, dict[str, str]]) -> None:
    assert annex_e.keys() >= PATTERN_TAGS
    for tag in PATTERN_TAGS:
        assert annex_e[tag]["keyword"] == annex_e[tag]["vr"] == ""
    assert annex_e["ODD"]["basic"] == "X"
    assert annex_e["ODD"]["retain-safe-private"] == "C"


def test_annex_e_tags_and_codes(annex_e: dict[str, dict[str, str]]) -> None:
    plain = [row for tag, row in annex_e.items() if tag not in PATTERN_TAGS]
    assert len(plain) == 617
    for row in plain:
        assert re.fullmatch(r"[0-9A-F]{8}", row["tag"]), row
        assert row["basic"] in BASIC_CODES, row
        assert row["keyword"], row
    assert list(annex_e) == sorted(annex_e), "rows not sorted by tag"


def test_annex_e_spot_checks(annex_e: dict[str, dict[str, str]]) -> None:
    patient_name = annex_e["00100010"]
    assert (patient_name["keyword"], patient_name["vr"], patient_name["basic"]) == (
        "PatientName",
        "PN",
        "Z",
    )
    study_uid = annex_e["0020000D"]
    assert study_uid["keyword"] == "StudyInstanceUID"
    assert study_uid["basic"] == "U"
    assert study_uid["retain-uids"] == "K"
    content = annex_e["0040A730"]
    assert content["keyword"] == "ContentSequence"
    assert content["basic"] == "D"
    assert content["clean-structured-content"] == "C"


def test_safe_private_shape(safe_private: list[dict[str, str]]) -> None:
    sources = {row["source"] for row in safe_private}
    assert sources == {"E.3.10-1", "TCIA"}
    keys = set()
    for row in safe_private:
        assert re.fullmatch(r"[0-9A-F]{4}", row["group"]), row
        assert int(row["group"], 16) % 2 == 1, row
        assert re.fullmatch(r"[0-9A-F]{2}", row["element"]), row
        assert row["creator"] and row["creator"] == row["creator"].strip(), row
        keys.add((row["group"], row["creator"].casefold(), row["element"]))
    assert len(keys) == len(safe_private), "case-insensitive duplicates"


def test_safe_private_spot_checks(safe_private: list[dict[str, str]]) -> None:
    by_key = {(r["group"], r["creator"].casefold(), r["element"]): r for r in safe_private}
    pitch = by_key[("0043", "gems_parm_01", "27")]
    assert (pitch["vr"], pitch["source"]) == ("SH", "E.3.10-1")
    # TCIA marks the GEIIS thumbnail sequence "d": it must never be listed as safe.
    assert ("0009", "geiis", "10") not in by_key


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not available at {REFERENCE}")
    generator = _load_generator()
    assert generator.main(["--reference", str(REFERENCE), "--output", str(tmp_path)]) == 0
    for name in TABLES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_every_unlisted_keep_row_is_technical() -> None:
    """A `keep` row is a code string, or was reviewed one by one and says why."""
    reviewed = _load_generator(TEXT_GENERATOR).REVIEWED
    rows = _rows("unlisted.csv")
    for row in rows:
        assert row["action"] in ("keep", "clean", "remove", "dummy"), row
        assert row["reason"] and "\n" not in row["reason"], row
        if row["action"] == "keep" and row["vr"] != "CS":
            assert reviewed.get(row["keyword"]) == ("keep", row["reason"]), row
    assert sum(r["action"] == "keep" and r["vr"] != "CS" for r in rows) > 50


def test_unlisted_covers_every_current_text_attribute_outside_annex_e(
    annex_e: dict[str, dict[str, str]],
) -> None:
    from pydicom._dicom_dict import DicomDictionary

    expected = {
        f"{tag:08X}"
        for tag, (vr, _vm, _name, retired, _kw) in DicomDictionary.items()
        if not retired and vr in TEXT_VRS and tag >> 16 not in (0, 2, 4)
    } - set(annex_e)
    rows = _rows("unlisted.csv")
    listed = [row["tag"] for row in rows]
    reviewed = _load_generator(TEXT_GENERATOR).REVIEWED
    # Binary attributes are listed only when reviewed one by one.
    assert {r["tag"] for r in rows if r["vr"] in TEXT_VRS} == expected
    assert all(r["keyword"] in reviewed for r in rows if r["vr"] not in TEXT_VRS)
    assert listed == sorted(listed) and len(listed) == len(set(listed))


def test_text_tables_regenerate_identically(tmp_path: Path) -> None:
    import faker
    import pydicom

    header = (DATA / "vocabulary.txt").read_text(encoding="utf-8").splitlines()[0]
    if f"pydicom {pydicom.__version__} " not in header or f"Faker {faker.VERSION} " not in header:
        pytest.skip(f"generated with other versions: {header}")
    from deid_node.deid.profiles import UNLISTED_DICTIONARY

    assert f"{UNLISTED_DICTIONARY} dictionary" in header
    assert _load_generator(TEXT_GENERATOR).main(["--output", str(tmp_path)]) == 0
    for name in ("unlisted.csv", "vocabulary.txt"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
