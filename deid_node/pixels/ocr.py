"""Burned-in text in a frame, found with Tesseract (tesserocr: in-process, no subprocess).

Tesseract reads dark text on a light page; burned-in text is light overlay on an image.
Each frame is therefore turned into page-like variants first, and the word boxes found in
any of them are united: a global threshold near the frame's brightest values (overlay
text is drawn at or near full scale) and a white top-hat (small bright detail against its
surroundings, which keeps dimmer text on gradients). Pages are upscaled 3x because
Tesseract misses text whose letters are under about 20 pixels high (bitmap fonts are 8).

Finding text only has to say where, not what: boxes, never the words, leave this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from deid_node.errors import DeidError

SCALE: Final = 3  # upscaling before OCR
MIN_CONFIDENCE: Final = 50  # Tesseract's word confidence, 0-100
TOP_HAT_SIZE: Final = 5  # the structuring element, in frame pixels (> a stroke's width)
TESSDATA_DIRS: Final = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
)


class OcrUnavailable(DeidError):
    """Tesseract or its English data is not installed: no text can be looked for."""


@dataclass(frozen=True)
class Box:
    """A rectangle in frame pixels: columns left..right-1, rows top..bottom-1."""

    left: int
    top: int
    right: int
    bottom: int

    def padded(self, pad: int, rows: int, columns: int) -> Box:
        """This box grown by `pad` pixels on every side, within the frame."""
        return Box(
            max(0, self.left - pad),
            max(0, self.top - pad),
            min(columns, self.right + pad),
            min(rows, self.bottom + pad),
        )

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        return Box(
            min(self.left, other.left),
            min(self.top, other.top),
            max(self.right, other.right),
            max(self.bottom, other.bottom),
        )

    def overlaps(self, other: Box) -> bool:
        """Whether the two rectangles share a pixel."""
        return (
            self.left < other.right
            and other.left < self.right
            and self.top < other.bottom
            and other.top < self.bottom
        )


def tessdata_dir() -> Path:
    """Where Tesseract's trained data is: $TESSDATA_PREFIX, else Debian's folders."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for folder in filter(None, candidates):
        if (Path(folder) / "eng.traineddata").is_file():
            return Path(folder)
    raise OcrUnavailable("Tesseract's English data not found (apt-get install tesseract-ocr-eng)")


def to_grey(frame: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """An 8-bit grey image in which burned-in text is bright.

    Colour frames take the brightest sample per pixel (white and saturated overlay text
    alike); deeper frames are scaled by their own range; MONOCHROME1 is inverted, since
    there the lowest stored value is displayed brightest.
    """
    data = np.asarray(frame)
    if data.ndim == 3:
        data = data.max(axis=2)
    data = data.astype(np.float32)
    if photometric.strip() == "MONOCHROME1":
        data = data.max() - data
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    if low >= 0 and high <= 255 and frame.dtype == np.uint8:
        return data.astype(np.uint8)
    return ((data - low) * (255.0 / (high - low))).astype(np.uint8)


def variants(grey: np.ndarray) -> Iterator[Image.Image]:
    """Page-like versions of an 8-bit frame (dark text on white), upscaled by SCALE.

    The filtering runs at the frame's own size with separable numpy filters (Pillow's rank
    filters on an upscaled frame took a second a frame); only the binary pages are
    upscaled.
    """
    pixels = grey.astype(np.int16)
    top = int(pixels.max())
    if top > 0:
        yield _page(pixels >= top * 0.85)
    opened = _grey_filter(_grey_filter(pixels, TOP_HAT_SIZE, np.minimum), TOP_HAT_SIZE, np.maximum)
    detail = pixels - opened
    spread = float(detail.std())
    if spread > 0:
        yield _page(_without_lone_pixels(detail > detail.mean() + 4 * spread))


def _grey_filter(a: np.ndarray, size: int, op: Any) -> np.ndarray:
    """A size x size minimum or maximum filter (`op` np.minimum or np.maximum)."""
    r = size // 2
    padded = np.pad(a, r, mode="edge")
    rows = op.reduce([padded[i : i + a.shape[0]] for i in range(size)])
    return np.asarray(op.reduce([rows[:, i : i + a.shape[1]] for i in range(size)]))


def _without_lone_pixels(mask: np.ndarray) -> np.ndarray:
    """The mask without set pixels that have no set neighbour (speckle, not strokes)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    h, w = mask.shape
    neighbours = sum(
        padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    )
    return np.asarray(mask & (neighbours > 0))


def _page(mask: np.ndarray) -> Image.Image:
    """Dark text on white, SCALE times larger, edges smoothed (Tesseract reads jagged
    nearest-neighbour glyphs worse)."""
    img = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    big = np.asarray(img.resize((img.width * SCALE, img.height * SCALE), Image.Resampling.BILINEAR))
    return Image.fromarray(np.where(big >= 96, 0, 255).astype(np.uint8))


class TextFinder:
    """One Tesseract engine, kept for every frame a process looks at (not thread-safe)."""

    def __init__(self, *, min_confidence: int = MIN_CONFIDENCE) -> None:
        """Start Tesseract (English, sparse text); OcrUnavailable if it cannot start."""
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per worker process
        try:
            import tesserocr
        except ImportError:
            raise OcrUnavailable("tesserocr is not installed") from None
        self._tesserocr: Any = tesserocr
        self.min_confidence = min_confidence
        try:
            self._api = tesserocr.PyTessBaseAPI(
                path=str(tessdata_dir()), lang="eng", psm=tesserocr.PSM.SPARSE_TEXT
            )
        except RuntimeError as exc:
            raise OcrUnavailable(f"Tesseract does not start ({exc})") from None

    def close(self) -> None:
        """Free the engine."""
        self._api.End()

    def __enter__(self) -> TextFinder:
        """Use as a context manager."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Free the engine."""
        self.close()

    def find(self, frame: np.ndarray, photometric: str = "MONOCHROME2") -> list[Box]:
        """Boxes of the words found in the frame (frame pixels), overlapping ones merged."""
        found: list[Box] = []
        for page in variants(to_grey(frame, photometric)):
            found.extend(self._words(page))
        return merge(found)

    def _words(self, page: Image.Image) -> Iterator[Box]:
        tess = self._tesserocr
        self._api.SetImage(page)
        self._api.Recognize()
        words = self._api.GetIterator()
        if words is None:
            return
        for word in tess.iterate_level(words, tess.RIL.WORD):
            try:
                text = word.GetUTF8Text(tess.RIL.WORD) or ""
            except RuntimeError:  # a box with no text
                continue
            confidence = word.Confidence(tess.RIL.WORD)
            if confidence < self.min_confidence or sum(c.isalnum() for c in text) < 2:
                continue
            box = word.BoundingBox(tess.RIL.WORD)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            yield Box(x0 // SCALE, y0 // SCALE, -(-x1 // SCALE), -(-y1 // SCALE))


def merge(boxes: Sequence[Box]) -> list[Box]:
    """Unite overlapping boxes until none overlap; sorted top to bottom, left to right."""
    merged: list[Box] = []  # pairwise apart at every step
    for box in boxes:
        while (hit := next((m for m in merged if m.overlaps(box)), None)) is not None:
            merged.remove(hit)
            box = box.union(hit)
        merged.append(box)
    return sorted(merged, key=lambda b: (b.top, b.left))
