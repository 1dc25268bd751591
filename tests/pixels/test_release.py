"""Objects with burned-in text through the pipeline under `burned_in_annotation = "clean"`:
the text is blanked in place, everything else kept, and nothing with text left is written.

Synthetic images only (deid_node.testing.synthetic.annotated): the patient's name, ID,
hospital and date drawn with DejaVu Sans and Pillow's bitmap font on ultrasound speckle
and on a screen-save gradient.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from deid_node.config import BurnedInPolicy, ProfileConfig, RegionRule
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status
from deid_node.pixels import release
from deid_node.pixels.decode import iter_frames
from deid_node.pixels.ocr import Box, TextFinder
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, secondary_capture
from deid_node.testing.synthetic.annotated import Drawn, annotated_capture, annotated_ultrasound
from tests.support.files import bundled
from tests.support.pixels import readable_in

KEY = b"k" * 32
CLEAN = ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN)
BANNER_ROWS = 40  # the shipped rule for the synthetic scanner blanks the top 40 rows


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def clean(path: Path, tmp_path: Path, cfg: ProfileConfig = CLEAN) -> Outcome:
    return process_file(path, compile_profile(cfg), KEY, tmp_path / "out")


def frames_of(path: Path) -> list[np.ndarray]:
    return list(iter_frames(path))


def assert_text_gone(
    finder: TextFinder, before: list[np.ndarray], after: list[np.ndarray], drawn: list[Drawn]
) -> None:
    """Nothing is found any more, and inside each text's box the contrast is gone."""
    for b, a in zip(before, after, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype  # geometry unchanged
        photometric = "RGB" if a.ndim == 3 else "MONOCHROME2"
        boxes = [d.box for d in drawn]
        assert readable_in(a, photometric, boxes, finder, release.shared_finder()) == []
        for d in drawn:
            left, top, right, bottom = d.box
            inside, was = a[top:bottom, left:right], b[top:bottom, left:right]
            assert float(inside.std()) < 0.1 * float(was.std()), d.box


def changed_within(before: np.ndarray, after: np.ndarray, allowed: list[Box]) -> bool:
    """Whether every pixel that differs lies inside one of the allowed boxes."""
    diff = before != after
    if diff.ndim == 3:
        diff = diff.any(axis=2)
    for b in allowed:
        diff[b.top : b.bottom, b.left : b.right] = False
    return not diff.any()


def near(drawn: list[Drawn], margin: int = 32) -> list[Box]:
    """Boxes around the drawn texts, as far as blanking may reach (a word box on speckle
    takes in the bright grains around it)."""
    return [
        Box(max(0, x0 - margin), max(0, y0 - margin), x1 + margin, y1 + margin)
        for (x0, y0, x1, y1) in (d.box for d in drawn)
    ]


@pytest.fixture
def patient() -> SyntheticPatient:
    return SyntheticPatient.make(PhiTokens(), seed=5)


def test_ultrasound_text_is_blanked_in_place_and_the_object_released(
    tmp_path: Path, patient: SyntheticPatient, text_finder: TextFinder
) -> None:
    ds, drawn = annotated_ultrasound(patient, frames=3, text_frames=[0, 2])
    src = save(ds, tmp_path / "in" / "us.dcm")
    out = clean(src, tmp_path)
    assert out.status is Status.STORED, out.reason
    assert out.output_path is not None and out.pixels is not None
    assert out.pixels.startswith("cleaned: ") and "by detector" in out.pixels
    assert "Synthetica Sono patient banner" in out.pixels
    written = pydicom.dcmread(out.output_path)
    assert written.BurnedInAnnotation == "NO" and written.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in written.DeidentificationMethodCodeSequence]
    assert codes[:2] == ["113100", "113101"]
    assert (written.Rows, written.Columns, written.NumberOfFrames) == (480, 640, 3)
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # No planted value anywhere in the file: header, and pixels as far as bytes go.
    assert patient.tokens.find_in(out.output_path.read_bytes()) == []
    before, after = frames_of(src), frames_of(out.output_path)
    assert len(after) == 3
    assert_text_gone(text_finder, [before[0], before[2]], [after[0], after[2]], drawn[0])
    banner = Box(0, 0, 640, BANNER_ROWS)
    for f in range(3):  # only the banner and what lies near a text ever changes
        assert changed_within(before[f], after[f], [banner, *near(drawn.get(f, []))])
    assert (after[1][BANNER_ROWS:] == before[1][BANNER_ROWS:]).all()  # no text: kept


def test_an_object_without_text_keeps_its_pixels_byte_for_byte(
    tmp_path: Path, patient: SyntheticPatient
) -> None:
    ds = secondary_capture(patient, rows=240, cols=320)  # a gradient, nothing drawn on it
    ds.BurnedInAnnotation = "YES"  # the sender thinks there is text: it is looked for
    plain = ds
    src = save(ds, tmp_path / "in" / "sc.dcm")
    out = clean(src, tmp_path)
    assert out.status is Status.STORED, out.reason
    assert (
        out.pixels
        == "checked: no text in 1 frame (1 distinct; looked at 1 whole, 0 in part; 1 passes)"
    )
    assert out.output_path is not None
    written = pydicom.dcmread(out.output_path)
    assert written.BurnedInAnnotation == "NO"
    assert "113101" not in [i.CodeValue for i in written.DeidentificationMethodCodeSequence]
    assert written.PixelData == plain.PixelData
    assert written.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_a_secondary_capture_without_the_flag_is_scanned_and_cleaned(
    tmp_path: Path, patient: SyntheticPatient, text_finder: TextFinder
) -> None:
    ds, drawn = annotated_capture(patient, rows=240, cols=320)  # no BurnedInAnnotation
    src = save(ds, tmp_path / "in" / "sc.dcm")
    out = clean(src, tmp_path)
    assert out.status is Status.STORED, out.reason
    assert out.output_path is not None and out.pixels and "by detector" in out.pixels
    before, after = frames_of(src), frames_of(out.output_path)
    assert_text_gone(text_finder, before, after, drawn)
    assert changed_within(before[0], after[0], near(drawn))
    assert patient.tokens.find_in(out.output_path.read_bytes()) == []


@pytest.mark.parametrize(
    ("syntax", "plugin", "written_in"),
    [
        (RLELossless, "pydicom", RLELossless),
        (JPEGLSLossless, "pyjpegls", JPEGLSLossless),
        (JPEG2000Lossless, "pylibjpeg", JPEG2000Lossless),
    ],
)
def test_lossless_input_goes_back_into_its_syntax_and_only_the_text_changes(
    tmp_path: Path, patient: SyntheticPatient, syntax: str, plugin: str, written_in: str
) -> None:
    ds, drawn = annotated_capture(patient, rows=240, cols=320, burned_in="YES")
    ds.compress(syntax, encoding_plugin=plugin)
    src = save(ds, tmp_path / "in" / "sc.dcm")
    out = clean(src, tmp_path)
    assert out.status is Status.STORED, out.reason
    assert out.output_path is not None
    written = pydicom.dcmread(out.output_path)
    assert written.file_meta.TransferSyntaxUID == written_in
    assert "LossyImageCompression" not in written or written.LossyImageCompression == "00"
    before, after = frames_of(src), frames_of(out.output_path)
    assert changed_within(before[0], after[0], near(drawn))  # lossless: the rest is equal
    assert not np.array_equal(before[0], after[0])


def test_jpeg_baseline_comes_out_uncompressed_and_still_says_it_was_lossy(
    tmp_path: Path, patient: SyntheticPatient, text_finder: TextFinder
) -> None:
    ds, drawn = annotated_ultrasound(patient, frames=2, rows=240, cols=320)
    native = save(ds, tmp_path / "in" / "native.dcm")
    src = tmp_path / "in" / "jpeg.dcm"
    done = subprocess.run(
        ["/usr/bin/dcmcjpeg", "+eb", str(native), str(src)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("dcmtk's dcmcjpeg is not installed")
    assert pydicom.dcmread(src).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    out = clean(src, tmp_path)
    assert out.status is Status.STORED, out.reason
    assert out.pixels and "JPEG Baseline (Process 1) -> Explicit VR Little Endian" in out.pixels
    assert out.output_path is not None
    written = pydicom.dcmread(out.output_path)
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert written.LossyImageCompression == "01"
    assert written.LossyImageCompressionMethod == "ISO_10918_1"
    assert written.PhotometricInterpretation == "RGB" and written.PlanarConfiguration == 0
    assert_text_gone(text_finder, frames_of(src), frames_of(out.output_path), drawn[0])


def test_profile_rules_and_ultrasound_regions_blank_what_they_name(
    tmp_path: Path, patient: SyntheticPatient
) -> None:
    ds, _ = annotated_ultrasound(patient, frames=1, text_frames=[])  # no text at all
    src = save(ds, tmp_path / "in" / "us.dcm")
    corner = RegionRule("corner", (("Modality", ("US",)),), ((-50, -30, 50, 30),))
    never = RegionRule("other scanner", (("Manufacturer", ("NOBODY*",)),), ((0, 0, 10, 10),))
    cfg = replace(CLEAN, pixel_rules=(corner, never), shipped_pixel_rules=False)
    out = clean(src, tmp_path, cfg)
    assert out.status is Status.STORED, out.reason
    assert out.pixels and "rules: corner" in out.pixels and "other scanner" not in out.pixels
    assert out.output_path is not None
    [before], [after] = frames_of(src), frames_of(out.output_path)
    assert (after[-30:, -50:] == 0).all()
    assert changed_within(before, after, [Box(590, 450, 640, 480)])

    keep_fan = replace(CLEAN, shipped_pixel_rules=False, ultrasound_regions=True)
    out = clean(src, tmp_path / "regions", keep_fan)
    assert out.status is Status.STORED and out.output_path is not None
    [after] = frames_of(out.output_path)
    region = ds.SequenceOfUltrasoundRegions[0]
    x0, y0 = region.RegionLocationMinX0, region.RegionLocationMinY0
    x1, y1 = region.RegionLocationMaxX1 + 1, region.RegionLocationMaxY1 + 1
    assert np.array_equal(after[y0:y1, x0:x1], before[y0:y1, x0:x1])
    outside = np.ones(after.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (after[outside] == 0).all()


class _SeesTheNameLast:
    """A finder that keeps finding something after blanking: a corner three times, then
    the patient's name (never satisfied, and what it finds last is text)."""

    def __init__(self, name: Box) -> None:
        self.name, self.calls = name, 0

    def find(
        self,
        frame: np.ndarray,
        photometric: str = "MONOCHROME2",
        blanked: Sequence[Box] = (),
        within: Sequence[Box] | None = None,
    ) -> list[Box]:
        self.calls += 1
        return [Box(0, 0, 8, 8)] if self.calls < 4 else [self.name]


def test_text_still_found_after_blanking_quarantines_and_writes_nothing(
    tmp_path: Path, patient: SyntheticPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, drawn = annotated_capture(patient, burned_in="YES")
    finder = _SeesTheNameLast(Box(*drawn[0].box))
    monkeypatch.setattr(release, "shared_finder", lambda: finder)
    out = clean(save(ds, tmp_path / "in" / "sc.dcm"), tmp_path)
    assert out.status is Status.QUARANTINED
    assert out.reason == "burned-in text remains after blanking (frame 1)"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_pixels_that_cannot_be_decoded_quarantine_with_the_reason(tmp_path: Path) -> None:
    # pydicom's 12-bit JPEG Extended sample, cut short inside its headers.
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(bundled("JPGExtended.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:40] + b"\xff\xd9"])  # cut inside its headers
    ds.BurnedInAnnotation = "YES"
    out = clean(save(ds, tmp_path / "in" / "jpeg12.dcm"), tmp_path)
    assert out.status is Status.QUARANTINED
    assert out.reason and "JPEG Extended" in out.reason
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))


def test_without_clean_the_policy_still_quarantines(
    tmp_path: Path, patient: SyntheticPatient
) -> None:
    ds, _ = annotated_capture(patient, rows=64, cols=64, burned_in="YES")
    cfg = replace(CLEAN, burned_in_annotation=BurnedInPolicy.QUARANTINE)
    out = clean(save(ds, tmp_path / "in" / "sc.dcm"), tmp_path, cfg)
    assert out.status is Status.QUARANTINED and "policy is quarantine" in str(out.reason)


def test_deidentify_command_cleans_burned_in_text_offline(
    tmp_path: Path, patient: SyntheticPatient, text_finder: TextFinder
) -> None:
    from typer.testing import CliRunner

    from deid_node.cli.app import app

    us, drawn = annotated_ultrasound(patient, frames=2, rows=240, cols=320)
    save(us, tmp_path / "in" / "us.dcm")
    cfg = tmp_path / "deid.toml"
    cfg.write_text(
        '[node]\ndata_dir = "var"\n[profiles.research]\nburned_in_annotation = "clean"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["deidentify", str(tmp_path / "in"), "-o", str(out), "-p", "research", "-c", str(cfg)]
    )
    assert result.exit_code == 0, result.output
    assert "1 written" in result.output
    assert patient.tokens.find_in(result.output) == []
    [written] = sorted(out.rglob("*.dcm"))
    assert patient.tokens.find_in(written.read_bytes()) == []
    before = frames_of(tmp_path / "in" / "us.dcm")
    assert_text_gone(text_finder, before, frames_of(written), drawn[0])
