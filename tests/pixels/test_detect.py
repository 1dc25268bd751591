"""The text detector (deid_node/pixels/detect.py): DBNet behind a stroke pre-filter.

Every planted case is found (its ink inside the boxes), text-free frames give no box,
`within` restricts the look, and the model is found without importing its package.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pydicom
import pytest

from deid_node.pixels.detect import TextDetector, colour_flow, model_path
from deid_node.pixels.ocr import Box, to_grey
from deid_node.pixels.strokes import candidate_blocks
from deid_node.testing.synthetic.annotated import draw_text
from deid_node.testing.synthetic.textcases import Case, ct_slice, text_cases, textless_cases
from tests.support.files import PYDICOM_FILES

# Known misses, kept in scripts/measure_detect.py's table and the README: small text
# turned onto bright speckle (DBNet finds the part on black), and white text across the
# edges of a synthetic colour flow map (found on pydicom's real Doppler, below).
HARD = {"white 7px turned 90", "white on colour Doppler"}
CASES = {c.name: c for c in text_cases()}
TEXTLESS = {c.name: c for c in textless_cases()}


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector()


def ink_outside(case: Case, boxes: Sequence[Box]) -> float:
    """Share of the planted text's ink pixels outside every box."""
    shares = []
    for drawn in case.drawn:
        ink = case.ink_in(drawn)
        inside = np.zeros(len(ink), dtype=bool)
        for b in boxes:
            inside |= (
                (ink[:, 0] >= b.top)
                & (ink[:, 0] < b.bottom)
                & (ink[:, 1] >= b.left)
                & (ink[:, 1] < b.right)
            )
        shares.append(1.0 - float(inside.mean()))
    return max(shares)


@pytest.mark.parametrize("name", [n for n in CASES if n not in HARD])
def test_planted_text_is_found(detector: TextDetector, name: str) -> None:
    case = CASES[name]
    assert case.ink.any()
    boxes = detector.find(case.frame, case.photometric)
    assert ink_outside(case, boxes) <= 0.05, boxes


@pytest.mark.parametrize("name", list(TEXTLESS))
def test_text_free_frames_give_no_box(detector: TextDetector, name: str) -> None:
    case = TEXTLESS[name]
    assert detector.find(case.frame, case.photometric) == []


def _frames(name: str) -> list[tuple[np.ndarray, str]]:
    ds = pydicom.dcmread(PYDICOM_FILES / name)
    pixels = ds.pixel_array  # colour comes as RGB (pydicom converts YBR)
    photometric = "RGB" if ds.SamplesPerPixel == 3 else str(ds.PhotometricInterpretation)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return [(f, photometric) for f in (pixels if frames > 1 else [pixels])]


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cr.dcm",
        "SC_rgb_jpeg.dcm",
        "SC_rgb_jpeg_dcmd.dcm",
        "SC_jpeg_no_color_transform.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "CT_small.dcm",
        "MR_small.dcm",
        "liver_1frame.dcm",
        "693_J2KI.dcm",
    ],
)
def test_pydicoms_images_without_text_give_no_box(detector: TextDetector, name: str) -> None:
    for frame, photometric in _frames(name):
        assert detector.find(frame, photometric) == []


def test_pydicoms_ultrasound_text_is_found_and_its_doppler_is_not(
    detector: TextDetector,
) -> None:
    # A real ultrasound with a colour Doppler box: its annotation is text, the flow is not.
    (frame, photometric), *_ = _frames("examples_rgb_color.dcm")
    boxes = detector.find(frame, photometric)
    assert any(b.top < 20 and b.left < 20 for b in boxes)  # the institution, top left
    doppler = Box(80, 100, 220, 120)  # the middle of the flow area
    assert not any(b.overlaps(doppler) for b in boxes), boxes


def test_small_dim_labels_on_a_real_toolbar_are_found(detector: TextDetector) -> None:
    # 6-pixel grey labels ("Sector", "MB Off", "On", "Page 1/3") on the toolbar at the foot
    # of pydicom's echo: DBNet misses them at their size, finds them at twice.
    (frame, photometric), *_ = _frames("examples_ybr_color.dcm")
    boxes = detector.find(frame, photometric)
    assert any(b.top >= 224 and b.left <= 140 and b.right >= 270 for b in boxes), boxes


def test_white_text_over_a_real_doppler_is_found(detector: TextDetector) -> None:
    (frame, photometric), *_ = _frames("examples_rgb_color.dcm")
    frame, drawn = draw_text(frame, [((80, 100), "DOE 5678", 12, (255, 255, 255))])
    left, top, right, bottom = drawn[0].box
    boxes = detector.find(frame, photometric)
    assert any(
        b.left <= left and b.top <= top and b.right >= right and b.bottom >= bottom for b in boxes
    ), boxes


def test_large_text_is_found(detector: TextDetector) -> None:
    # pydicom's "red green blue" in letters some 50 pixels high: strokes wider than the
    # first pass's ridges at full size.
    (frame, photometric), *_ = _frames("GDCMJ2K_TextGBR.dcm")
    assert len(detector.find(frame, photometric)) == 3


def test_within_restricts_and_gives_frame_coordinates(detector: TextDetector) -> None:
    frame = np.full((240, 320), 30, dtype=np.uint8)
    frame, drawn = draw_text(
        frame, [((20, 20), "FIRST 1234", 14, 255), ((20, 180), "SECOND 5678", 14, 255)]
    )
    both = detector.find(frame)
    assert len(both) == 2
    left, top, right, bottom = drawn[1].box
    area = Box(0, 150, 320, 240)
    only = detector.find(frame, within=[area])
    assert len(only) == 1
    box = only[0]
    assert box.left <= left and box.top <= top and box.right >= right and box.bottom >= bottom
    assert detector.find(frame, within=[Box(200, 80, 320, 140)]) == []


def test_blanked_boxes_are_not_found_again(detector: TextDetector) -> None:
    frame, _ = draw_text(np.full((200, 300), 60, np.uint8), [((30, 80), "ROE 99", 14, 255)])
    (box,) = detector.find(frame)
    frame[box.top : box.bottom, box.left : box.right] = 0
    assert detector.find(frame, blanked=[box]) == []


def test_first_pass_passes_over_a_ct_slice_and_keeps_small_text() -> None:
    grey = to_grey(ct_slice(seed=3))
    assert candidate_blocks(grey).mean() < 0.1
    frame, _ = draw_text(grey.copy(), [((300, 480), "ID 20394857", 8, 255)])
    cells = candidate_blocks(frame)
    assert cells[480 // 16 : 490 // 16 + 1, 300 // 16 : 340 // 16].any()


def test_colour_flow_is_hues_spread_and_text_one_hue() -> None:
    flow = np.zeros((20, 60, 3), dtype=np.uint8)
    flow[..., 0] = 220
    flow[..., 1] = np.linspace(0, 220, 60, dtype=np.uint8)  # red to yellow
    assert colour_flow(flow)
    text, _ = draw_text(np.full((20, 60, 3), 40, np.uint8), [((2, 2), "ABC", 14, (255, 255, 0))])
    assert not colour_flow(text)


def test_model_is_found_without_importing_its_package() -> None:
    assert model_path().name == "ch_PP-OCRv4_det_infer.onnx"
    code = (
        "import sys\n"
        "from deid_node.pixels.detect import TextDetector\n"
        "TextDetector()\n"
        "assert 'rapidocr_onnxruntime' not in sys.modules\n"
        "assert 'cv2' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
