"""Burned-in text in a frame, found as text: a cheap look for strokes, then DBNet.

Two passes. The first is numpy on the whole frame and costs a few milliseconds (3 ms a
512x512 slice): thin ridges, bright or dark (a pixel brighter, or darker, than both its
neighbours a pixel or two away across it, by more than image noise), at full, half and
quarter size. A block where several rows (or columns) each cross several strokes holds
a line of text in any orientation; a vessel, a bone's edge or a body's outline is one
stroke across, a flat background none. Only such blocks, with some context, go on. The
pass is tuned to miss nothing: speckle and texture pass it too, and the second pass
says they are not text.

The second pass is the text detector of PP-OCR (DBNet, the ``ch_PP-OCRv4_det`` model
shipped inside the ``rapidocr-onnxruntime`` wheel, Apache-2.0), run by onnxruntime on
one thread on those regions only. It finds where text is, whatever the font, the
polarity or the colour, and leaves texture alone: a trained detector, where Tesseract
reads any mask it is given. Each region is looked at:

- as it is (colour as it is, grey as grey);
- turned a quarter: DBNet finds small text at 90 degrees less well, and turned a
  quarter it is at 180;
- on speckle, in the pixels within a few values of a value the region holds far more
  often than its neighbours' (an overlay's drawing value), lone pixels dropped: grey
  text as bright as the speckle it is written on;
- where candidate blocks in a line's shape are left unexplained, at twice the size:
  small dim labels DBNet misses at their own size.

A box in saturated, widely spread hues is a Doppler colour map, not text; it is looked
at again with the colour flattened to grey (white text written over the map).

Only where, never what: boxes leave this module, no words are read here (what a box
says is asked of :mod:`deid_node.pixels.reader`, and only to compare it with the header).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from deid_node.errors import DeidError
from deid_node.pixels.ocr import Box, merge, to_grey, without_lone_pixels
from deid_node.pixels.strokes import (
    BLOCK,
    MARGIN,
    candidate_blocks,
    components,
    faint_blocks,
    may_be_turned,
    regions,
    ridge_strength,
    ridges,
    speckled,
)

MODEL_PACKAGE: Final = "rapidocr_onnxruntime"
MODEL_FILE: Final = "models/ch_PP-OCRv4_det_infer.onnx"
# ImageNet statistics, as PP-OCR's detector was trained with (channel order immaterial
# for grey; colour frames are fed as RGB, text colour does not matter to it).
MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
THRESH: Final = 0.3  # DBNet's probability map: text
BOX_THRESH: Final = 0.5  # mean probability over a component for it to count
UNCLIP: Final = 1.6  # DBNet grows its shrunk text kernels back by area*ratio/perimeter
MIN_SIDE: Final = 3  # a component's shorter side, map pixels: smaller is a speck
LINE_BLOCKS: Final = 2  # a line of small text is at most this many blocks high (or wide)
CLOSER: Final = 0.4  # share of the frame at most looked at again at twice the size
NOISY: Final = 0.25  # share of ridge pixels in a region above which it is speckle-like
SPIKE_FACTOR: Final = 3.0  # times its neighbouring values' counts: an overlay's value
SPIKE_MIN: Final = 20  # pixels of that value at least (a short word's cores)
SPIKE_TILE: Final = 64  # tile side in which values are counted
MAX_LINE: Final = 48  # a text line's kernel is lower than this (map pixels): else texture
MIN_CHROMA: Final = 64  # max minus min sample of a pixel: coloured, not grey
FLOW_SHARE: Final = 0.25  # share of a box's pixels saturated for it to be colour texture
FLOW_HUES: Final = 10.0  # degrees of hue spread above which it is a colour map, not text
NEAR_VALUE: Final = 16  # grey levels around an overlay's value taken as drawn in it


FAINT_BLOCKS: Final = 32  # faint candidate blocks at most: a few dim lines, not texture
LIGHT: Final = 200  # luminance (8-bit) of colours text is drawn in, kept over a colour map


class DetectorUnavailable(DeidError):
    """The text detection model or onnxruntime is not installed: no text can be looked for."""


def model_path() -> Path:
    """The DBNet model file inside the installed rapidocr-onnxruntime package."""
    return package_model(MODEL_FILE)


def package_model(name: str) -> Path:
    """A model file inside the installed rapidocr-onnxruntime package.

    Found without importing the package: its ``__init__`` imports OpenCV, which is not
    installed (only the model files are used).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / name
        if path.is_file():
            return path
    raise DetectorUnavailable(
        f"{name} not found: install rapidocr-onnxruntime (./scripts/setup-venv does)"
    )


def _offset(box: Box, by: Box) -> Box:
    """A box given inside `by`, in the coordinates `by` is given in."""
    return Box(box.left + by.left, box.top + by.top, box.right + by.left, box.bottom + by.top)


def _spike_values(grey: np.ndarray, most: int = 2) -> list[int]:
    """Up to `most` grey values (64..254) that some tile of the image holds far more often
    than the values a few apart: an overlay's drawing value. Counted per SPIKE_TILE tile,
    as a line of text is local and over a whole frame its value drowns in the image's.
    The brightest value is left out (clipping makes it frequent, and bright text shows
    in the plain view)."""
    rows, columns = grey.shape
    ty, tx = -(-rows // SPIKE_TILE), -(-columns // SPIKE_TILE)
    tile = (np.arange(rows) // SPIKE_TILE)[:, None] * tx + (np.arange(columns) // SPIKE_TILE)
    hist = np.bincount((tile * 264 + grey).ravel(), minlength=ty * tx * 264)
    hist = hist.reshape(ty * tx, 264).astype(np.float64)
    values = np.arange(64, 255)
    beside = np.stack([hist[:, values + d] for d in (-4, -3, -2, 2, 3, 4)])
    usual = np.median(beside, axis=0)
    count = hist[:, values]
    ratio = np.where(
        (count >= SPIKE_MIN) & (count >= SPIKE_FACTOR * (usual + 1)), count / (usual + 1), 0
    ).max(axis=0)
    ranked = [int(values[i]) for i in np.argsort(ratio)[::-1] if ratio[i] > 0]
    return ranked[:most]


def _drawn_in(grey: np.ndarray, value: int) -> np.ndarray:
    """White where the image is within NEAR_VALUE of `value` with two such neighbours
    (strokes drawn in it, their anti-aliased edges too; lone speckle grains not)."""
    near = np.abs(grey.astype(np.int16) - value) <= NEAR_VALUE
    return np.where(without_lone_pixels(near, least=2), 255, 0).astype(np.uint8)


def colour_flow(rgb: np.ndarray) -> bool:
    """Whether a box of an 8-bit RGB image is colour texture (a Doppler colour map), not
    text: much of it saturated, in hues spread widely. Text is drawn in one colour, so
    its saturated pixels (anti-aliased edges and lossy compression too) share one hue;
    a colour map spans red to yellow, or red and blue."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        return False
    c = rgb.reshape(-1, 3).astype(np.float32)
    chroma = c.max(axis=1) - c.min(axis=1)
    saturated = chroma >= MIN_CHROMA
    if saturated.mean() < FLOW_SHARE:
        return False
    r, g, b = c[saturated].T
    # Hue as an angle (the hexagonal approximation's Cartesian form), spread as circular
    # standard deviation: red at 0 and 360 degrees is one hue.
    angle = np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)
    length = float(np.hypot(np.cos(angle).mean(), np.sin(angle).mean()))
    spread = np.degrees(np.sqrt(-2.0 * np.log(max(length, 1e-9))))
    return bool(spread >= FLOW_HUES)


class TextDetector:
    """PP-OCR's DBNet behind a cheap stroke pre-filter; one onnxruntime session, kept for
    every frame a process looks at (one thread: workers are one per core)."""

    def __init__(self, *, turn: bool = True, prefilter: bool = True) -> None:
        """Load the model; DetectorUnavailable if it or onnxruntime is missing.

        `turn`: also look at each region turned a quarter (small text at 90/270 degrees).
        `prefilter`: False gives DBNet the whole frame (for measuring).
        """
        try:
            import onnxruntime as ort
        except ImportError:
            raise DetectorUnavailable("onnxruntime is not installed") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: no model details in the node's log
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path()), options, providers=["CPUExecutionProvider"]
            )
        except (RuntimeError, ValueError) as exc:
            raise DetectorUnavailable(f"the text detection model does not load ({exc})") from None
        self._input = self._session.get_inputs()[0].name
        self.turn = turn
        self.prefilter = prefilter
        self.passes = 0  # DBNet runs so far (for the audit's counts)
        # Line-shaped groups of candidate blocks the last find() left unexplained even at
        # twice the size (frame pixels): where a small or faint line may still be.
        self.unexplained: list[Box] = []

    def find(
        self,
        frame: np.ndarray,
        photometric: str = "MONOCHROME2",
        blanked: Sequence[Box] = (),
        within: Sequence[Box] | None = None,
    ) -> list[Box]:
        """Boxes of the text in the frame (frame pixels), overlapping ones merged.

        `blanked`: boxes already blanked in the frame; their edges against the image are
        strokes to the first pass, so they are blanked in its view too (with a pixel
        more). `within`: look only inside these boxes.
        """
        rows, columns = frame.shape[0], frame.shape[1]
        self.unexplained = []
        grey = to_grey(frame, photometric)
        if blanked:
            grey = grey.copy()
            fill = int(np.median(grey))
            for b in blanked:
                b = b.padded(1, rows, columns)
                grey[b.top : b.bottom, b.left : b.right] = fill
        areas = [Box(0, 0, columns, rows)] if within is None else list(within)
        found: list[Box] = []
        for area in areas:
            a = Box(
                max(0, area.left),
                max(0, area.top),
                min(columns, area.right),
                min(rows, area.bottom),
            )
            if a.right - a.left < 4 or a.bottom - a.top < 4:
                continue
            crop = grey[a.top : a.bottom, a.left : a.right]
            strength = ridge_strength(crop)
            cells = candidate_blocks(crop, strength)
            if self.prefilter:
                parts = regions(cells, crop.shape[0], crop.shape[1])
            else:
                parts = [Box(0, 0, crop.shape[1], crop.shape[0])]
            here: list[Box] = []
            for part in parts:
                here += self._look(frame, grey, photometric, _offset(part, a))
            here += self._look_closer(frame, grey, photometric, a, cells, here)
            if within is None:  # parts of a cine's later frames: its moving image
                here += self._look_faint(grey, a, faint_blocks(strength, cells))
            found += here
        return merge(found)

    def _look_closer(
        self,
        frame: np.ndarray,
        grey: np.ndarray,
        photometric: str,
        area: Box,
        cells: np.ndarray,
        found: Sequence[Box],
    ) -> list[Box]:
        """Small dim text that DBNet misses at its own size (6-pixel labels on a toolbar)
        it finds at twice the size: the candidate blocks no box found explains are
        looked at again enlarged, but for speckle (every block of it is a candidate and
        none explained; enlarged, it would cost four times the frame) and for groups of
        blocks larger than a line of text (texture: real ultrasound, photographs)."""
        left = cells.copy()
        for b in found:
            top, bottom = (b.top - area.top) // BLOCK, -(-(b.bottom - area.top) // BLOCK)
            first, last = (b.left - area.left) // BLOCK, -(-(b.right - area.left) // BLOCK)
            left[max(0, top) : max(0, bottom), max(0, first) : max(0, last)] = False
        if not left.any():
            return []
        crop = grey[area.top : area.bottom, area.left : area.right]
        # Blocks at the edge of speckle (a fan's border) are partly speckle: left out too.
        grains = speckled(crop, *left.shape)
        near = grains.copy()
        near[1:] |= grains[:-1]
        near[:-1] |= grains[1:]
        near[:, 1:] |= near[:, :-1].copy()
        near[:, :-1] |= near[:, 1:].copy()
        left &= ~near
        # Only groups of blocks shaped like a line of small text (a few blocks across at
        # most): a larger group is an image's texture, four times the cost for nothing.
        # Each on its own, with a little context: united, lines far apart span the frame.
        parts = []
        for top, first, bottom, last, _ in components(left):
            if min(bottom - top, last - first) <= LINE_BLOCKS:
                part = Box(first * BLOCK, top * BLOCK, last * BLOCK, bottom * BLOCK)
                parts.append(part.padded(BLOCK // 2, crop.shape[0], crop.shape[1]))
        if sum((p.right - p.left) * (p.bottom - p.top) for p in parts) > CLOSER * crop.size:
            return []  # an image's texture, not a few labels: four times the cost for nothing
        out: list[Box] = []
        for part in parts:
            at = _offset(part, area)
            plain = self._plain(frame, grey, photometric, at)
            boxes = self._enlarged(plain, at)
            out += self._without_colour_flow(frame, boxes) if plain.ndim == 3 else boxes
            if not boxes:
                self.unexplained.append(at)
        return out

    def _look_faint(self, grey: np.ndarray, area: Box, faint: np.ndarray) -> list[Box]:
        """Faint lines (dim grey on a dark flat area, a few levels of contrast): each
        line-shaped group of faint blocks, its contrast stretched to the full range, at
        twice the size. What DBNet does not box there stays unexplained (the header's
        identifiers are looked for in it)."""
        out: list[Box] = []
        parts = []
        rows, columns = area.bottom - area.top, area.right - area.left
        if faint.sum() > FAINT_BLOCKS:
            return []  # an image's faint texture, not a few dim labels
        # Letters of a faint line pass the first look in pieces: pieces a block apart
        # are one line.
        joined = faint.copy()
        joined[:, 1:-1] |= faint[:, :-2] & faint[:, 2:]
        for top, first, bottom, last, _ in components(joined):
            if min(bottom - top, last - first) <= LINE_BLOCKS:
                line = _offset(Box(first * BLOCK, top * BLOCK, last * BLOCK, bottom * BLOCK), area)
                parts.append((line, line.padded(BLOCK // 2, area.bottom, area.right)))
        if sum(p.area for _, p in parts) > CLOSER * rows * columns:
            return []  # faint texture over much of the frame, not a few labels
        for line, at in parts:
            stretched = stretch(grey[at.top : at.bottom, at.left : at.right])
            if stretched is None:
                continue
            boxes = self._enlarged(stretched, at)
            if not boxes:
                self.unexplained.append(at)
                continue
            # A faint line is boxed in pieces, and a piece left over may be too faint to
            # be found again once the rest is blanked: the line is blanked along its
            # whole length.
            found = merge(boxes)
            top, bottom = min(b.top for b in found), max(b.bottom for b in found)
            left, right = min(b.left for b in found), max(b.right for b in found)
            # Across the line no further than its blocks (and a little): a stretched
            # speckled edge beside a line may be boxed with it.
            if line.right - line.left >= line.bottom - line.top:
                top, bottom = max(top, line.top - 4), min(bottom, line.bottom + 4)
                out.append(Box(min(left, line.left), top, max(right, line.right), bottom))
            else:
                left, right = max(left, line.left - 4), min(right, line.right + 4)
                out.append(Box(left, min(top, line.top), right, max(bottom, line.bottom)))
        return out

    def _look(self, frame: np.ndarray, grey: np.ndarray, photometric: str, at: Box) -> list[Box]:
        """DBNet's boxes in one region, in every view of it (frame pixels)."""
        sl = (slice(at.top, at.bottom), slice(at.left, at.right))
        plain = self._plain(frame, grey, photometric, at)
        out = list(self._detect(plain, at))
        crop = grey[sl]
        if self.turn and may_be_turned(crop):
            out += self._detect(plain, at, turned=True)
        if max(m.mean() for m in ridges(crop)) > NOISY:
            for value in _spike_values(crop):
                out += self._detect(_drawn_in(crop, value), at)
        if plain.ndim == 3:
            out = self._without_colour_flow(frame, out)
        return out

    @staticmethod
    def _plain(frame: np.ndarray, grey: np.ndarray, photometric: str, at: Box) -> np.ndarray:
        """A region as DBNet sees it: colour as it is (8-bit), else the grey view."""
        sl = (slice(at.top, at.bottom), slice(at.left, at.right))
        if frame.ndim == 3 and frame.shape[2] == 3 and photometric.strip() != "PALETTE COLOR":
            plain = np.asarray(frame[sl])
            if plain.dtype != np.uint8:
                plain = np.stack([to_grey(plain[..., c]) for c in range(3)], axis=-1)
            return np.ascontiguousarray(plain)
        return np.ascontiguousarray(grey[sl])

    def _without_colour_flow(self, frame: np.ndarray, boxes: list[Box]) -> list[Box]:
        """The boxes, those on a colour map replaced by what is found there in grey alone.

        White or grey text written over a Doppler colour map is in a box the colour makes
        look like texture: the box is looked at again with every saturated pixel a flat
        grey (black would draw edges DBNet takes for text). Not at twice the size: there
        the flattened map of pydicom's real Doppler is taken for text.
        """
        rows, columns = frame.shape[0], frame.shape[1]
        kept: list[Box] = []
        flows: list[Box] = []
        for b in boxes:
            (flows if colour_flow(frame[b.top : b.bottom, b.left : b.right]) else kept).append(b)
        for flow in merge(flows):
            at = flow.padded(MARGIN, rows, columns)
            crop = np.asarray(frame[at.top : at.bottom, at.left : at.right])
            if crop.dtype != np.uint8:
                crop = np.stack([to_grey(crop[..., c]) for c in range(3)], axis=-1)
            wide = crop.astype(np.int16)
            saturated = wide.max(axis=2) - wide.min(axis=2) >= MIN_CHROMA
            bright = crop.max(axis=2)
            # Flat where the colour was, at the level of the grey around it: no edges.
            # Then again with light colours kept: yellow or light green text over a
            # colour map is as light as white, where a map's reds and blues are darker.
            light = wide @ np.array([299, 587, 114], dtype=np.int32) >= LIGHT * 1000
            for flat in (saturated, saturated & ~light):
                level = int(np.median(bright[~flat])) if (~flat).any() else 0
                grey = np.where(flat, level, bright).astype(np.uint8)
                kept += self._detect(grey, at)
                if self.turn:
                    kept += self._detect(grey, at, turned=True)
                if not (saturated & light).any():
                    break  # no light colour: the second view is the first
        return kept

    def _enlarged(self, image: np.ndarray, at: Box) -> list[Box]:
        """DBNet on a region twice its size (bicubic); boxes in frame pixels."""
        view = Image.fromarray(image)
        big = np.asarray(view.resize((2 * view.width, 2 * view.height), Image.Resampling.BICUBIC))
        return [
            _offset(Box(b.left // 2, b.top // 2, -(-b.right // 2), -(-b.bottom // 2)), at)
            for b in self.boxes(big)
        ]

    def _detect(self, image: np.ndarray, at: Box, turned: bool = False) -> Iterator[Box]:
        """Run DBNet on one view of a region; boxes in frame pixels."""
        view = np.rot90(image) if turned else image
        for box in self.boxes(view):
            if turned:  # np.rot90 turns counter-clockwise: view[r, c] is image[c, W-1-r]
                width = image.shape[1]
                box = Box(width - box.bottom, box.left, width - box.top, box.right)
            yield Box(
                box.left + at.left, box.top + at.top, box.right + at.left, box.bottom + at.top
            )

    def boxes(self, image: np.ndarray) -> list[Box]:
        """DBNet on an 8-bit grey or RGB image at its own scale (padded to a multiple of
        32, not resized: small text stays as large as it is); boxes in image pixels."""
        self.passes += 1
        h, w = image.shape[0], image.shape[1]
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        tall, wide = max(32, -(-h // 32) * 32), max(32, -(-w // 32) * 32)
        x = np.zeros((1, 3, tall, wide), dtype=np.float32)
        x[0, :, :h, :w] = rgb.transpose(2, 0, 1).astype(np.float32) / 255.0
        if h < tall:  # edge padding: a black band would draw an edge DBNet may box
            x[0, :, h:, :w] = x[0, :, h - 1 : h, :w]
        if w < wide:
            x[0, :, :, w:] = x[0, :, :, w - 1 : w]
        x = (x - MEAN) / STD
        prob = self._session.run(None, {self._input: x})[0][0, 0, :h, :w]
        return list(_text_boxes(prob))


def stretch(grey: np.ndarray) -> np.ndarray | None:
    """An 8-bit crop with its contrast stretched to the full range (1st to 99th
    percentile), or None when it is flat."""
    crop = grey.astype(np.float32)
    low, high = np.percentile(crop, (1, 99))
    if high - low < 2:
        return None
    return np.asarray(np.clip((crop - low) * (255.0 / (high - low)), 0, 255), dtype=np.uint8)


def _text_boxes(prob: np.ndarray) -> Iterator[Box]:
    """DBNet's post-processing: threshold the probability map, take its connected
    components, keep those whose mean probability is high, grow each as DBNet's unclip
    does (by area * UNCLIP / perimeter), as axis-aligned boxes."""
    h, w = prob.shape
    bitmap = prob > THRESH
    # PP-OCR dilates the bitmap by a 2x2 square: thin kernels of small text join up.
    bitmap[1:, :] |= bitmap[:-1, :]
    bitmap[:, 1:] |= bitmap[:, :-1]
    flat = prob.ravel()
    for top, left, bottom, right, pixels in components(bitmap):
        tall, wide = bottom - top, right - left
        # A line of text is long and low (or, turned, tall and narrow); a blob both ways
        # higher than burned-in text is ever drawn is texture read as text.
        if not MIN_SIDE <= min(tall, wide) <= MAX_LINE:
            continue
        if float(flat[pixels].mean()) < BOX_THRESH:
            continue
        grow = int(np.ceil(tall * wide * UNCLIP / (2.0 * (tall + wide))))
        yield Box(
            max(0, left - grow), max(0, top - grow), min(w, right + grow), min(h, bottom + grow)
        )
