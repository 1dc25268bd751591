"""Frames with text drawn on them, and what a finder still reads after cleaning."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from deid_node.pixels.ocr import Box

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def background(kind: str, seed: int = 1) -> np.ndarray:
    """A 640x480 8-bit frame: "speckle", "gradient" or flat."""
    rng = np.random.default_rng(seed)
    if kind == "speckle":
        pixels = rng.gamma(2.0, 25.0, (480, 640))
    elif kind == "gradient":
        pixels = np.tile(np.linspace(0, 190, 640), (480, 1))
    else:
        pixels = np.full((480, 640), 60.0)
    return pixels.clip(0, 255).astype(np.uint8)


def font(size: int | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at `size`, or Pillow's bitmap font (None); skips without the font."""
    if size is None:
        return ImageFont.load_default()
    if not DEJAVU.exists():
        pytest.skip(f"{DEJAVU} not found: apt-get install fonts-dejavu-core")
    return ImageFont.truetype(str(DEJAVU), size)


def draw(pixels: np.ndarray, texts: list[tuple[tuple[int, int], str, int | None, int]]):
    """The frame with the texts drawn, and each text's bounding box."""
    img = Image.fromarray(pixels)
    pen = ImageDraw.Draw(img)
    boxes = []
    for (x, y), text, size, fill in texts:
        face = font(size)
        pen.text((x, y), text, fill=fill, font=face)
        boxes.append(Box(*pen.textbbox((x, y), text, font=face)))
    return np.asarray(img).copy(), boxes


def readable_in(
    frame: Any, photometric: str, texts: Iterable[tuple[int, int, int, int]], *finders: Any
) -> list[tuple[int, int, int, int]]:
    """The planted texts (left, top, right, bottom) any finder still finds a box over.

    Boxes elsewhere (OCR reads texture as words) are not this text; a box over the
    blanked rectangle's inside is.
    """
    left_over = []
    for left, top, right, bottom in texts:
        inside = (left + 2, top + 2, right - 2, bottom - 2)
        for finder in finders:
            if any(
                b.left < inside[2]
                and inside[0] < b.right
                and b.top < inside[3]
                and inside[1] < b.bottom
                for b in finder.find(frame, photometric)
            ):
                left_over.append((left, top, right, bottom))
                break
    return left_over


class SeesTextEverywhere:
    """A finder that finds text in every frame, blanked or not: blanking never satisfies it."""

    def find(
        self,
        frame: np.ndarray,
        photometric: str = "MONOCHROME2",
        blanked: Sequence[Box] = (),
        within: Sequence[Box] | None = None,
    ) -> list[Box]:
        return [Box(0, 0, 8, 8)]
