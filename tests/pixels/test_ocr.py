"""Burned-in text is found where it was drawn, and nothing is found where none was.

Synthetic frames only: text drawn with Pillow (DejaVu Sans from Debian's
fonts-dejavu-core, and Pillow's own bitmap font) on flat, gradient and speckle
backgrounds, in 8 and 16 bits, grey, MONOCHROME1 and colour.
"""

from __future__ import annotations

import numpy as np
import pytest

from deid_node.pixels.ocr import Box, TextFinder, merge, to_grey
from tests.support.pixels import background, draw


def covered(text: Box, found: list[Box]) -> bool:
    """Whether the found boxes overlap the text's box over most of its width."""
    width = sum(
        max(0, min(text.right, b.right) - max(text.left, b.left))
        for b in found
        if b.top < text.bottom and text.top < b.bottom
    )
    return width >= 0.6 * (text.right - text.left)


@pytest.mark.parametrize("kind", ["flat", "gradient", "speckle"])
def test_text_is_found_where_it_was_drawn(text_finder: TextFinder, kind: str) -> None:
    frame, boxes = draw(
        background(kind),
        [((20, 15), "GENERAL HOSPITAL", 18, 255), ((330, 420), "SMITH JOHN 19600102", 16, 250)],
    )
    found = text_finder.find(frame)
    assert all(covered(b, found) for b in boxes), (boxes, found)


@pytest.mark.parametrize("kind", ["flat", "gradient", "speckle"])
def test_nothing_is_found_in_a_frame_without_text(text_finder: TextFinder, kind: str) -> None:
    assert text_finder.find(background(kind, seed=7)) == []


def test_the_bitmap_font_and_dimmer_text_on_a_gradient_are_found(text_finder: TextFinder) -> None:
    frame, boxes = draw(
        background("gradient"),
        [((400, 450), "ACC778899 CT ROOM7", None, 250), ((60, 300), "DIM NOTE", 16, 150)],
    )
    found = text_finder.find(frame)
    assert all(covered(b, found) for b in boxes), (boxes, found)


def test_sixteen_bit_monochrome1_and_colour_frames_are_read_as_displayed(
    text_finder: TextFinder,
) -> None:
    frame, [box] = draw(background("flat"), [((40, 200), "WESTSIDE CLINIC", 20, 255)])
    deep = frame.astype(np.uint16) * 16  # 12 bits stored
    assert covered(box, text_finder.find(deep))
    inverted = (255 - frame).astype(np.uint8)  # MONOCHROME1 stores the text dark
    assert covered(box, text_finder.find(inverted, "MONOCHROME1"))
    colour = np.zeros((*frame.shape, 3), dtype=np.uint8)
    colour[..., 0] = background("flat")
    colour[..., 1] = np.where(frame > 200, 255, 40)  # green overlay text
    assert covered(box, text_finder.find(colour, "RGB"))


def test_to_grey_scales_deep_frames_and_inverts_monochrome1() -> None:
    deep = np.array([[0, 2048], [4095, 1024]], dtype=np.uint16)
    assert to_grey(deep).tolist() == [[0, 127], [255, 63]]
    assert to_grey(deep, "MONOCHROME1").tolist() == [[255, 127], [0, 191]]
    assert to_grey(np.zeros((2, 2), dtype=np.int16)).tolist() == [[0, 0], [0, 0]]


def test_overlapping_boxes_merge_and_apart_ones_stay() -> None:
    boxes = [Box(0, 0, 10, 10), Box(5, 5, 20, 12), Box(19, 11, 30, 30), Box(50, 50, 60, 60)]
    assert merge(boxes) == [Box(0, 0, 30, 30), Box(50, 50, 60, 60)]
    assert merge(boxes[::-1]) == merge(boxes)  # whatever order they are found in
    assert Box(2, 3, 8, 9).padded(4, rows=10, columns=10) == Box(0, 0, 10, 10)
