"""Cleaning blanks what is found, leaves everything else alike, and refuses when text
survives blanking."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import UID

from deid_node.pixels.clean import TextRemains, apply, blank, fill_value, survey
from deid_node.pixels.decode import Layout
from deid_node.pixels.detect import TextDetector
from deid_node.pixels.ocr import Box, TextFinder
from tests.support.pixels import SeesTextEverywhere, background, draw


def layout(frames: int, photometric: str = "MONOCHROME2", samples: int = 1) -> Layout:
    return Layout(
        480, 640, samples, frames, 8, 8, False, photometric, 0, UID("1.2.840.10008.1.2.1")
    )


def test_text_is_blanked_in_every_frame_it_is_in_and_nothing_else_changes(
    text_finder: TextFinder, text_detector: TextDetector
) -> None:
    plain = background("speckle", seed=3)
    texted, [box] = draw(plain, [((30, 20), "GENERAL HOSPITAL 19600102", 18, 255)])
    frames = [texted, plain, texted.copy()]  # the first and last are identical
    report = survey(frames, layout(3), text_detector)
    cleaned = list(apply(frames, layout(3), report))
    assert len(cleaned) == 3
    assert all(c.shape == plain.shape and c.dtype == plain.dtype for c in cleaned)
    assert np.array_equal(cleaned[1], plain)  # no text: untouched
    assert np.array_equal(cleaned[0], cleaned[2])  # identical frames blanked alike
    for c in (cleaned[0], cleaned[2]):
        assert text_finder.find(c) == [] and text_detector.find(c) == []
        inside = c[box.top : box.bottom, box.left : box.right]
        before = texted[box.top : box.bottom, box.left : box.right]
        assert float(inside.std()) < 0.1 * float(before.std())  # the text's contrast gone
        changed = np.argwhere(c != texted)
        # Something was blanked, and only near the text (on speckle a line's box takes in
        # the bright grains beside it, and DBNet's boxes are grown: up to about 30 pixels).
        assert changed.size
        top, left = changed.min(axis=0)
        bottom, right = changed.max(axis=0)
        assert top >= box.top - 30 and bottom <= box.bottom + 30
        assert left >= box.left - 30 and right <= box.right + 30
    assert (report.frames, report.distinct, report.frames_changed) == (3, 2, 2)
    assert report.regions >= 1 and report.by_rule == 0


def test_rule_boxes_are_blanked_in_every_frame(text_detector: TextDetector) -> None:
    plain = background("gradient")
    rule = Box(0, 0, 640, 40)  # a band across the top
    report = survey([plain, plain], layout(2), text_detector, fixed=[rule])
    cleaned = list(apply([plain, plain], layout(2), report))
    for c in cleaned:
        assert (c[:40] == plain.min()).all()
        assert np.array_equal(c[40:], plain[40:])
    assert report.by_rule == 1 and report.frames_changed == 2


def test_text_found_again_after_blanking_refuses_the_object() -> None:
    with pytest.raises(TextRemains, match="remains after blanking \\(frame 1\\)"):
        survey([background("flat")], layout(1), SeesTextEverywhere())


def test_blanking_is_black_as_displayed_on_every_sample() -> None:
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4) + 100
    assert fill_value(layout(1, "MONOCHROME2"), grey) == 100
    assert fill_value(layout(1, "MONOCHROME1"), grey) == 111
    rgb = np.full((3, 4, 3), 200, dtype=np.uint8)
    out = blank(rgb, [Box(1, 1, 3, 2)], fill_value(layout(1, "RGB", 3), rgb))
    assert (out[1, 1:3] == 0).all() and (out[0] == 200).all() and (rgb == 200).all()
