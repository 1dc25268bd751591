"""Cines: the static overlay is found once, and text on one frame of sixty is still seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status
from deid_node.pixels.decode import Layout, iter_frames
from deid_node.pixels.release import PixelsAsSent, plan_pixels, shared_finder
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, us_multiframe
from deid_node.testing.synthetic.annotated import Drawn, draw_text

CLEAN = ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN)
BASIC = ProfileConfig(name="basic")
ROWS, COLS = 240, 320
WHITE = (255, 255, 255)


def cine(
    frames: int, extra_on: int | None = None, inside_fan: bool = False, seed: int = 0
) -> tuple[Dataset, list[Drawn], list[Drawn]]:
    """A moving ultrasound with a static banner; an extra name on one frame if asked."""
    who = SyntheticPatient.make(PhiTokens(), seed=seed + 3)
    ds = us_multiframe(who, frames, ROWS, COLS, seed=seed)
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(frames, ROWS, COLS, 3).copy()
    static: list[Drawn] = []
    extra: list[Drawn] = []
    banner = [
        ((4, 4), f"{who.family} {who.given}", 14, WHITE),
        ((4, 22), who.patient_id, 14, WHITE),
    ]
    for f in range(frames):
        pixels[f], static = draw_text(pixels[f], banner)
        if f == extra_on:
            at = (COLS // 2 - 60, ROWS // 2) if inside_fan else (COLS - 130, ROWS - 24)
            pixels[f], extra = draw_text(pixels[f], [(at, f"{who.given} {who.family}", 14, WHITE)])
    ds.PixelData = pixels.tobytes()
    return ds, static, extra


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_blank(frame: np.ndarray, drawn: list[Drawn]) -> None:
    for d in drawn:
        left, top, right, bottom = d.box
        assert float(frame[top:bottom, left:right].std()) < 1.0, d.box


@pytest.mark.parametrize("inside_fan", [False, True], ids=["outside", "inside-the-fan"])
def test_text_on_one_frame_of_sixty_is_found(tmp_path: Path, inside_fan: bool) -> None:
    ds, static, extra = cine(60, extra_on=56, inside_fan=inside_fan)
    src = save(ds, tmp_path / "in" / "cine.dcm")
    out = process_file(src, compile_profile(CLEAN), b"k" * 32, tmp_path / "out")
    assert out.status is Status.STORED and out.output_path is not None, out.reason
    for index, frame in enumerate(iter_frames(out.output_path)):
        assert_blank(frame, static)
        if index == 56:
            assert_blank(frame, extra)
            assert shared_finder().find(frame, "RGB") == []


def test_a_static_overlay_is_looked_at_once(tmp_path: Path) -> None:
    ds, static, _ = cine(120, seed=1)
    src = save(ds, tmp_path / "in" / "cine.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    plan = plan_pixels(src, PixelsAsSent(Layout.of(ds), [], []))
    report = plan.report
    assert report.frames == 120 and report.distinct == 120
    assert report.looked_whole == 1  # the first; the others only where they moved
    assert report.frames_changed == 120
    for frame in plan.cleaned_frames():
        assert_blank(frame, static)


def test_under_quarantine_a_cine_that_claims_no_text_is_withheld(tmp_path: Path) -> None:
    ds, _, _ = cine(20, extra_on=17)
    ds.BurnedInAnnotation = "NO"
    src = save(ds, tmp_path / "in" / "cine.dcm")
    out = process_file(src, compile_profile(BASIC), b"k" * 32, tmp_path / "out")
    assert out.status is Status.QUARANTINED and "text-like content" in (out.reason or "")
