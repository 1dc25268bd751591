"""Burned-in text in a frame, found with Tesseract (tesserocr: in-process, no subprocess).

Tesseract reads dark text on a light page; burned-in text is overlay on an image. Each
frame is therefore turned into masks of where text may be, one per way of looking, and
the word boxes found in any of them are united:

- thresholds near the frame's brightest values (overlay text is drawn at or near full
  scale), with speckle grains dropped and strokes broken by lossy compression joined;
- the exact values an overlay is drawn in (a value far more frequent than its neighbours
  in some tile of the frame): grey text as bright as the image, or dimmer;
- colour apart from grey (yellow or green text on a grey ultrasound);
- small bright and small dark detail (top-hats): dim text on gradients, dark text on
  light screen captures.

Each part of a mask with anything in it is read on its own page, upscaled 3x (Tesseract
misses letters under about 20 pixels high). Boxes of a word's shape count whatever
Tesseract's confidence in what it read, since only where matters; rows above and below
a word that hold only specks are cut off.

Finding text only has to say where, not what: boxes, never the words, leave this module.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from deid_node.errors import DeidError

SCALE: Final = 3  # upscaling before OCR: Tesseract misses letters under ~20 pixels
MIN_CONFIDENCE: Final = 50  # Tesseract's word confidence, 0-100, for boxes not word-shaped
NOISY, PLAIN, COLOUR = "noisy", "plain", "colour"  # how far a mask's words are trusted
MIN_CHROMA: Final = 64  # max minus min sample of a pixel: coloured, not grey
SPIKE_FACTOR: Final = 3.0  # times the neighbouring values' counts: an overlay's value
SPIKE_MIN_PIXELS: Final = 20  # pixels of one value in a tile at least: a short word's
SPIKE_TILE: Final = 64  # tile side, pixels
READ_CACHE: Final = 4096  # parts of masks whose reading is kept (a few MB at most)
BLANKED_EDGE: Final = 2  # pixels around a blanked box not looked at again
MIN_SET_PIXELS: Final = 20  # fewer in a mask than two small letters have: nothing to read
MIN_TEXT_HEIGHT: Final = 6  # frame pixels: smaller specks read as letters, and are not legible text
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

    @property
    def area(self) -> int:
        """Pixels inside the box."""
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

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


def masks(grey: np.ndarray, colours: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, str]]:
    """Where text may be in an 8-bit frame, one boolean mask per way of looking, and how
    far what is read in it is trusted: NOISY (short words there are mostly specks), PLAIN,
    COLOUR (overlay colour alone: any letter read there counts). `colours`: for colour
    frames, :func:`drawn_in_colour`.

    The filtering runs at the frame's own size with separable numpy filters (Pillow's rank
    filters on an upscaled frame took a second a frame).
    """
    pixels = grey.astype(np.int16)
    top = int(pixels.max())
    if top > 0:
        # Speckle as bright as the text survives a threshold as scattered grains; a
        # stroke pixel has at least two set neighbours, a grain seldom does. Lossy
        # compression breaks strokes apart: a lower threshold and a thickened copy
        # join them again.
        bright = without_lone_pixels(pixels >= top * 0.85, 2)
        yield bright, PLAIN
        yield _grey_filter(bright.astype(np.int16), 2, np.maximum) > 0, PLAIN
        # Lower, a threshold takes in whole bright areas: only their thin parts count.
        yield without_lone_pixels(_thin(pixels >= top * 0.7), 2), NOISY
        # Overlay text is drawn in one exact value; the image around it varies. Values far
        # more frequent than their neighbours (but the brightest, which clipping makes
        # frequent) are text drawn as bright as the image or dimmer: grey on speckle.
        # Only stroke cores hold the exact value: the anti-aliased edges beside them, as
        # bright as most of it, are taken in too. One page for all such values.
        drawn = np.zeros(pixels.shape, dtype=bool)
        for value in _spikes(grey, below=top):
            core = without_lone_pixels(_thin(pixels == value), 1)  # strokes, not areas
            near = _grey_filter(core.astype(np.int16), 3, np.maximum) > 0
            drawn |= near & (pixels >= 0.6 * value) & (pixels <= value + 8)
        if drawn.any():
            yield drawn, PLAIN
    if colours is not None:
        yield colours, COLOUR
    size = TOP_HAT_SIZE
    opened = _grey_filter(_grey_filter(pixels, size, np.minimum), size, np.maximum)
    closed = _grey_filter(_grey_filter(pixels, size, np.maximum), size, np.minimum)
    # Small bright detail (white top-hat), then small dark detail (black top-hat: dark
    # text on a light screen capture).
    for detail in (pixels - opened, closed - pixels):
        spread = float(detail.std())
        if spread > 0:
            yield without_lone_pixels(detail > detail.mean() + 4 * spread), PLAIN


def drawn_in_colour(frame: np.ndarray, most: int = 4) -> np.ndarray | None:
    """Strokes in the exact colours an overlay is drawn in (yellow or green text on a grey
    ultrasound), or None: the most frequent saturated colours, their thin parts only (a
    colour bar or a filled Doppler area is not text), with the anti-aliased edges beside.
    """
    rgb = frame.astype(np.int32)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    coloured = chroma >= MIN_CHROMA
    if np.count_nonzero(coloured) < MIN_SET_PIXELS:
        return None
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, counts = np.unique(packed[coloured], return_counts=True)
    out = np.zeros(chroma.shape, dtype=bool)
    for value in values[np.argsort(counts)[::-1][:most]]:
        core = _thin(packed == value)
        if np.count_nonzero(core) < MIN_SET_PIXELS:
            continue
        near = _grey_filter(core.astype(np.int16), 3, np.maximum) > 0
        out |= near & (chroma >= MIN_CHROMA // 2)
    return out if out.any() else None


def _spikes(grey: np.ndarray, below: float, most: int = 6) -> list[int]:
    """Up to `most` grey values from 96 up to `below` much more frequent than the values
    beside them (an overlay's drawing value), the most outstanding first.

    Counted in tiles: a line of text is local, and over a whole large frame its value's
    count drowns in the image's own.
    """
    strength: dict[int, float] = {}
    low, high = 96, min(256, int(below))
    if high <= low:
        return []
    rows, columns = grey.shape
    for top in range(0, rows, SPIKE_TILE):
        for left in range(0, columns, SPIKE_TILE):
            tile = grey[top : top + SPIKE_TILE, left : left + SPIKE_TILE]
            hist = np.bincount(tile.ravel(), minlength=260).astype(np.float64)  # +4 beyond 255
            candidates = np.flatnonzero(hist[low:high] >= SPIKE_MIN_PIXELS) + low
            if candidates.size == 0:
                continue
            # The median of the four counts on either side of each candidate value.
            beside = np.stack([hist[candidates + d] for d in (-4, -3, -2, -1, 1, 2, 3, 4)])
            usual = np.median(beside, axis=0)
            for value, count, near in zip(candidates, hist[candidates], usual, strict=True):
                if count >= SPIKE_FACTOR * near:
                    ratio = count / (near + 1.0)
                    strength[int(value)] = max(strength.get(int(value), 0.0), float(ratio))
    ranked = sorted(strength.items(), key=lambda kv: kv[1], reverse=True)
    return [value for value, _ in ranked[:most]]


def _runs(present: Any, gap: int) -> list[tuple[int, int]]:
    """[start, stop) runs of True, runs apart by `gap` or fewer False joined."""
    at = np.flatnonzero(np.asarray(present))
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) > gap + 1)
    starts = np.concatenate(([at[0]], at[breaks + 1]))
    stops = np.concatenate((at[breaks], [at[-1]])) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def regions(mask: np.ndarray, margin: int = 8) -> list[Box]:
    """The parts of a mask to read: bands of rows with set pixels, split where a band
    has a gap wider than a few letters; specks too small to be a letter left out.

    Each region keeps a margin of empty page around it, which Tesseract needs.
    """
    if np.count_nonzero(mask) < MIN_SET_PIXELS:
        return []
    rows, columns = mask.shape
    out = []
    for top, bottom in _runs(mask.any(axis=1), gap=2):
        height = bottom - top
        if height < MIN_TEXT_HEIGHT - 1:
            continue
        band = mask[top:bottom]
        for left, right in _runs(band.any(axis=0), gap=max(12, 2 * height)):
            if np.count_nonzero(band[:, left:right]) < MIN_SET_PIXELS:
                continue
            out.append(
                Box(
                    max(0, left - margin),
                    max(0, top - margin),
                    min(columns, right + margin),
                    min(rows, bottom + margin),
                )
            )
    return out


def _thin(mask: np.ndarray, size: int = 7) -> np.ndarray:
    """The parts of the mask narrower than `size` pixels: strokes, not filled areas."""
    m = mask.astype(np.int16)
    opened = _grey_filter(_grey_filter(m, size, np.minimum), size, np.maximum)
    return np.asarray(mask & (opened == 0))


def _grey_filter(a: np.ndarray, size: int, op: Any) -> np.ndarray:
    """A size x size minimum or maximum filter (`op` np.minimum or np.maximum)."""
    r = size // 2
    padded = np.pad(a, r, mode="edge")
    rows = op.reduce([padded[i : i + a.shape[0]] for i in range(size)])
    return np.asarray(op.reduce([rows[:, i : i + a.shape[1]] for i in range(size)]))


def without_lone_pixels(mask: np.ndarray, least: int = 1) -> np.ndarray:
    """The mask without set pixels that have fewer than `least` set neighbours (speckle,
    not strokes)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    h, w = mask.shape
    neighbours = sum(
        padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    )
    return np.asarray(mask & (neighbours >= least))


def page(mask: np.ndarray) -> np.ndarray:
    """Dark text on white as 8-bit grey, SCALE times larger, edges smoothed (Tesseract
    reads jagged nearest-neighbour glyphs worse)."""
    img = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    big = np.asarray(img.resize((img.width * SCALE, img.height * SCALE), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(np.where(big >= 96, 0, 255).astype(np.uint8))


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
        self._seen: dict[tuple[str, tuple[int, ...], bytes], list[Box]] = {}
        try:
            self._api = tesserocr.PyTessBaseAPI(
                path=str(tessdata_dir()), lang="eng", psm=tesserocr.PSM.SPARSE_TEXT
            )
            # Tesseract adapts to the pages it has read: what it finds in a frame would
            # depend on the frames before it. Every frame is read by the same engine.
            self._api.SetVariable("classify_enable_learning", "0")
        except RuntimeError as exc:
            raise OcrUnavailable(f"Tesseract does not start ({exc})") from None

    def close(self) -> None:
        """Free the engine."""
        self._api.End()

    def _read(self, crop: np.ndarray, kind: str) -> list[Box]:
        """The word boxes in one part of a mask (crop pixels), read once per content.

        The overlay of a cine is the same in every frame while the image beside it moves:
        a part seen before, bit for bit, is not read again (Tesseract gives the same
        boxes for the same page; learning is off).
        """
        key = (
            kind,
            crop.shape,
            hashlib.blake2b(np.packbits(crop).tobytes(), digest_size=16).digest(),
        )
        boxes = self._seen.get(key)
        if boxes is None:
            boxes = list(self._words(page(crop), kind))
            if len(self._seen) >= READ_CACHE:
                self._seen.pop(next(iter(self._seen)))  # the oldest
            self._seen[key] = boxes
        return boxes

    def __enter__(self) -> TextFinder:
        """Use as a context manager."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Free the engine."""
        self.close()

    def find(
        self,
        frame: np.ndarray,
        photometric: str = "MONOCHROME2",
        blanked: Sequence[Box] = (),
        within: Sequence[Box] | None = None,
    ) -> list[Box]:
        """Boxes of the words found in the frame (frame pixels), overlapping ones merged.

        `blanked`: boxes already blanked in the frame. Their edges against the image read
        as strokes, so a band around each is not looked at; text that goes on beyond it
        still is. `within`: only inside these boxes.
        """
        found: list[Box] = []
        rows, columns = frame.shape[0], frame.shape[1]
        edges = [b.padded(BLANKED_EDGE, rows, columns) for b in blanked]
        inside = None
        if within is not None:
            inside = np.zeros((rows, columns), dtype=bool)
            for b in within:
                inside[b.top : b.bottom, b.left : b.right] = True
        colours = drawn_in_colour(frame) if frame.ndim == 3 and frame.shape[2] == 3 else None
        for mask, kind in masks(to_grey(frame, photometric), colours):
            for b in edges:
                mask[b.top : b.bottom, b.left : b.right] = False
            if inside is not None:
                mask &= inside
            # Only the parts with anything in them are read, each on its own: Tesseract's
            # time goes with area, and on a large page it passes over some lines.
            for part in regions(mask):
                crop = mask[part.top : part.bottom, part.left : part.right]
                for box in self._read(crop, kind):
                    box = Box(
                        box.left + part.left,
                        box.top + part.top,
                        box.right + part.left,
                        box.bottom + part.top,
                    )
                    box = _tightened(box, mask)
                    if box.bottom - box.top >= MIN_TEXT_HEIGHT - 1:  # else specks, boxed
                        found.append(box)
        return merge(found)

    def _words(self, image: np.ndarray, kind: str) -> Iterator[Box]:
        tess = self._tesserocr
        height, width = image.shape
        data = image.tobytes()  # must outlive Recognize: Tesseract does not copy it
        self._api.SetImageBytes(data, width, height, 1, width)
        self._api.Recognize()
        words = self._api.GetIterator()
        if words is None:
            return
        for word in tess.iterate_level(words, tess.RIL.WORD):
            try:
                text = word.GetUTF8Text(tess.RIL.WORD) or ""
            except RuntimeError:  # a box with no text
                continue
            alnum = sum(c.isalnum() for c in text)
            if alnum < (1 if kind == COLOUR else 2):
                continue
            box = word.BoundingBox(tess.RIL.WORD)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            # Only where matters, not what: IDs and dates read badly (low confidence) but
            # are boxed well, so a box of a word's shape counts whatever its confidence.
            # Specks read as letters are smaller than any legible glyph.
            tall, wide = (y1 - y0) / SCALE, (x1 - x0) / SCALE
            if tall < MIN_TEXT_HEIGHT - (1 if kind == COLOUR else 0):
                continue
            word_like = kind == COLOUR or (wide >= 1.5 * tall and alnum >= 3)
            if not word_like and (
                word.Confidence(tess.RIL.WORD) < self.min_confidence
                or (kind == NOISY and alnum < 3)
            ):
                continue
            yield Box(x0 // SCALE, y0 // SCALE, -(-x1 // SCALE), -(-y1 // SCALE))


def _near(a: Box, b: Box) -> bool:
    """Overlapping, or on one line less than a letter's height apart: one run of text, so
    that no sliver of a glyph is left between two blanked words."""
    gap = max(a.bottom - a.top, b.bottom - b.top)
    return Box(a.left - gap, a.top, a.right + gap, a.bottom).overlaps(b)


def _tightened(box: Box, mask: np.ndarray) -> Box:
    """The box without the rows above and below the text that hold only specks.

    On speckle a word's box takes in the grains around it. Rows holding a fifth of the
    busiest row's set pixels are text; what is cut off wrongly is found by the next look.
    """
    counts = mask[box.top : box.bottom, box.left : box.right].sum(axis=1)
    if counts.size == 0:
        return box
    rows = np.flatnonzero(counts >= max(2, 0.2 * float(counts.max())))
    if rows.size == 0:
        return box
    return Box(box.left, box.top + int(rows[0]), box.right, box.top + int(rows[-1]) + 1)


def merge(boxes: Sequence[Box]) -> list[Box]:
    """Unite boxes that overlap or continue a line of text; sorted top to bottom, left to
    right."""
    merged: list[Box] = []  # pairwise apart at every step
    for box in boxes:
        while (hit := next((m for m in merged if _near(m, box)), None)) is not None:
            merged.remove(hit)
            box = box.union(hit)
        merged.append(box)
    return sorted(merged, key=lambda b: (b.top, b.left))
