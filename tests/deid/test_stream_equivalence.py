"""The stream engine and the dataset engine agree, object by object and element by element.

Inputs: every pydicom test file that passes the encoding check, and the synthetic corpus
(CT, US multi-frame, secondary capture, SR, RT structure set, phi_everywhere, and text
that names the patient in every way of issue 22) in each native transfer syntax and
deflated; each under every profile the sweep uses. Outcomes
must be equal (status, reason, UIDs); stored outputs must be equal byte for byte, and
where they are not, the first element that differs is named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from deid_node.deid.burned_in import looks_at_pixels
from deid_node.deid.pipeline import Outcome, process_file, process_file_dataset
from deid_node.deid.profiles import CompiledProfile, compile_profile
from deid_node.deid.stream import StreamRefused, StreamUnsupported, deidentify_file
from deid_node.dicom.encoding import check_file
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    named_text_object,
    phi_everywhere,
    rt_structure_set,
    secondary_capture,
    sr_document,
    us_multiframe,
    write_files,
)
from tests.support.profiles import shipped_profiles

KEY = b"\x5a" * 32
_MAX_TEST_FILE = 4 << 20  # the few larger pydicom files add time, not cases
_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]


def _profiles() -> list[CompiledProfile]:
    return [compile_profile(p) for _, p in sorted(shipped_profiles().items())]


def _checked_test_files() -> list[Path]:
    found = []
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if path.suffix.lower() not in (".dcm", "") or path.stat().st_size > _MAX_TEST_FILE:
            continue
        try:
            check_file(path)
        except Exception:
            continue
        found.append(path)
    return found


def _synthetic(folder: Path, ts: str) -> list[Path]:
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens)
    ct = ct_series(2, patient=patient)
    objects = [
        *ct,
        rt_structure_set(ct, tokens=tokens),
        us_multiframe(patient),
        secondary_capture(patient),
        sr_document(patient),
        phi_everywhere(tokens),
        # Names that are words, run together, in three PN groups; ages; safe private text.
        named_text_object(
            "2.25.2202", "Bridge", "Will", ideographic=("王", "小东"), phonetic=("ワン", "シャオ")
        )[0],
    ]
    for ds in objects:
        ds.file_meta.TransferSyntaxUID = ts
    return write_files(objects, folder)


def _differences(old: Dataset, new: Dataset, path: str = "") -> list[str]:
    """Tag paths where two datasets differ (tags only: no value is named)."""
    out = []
    for tag in sorted(set(old.keys()) | set(new.keys())):
        name = f"{path}{tag}"
        if tag not in old or tag not in new:
            out.append(f"{name} only in {'new' if tag in new else 'old'}")
            continue
        a, b = old[tag], new[tag]
        if a.VR == "SQ" and b.VR == "SQ" and len(a.value) == len(b.value):
            for i, (x, y) in enumerate(zip(a.value, b.value, strict=True)):
                out.extend(_differences(x, y, f"{name}[{i}]."))
        elif a.VR != b.VR or a.value != b.value:
            out.append(name)
    return out


def _streamed(src: Path, profile: CompiledProfile) -> bool:
    """Whether the stream engine handles src itself (rather than handing it over)."""
    try:
        deidentify_file(src, profile, KEY)
    except StreamUnsupported:
        return False
    except StreamRefused:
        pass
    return True


def _compare(src: Path, profile: CompiledProfile, tmp: Path) -> bool:
    """Run both engines on src; assert they agree; True if the object was stored."""
    old = process_file_dataset(src, profile, KEY, tmp / "old")
    new = process_file(src, profile, KEY, tmp / "new")
    label = f"{src.name} under {profile.name}"
    assert _summary(old) == _summary(new), label
    if old.output_path is None or new.output_path is None:
        return False
    old_bytes, new_bytes = old.output_path.read_bytes(), new.output_path.read_bytes()
    if old_bytes != new_bytes:
        a, b = dcmread(old.output_path), dcmread(new.output_path)
        diffs = _differences(a.file_meta, b.file_meta) + _differences(a, b)
        pytest.fail(f"{label}: outputs differ at {diffs or 'no element (encoding only)'}")
    old.output_path.unlink()
    new.output_path.unlink()
    return True


def _summary(o: Outcome) -> tuple[object, ...]:
    return (
        o.status,
        o.reason,
        o.size_bytes,
        o.sop_class_uid,
        o.transfer_syntax_uid,
        o.pseudo_patient_id,
        o.pseudo_study_uid,
        o.pseudo_series_uid,
        o.pseudo_sop_uid,
        o.originals,
        o.output_path.relative_to(o.output_path.parents[4]) if o.output_path else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("ts", _SYNTAXES, ids=lambda ts: ts.name.replace(" ", "-"))
def test_synthetic_corpus_same_outputs(tmp_path: Path, ts: str) -> None:
    sources = _synthetic(tmp_path / "in", ts)
    profiles = _profiles()
    stored = sum(_compare(s, p, tmp_path) for s in sources for p in profiles)
    assert stored >= len(sources)  # most objects are stored by most profiles
    streamed = sum(_streamed(s, p) for s in sources for p in profiles)
    # A deflated body is one zlib stream: the dataset engine's. Every other is streamed,
    # but for pixels to clean (the dataset engine matches region rules on the header).
    deflated = ts == DeflatedExplicitVRLittleEndian
    cleaned = sum(_pixels_to_clean(s, p) for s in sources for p in profiles)
    assert 0 < cleaned < len(sources) * len(profiles)
    assert streamed == (0 if deflated else len(sources) * len(profiles) - cleaned)


def _pixels_to_clean(src: Path, profile: CompiledProfile) -> bool:
    """Whether the profile has the object's pixels looked at (the dataset engine's work)."""
    return looks_at_pixels(profile.config, dcmread(src, stop_before_pixels=True), True)


@pytest.mark.slow
def test_pydicom_test_files_same_outcomes(tmp_path: Path) -> None:
    sources = _checked_test_files()
    assert len(sources) > 100
    profiles = _profiles()
    stored = sum(_compare(s, p, tmp_path) for s in sources for p in profiles)
    assert stored > len(sources)
    # Deflated, bare and trailing-element files go to the dataset engine; few others.
    assert sum(_streamed(s, p) for s in sources for p in profiles) > 0.9 * stored
