"""Burned-in text in a frame, found as text: a cheap look for strokes, then DBNet.

Two passes. The first is numpy on the whole frame and costs a few milliseconds: thin
ridges, bright or dark, of a letter's stroke width (a pixel brighter, or darker, than
both its neighbours a pixel or two away across it, by more than image noise), counted in
small blocks. Text is dense in such ridges in any orientation; smooth anatomy, the edges
of a body and flat backgrounds are not. Blocks dense enough are candidates; the rest of
the frame is never looked at again. The pass is tuned to miss nothing: speckle, texture
and photographs pass it too, and the second pass says they are not text.

The second pass is the text detector of PP-OCR (DBNet, the ``ch_PP-OCRv4_det`` model
shipped inside the ``rapidocr-onnxruntime`` wheel, Apache-2.0) run by onnxruntime on the
candidate regions only, on one thread. It finds where text is, whatever the font, the
polarity or the colour, and leaves texture alone: a trained detector, where Tesseract
reads any mask it is given. Each region is looked at in up to three views:

- the image itself (colour as it is, grey as grey);
- turned a quarter: DBNet finds text at 0 and 180 degrees best, small text at 90 or 270
  degrees less well, and what is turned a quarter of them is at 0 or 180;
- for noisy regions (speckle), the pixels within a few values of a value the region holds
  far more often than its neighbours' (an overlay's drawing value), lone pixels dropped:
  grey text as bright as the speckle it is written on.

Only where, never what: boxes leave this module, no words are read.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from deid_node.errors import DeidError
from deid_node.pixels.ocr import Box, merge, to_grey

MODEL_PACKAGE: Final = "rapidocr_onnxruntime"
MODEL_FILE: Final = "models/ch_PP-OCRv4_det_infer.onnx"
# ImageNet statistics, as PP-OCR's detector was trained with (channel order immaterial
# for grey; colour frames are fed as RGB, text colour does not matter to it).
MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
BLOCK: Final = 16  # first pass: ridges are counted in blocks of this side (frame pixels)
RIDGE_CONTRAST: Final = 16  # 8-bit grey levels a stroke stands out of its surround
COARSE_CONTRAST: Final = 32  # the same for wide strokes, on the frame halved or quartered
CROSSINGS: Final = 4  # strokes a row of text crosses in two blocks at least (6 px letters: 6)
BUSY_LINES: Final = 3  # such rows in a block: a line of text (6 px high letters have 4+)
MARGIN: Final = 24  # frame pixels of context around the candidate blocks given to DBNet
WHOLE_FRAME: Final = 0.5  # candidate share of the frame above which all of it is looked at
THRESH: Final = 0.3  # DBNet's probability map: text
BOX_THRESH: Final = 0.5  # mean probability over a component for it to count
UNCLIP: Final = 1.6  # DBNet grows its shrunk text kernels back by area*ratio/perimeter
MIN_SIDE: Final = 3  # a component's shorter side, map pixels: smaller is a speck
LINE_BLOCKS: Final = 2  # a line of small text is at most this many blocks high (or wide)
CLOSER: Final = 0.4  # share of the frame at most looked at again at twice the size
SPECKLED: Final = 0.5  # share of a block's pixels on ridges above which it is speckle
NOISY: Final = 0.25  # share of ridge pixels in a region above which it is speckle-like
SPIKE_FACTOR: Final = 3.0  # times its neighbouring values' counts: an overlay's value
SPIKE_MIN: Final = 20  # pixels of that value at least (a short word's cores)
SPIKE_TILE: Final = 64  # tile side in which values are counted
MAX_LINE: Final = 48  # a text line's kernel is lower than this (map pixels): else texture
MIN_CHROMA: Final = 64  # max minus min sample of a pixel: coloured, not grey
FLOW_SHARE: Final = 0.25  # share of a box's pixels saturated for it to be colour texture
FLOW_HUES: Final = 10.0  # degrees of hue spread above which it is a colour map, not text
NEAR_VALUE: Final = 16  # grey levels around an overlay's value taken as drawn in it


class DetectorUnavailable(DeidError):
    """The text detection model or onnxruntime is not installed: no text can be looked for."""


def model_path() -> Path:
    """The DBNet model file inside the installed rapidocr-onnxruntime package.

    Found without importing the package: its ``__init__`` imports OpenCV, which is not
    installed (only the model file is used).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise DetectorUnavailable(
        f"{MODEL_FILE} not found: install rapidocr-onnxruntime (./scripts/setup-venv does)"
    )


def ridges(grey: np.ndarray, contrast: int = RIDGE_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """Pixels on a thin stroke, bright or dark: brighter (or darker) than both pixels one
    or two away on either side by `contrast` or more. Two masks: across columns (the
    strokes of upright text's letters), across rows (the same, text turned a quarter).

    One-pixel strokes and strokes up to three wide alike; a step (the edge of a body, a
    bar) is brighter than one side only and is not a ridge.
    """
    g = grey.astype(np.int16)
    across_columns = np.zeros(g.shape, dtype=bool)
    across_rows = np.zeros(g.shape, dtype=bool)
    rows, columns = g.shape
    for d in (1, 2):
        if columns > 4:
            core = g[:, 2:-2]
            before, after = g[:, 2 - d : -2 - d], g[:, 2 + d : columns - 2 + d]
            across_columns[:, 2:-2] |= core - np.maximum(before, after) >= contrast
            across_columns[:, 2:-2] |= np.minimum(before, after) - core >= contrast
        if rows > 4:
            core = g[2:-2]
            before, after = g[2 - d : -2 - d], g[2 + d : rows - 2 + d]
            across_rows[2:-2] |= core - np.maximum(before, after) >= contrast
            across_rows[2:-2] |= np.minimum(before, after) - core >= contrast
    return across_columns, across_rows


def _crossings(across: np.ndarray, h: int, w: int, axis: int) -> np.ndarray:
    """For each block of the h x w grid, how many of its lines (rows for axis 1, columns
    for axis 0) cross at least CROSSINGS strokes within two blocks from it: `across` is
    a ridge mask across that axis."""
    starts = across & ~np.roll(across, 1, axis=axis)  # the first pixel of each stroke
    if axis == 1:
        padded = np.zeros((h * BLOCK, (w + 1) * BLOCK), dtype=np.uint8)
        padded[: starts.shape[0], : starts.shape[1]] = starts
        per_line = padded.reshape(h * BLOCK, w + 1, BLOCK).sum(axis=2, dtype=np.uint8)
        pair = per_line[:, :-1] + per_line[:, 1:]  # a block and the one right of it
        return np.asarray((pair >= CROSSINGS).reshape(h, BLOCK, w).sum(axis=1))
    padded = np.zeros(((h + 1) * BLOCK, w * BLOCK), dtype=np.uint8)
    padded[: starts.shape[0], : starts.shape[1]] = starts
    per_line = padded.reshape(h + 1, BLOCK, w * BLOCK).sum(axis=1, dtype=np.uint8)
    pair = per_line[:-1] + per_line[1:]  # a block and the one below it
    return np.asarray((pair >= CROSSINGS).reshape(h, w, BLOCK).sum(axis=2))


def candidate_blocks(grey: np.ndarray) -> np.ndarray:
    """The first pass: a boolean grid, one cell per BLOCK x BLOCK block of the frame, set
    where a line of text may be: several rows (or columns) that each cross several thin
    strokes within two blocks. A letter is a stroke or two across; a vessel, a bone's
    edge or an outline is one, wherever it runs; texture and speckle are many (and pass).
    """
    rows, columns = grey.shape
    h, w = -(-rows // BLOCK), -(-columns // BLOCK)
    across_columns, across_rows = ridges(grey)
    out = _busy_blocks(across_columns, across_rows, h, w)
    # Large text has strokes wider than a ridge: halved and quartered, they are thin. Only
    # strokes that were not thin already count there: a vessel, a ridge at full size, is
    # not a letter's stroke at half size; and lines faint after shrinking are left out.
    fine = across_columns | across_rows
    for factor in (2, 4):
        small = _shrunk(grey, factor)
        if min(small.shape) < 2 * BLOCK:
            break
        wide_columns, wide_rows = ridges(small, COARSE_CONTRAST)
        thin = _shrunk(fine.view(np.uint8), factor, np.maximum).astype(bool)
        sh, sw = -(-small.shape[0] // BLOCK), -(-small.shape[1] // BLOCK)
        coarse = _busy_blocks(wide_columns & ~thin, wide_rows & ~thin, sh, sw)
        grid = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:h, :w]
        out[: grid.shape[0], : grid.shape[1]] |= grid
    return out


def _shrunk(grey: np.ndarray, factor: int, how: Any = None) -> np.ndarray:
    """The 8-bit image reduced `factor` (a power of two) times: means of 2x2 pixels, or
    `how` (np.maximum) of them."""
    out = grey
    while factor > 1:
        rows, columns = out.shape[0] // 2 * 2, out.shape[1] // 2 * 2
        if how is not None:
            quads = [out[i:rows:2, j:columns:2] for i in (0, 1) for j in (0, 1)]
            out = how.reduce(quads)
        else:
            wide = out[:rows, :columns].astype(np.uint16)
            total = wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]
            out = (total >> 2).astype(np.uint8)
        factor //= 2
    return np.asarray(out)


def _busy_blocks(across_columns: np.ndarray, across_rows: np.ndarray, h: int, w: int) -> np.ndarray:
    """Blocks of an h x w grid over ridge masks (see :func:`ridges`) that hold several
    rows (or columns) each crossing several thin strokes (see :func:`candidate_blocks`)."""
    upright = _crossings(across_columns, h, w, axis=1)
    turned = _crossings(across_rows, h, w, axis=0)
    busy = (upright >= BUSY_LINES) | (turned >= BUSY_LINES)
    # The line of strokes began in a block and went on into the next: both are looked at.
    out = busy.copy()
    out[:, 1:] |= busy[:, :-1] & (upright[:, :-1] >= BUSY_LINES)
    out[1:, :] |= busy[:-1, :] & (turned[:-1, :] >= BUSY_LINES)
    return np.asarray(out)


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The 8-connected components of a boolean image: (top, left, bottom, right, pixels
    as flat indices), found by joining runs of set pixels row by row (union-find on runs:
    the images here have few runs, and a pure-numpy flood fill would be slower)."""
    rows, columns = mask.shape
    padded = np.zeros((rows, columns + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    r_start, c_start = np.nonzero(change == 1)
    _, c_stop = np.nonzero(change == -1)  # same order: row-major, paired
    n = r_start.size
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_row: dict[int, list[int]] = {}
    for i in range(n):
        by_row.setdefault(int(r_start[i]), []).append(i)
    for i in range(n):
        row = int(r_start[i])
        for j in by_row.get(row - 1, ()):
            # 8-connected: runs [a, b) and [c, d) touch if they overlap or meet diagonally.
            if c_start[j] <= c_stop[i] and c_start[i] <= c_stop[j]:
                a, b = root(i), root(j)
                if a != b:
                    parent[a] = b
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        idx = np.array(members)
        rr, cs, ce = r_start[idx], c_start[idx], c_stop[idx]
        flat = np.concatenate(
            [r * columns + np.arange(a, b) for r, a, b in zip(rr, cs, ce, strict=True)]
        )
        out.append((int(rr.min()), int(cs.min()), int(rr.max()) + 1, int(ce.max()), flat))
    return out


def regions(cells: np.ndarray, rows: int, columns: int) -> list[Box]:
    """Frame rectangles around groups of candidate blocks, with MARGIN of context;
    overlapping rectangles united. The whole frame if candidates cover much of it."""
    if not cells.any():
        return []
    if cells.mean() > WHOLE_FRAME:
        return [Box(0, 0, columns, rows)]
    boxes = []
    for top, left, bottom, right, _ in _components(cells):
        boxes.append(
            Box(left * BLOCK, top * BLOCK, right * BLOCK, bottom * BLOCK).padded(
                MARGIN, rows, columns
            )
        )
    united: list[Box] = []
    for box in boxes:
        while (hit := next((u for u in united if u.overlaps(box)), None)) is not None:
            united.remove(hit)
            box = box.union(hit)
        united.append(box)
    return united


def _offset(box: Box, by: Box) -> Box:
    """A box given inside `by`, in the coordinates `by` is given in."""
    return Box(box.left + by.left, box.top + by.top, box.right + by.left, box.bottom + by.top)


def _speckled(grey: np.ndarray, h: int, w: int) -> np.ndarray:
    """Blocks of the h x w grid that are mostly ridges (speckle, not text on a background:
    a block of text is at most about a third strokes)."""
    across_columns, across_rows = ridges(grey)
    padded = np.zeros((h * BLOCK, w * BLOCK), dtype=np.float32)
    padded[: grey.shape[0], : grey.shape[1]] = across_columns | across_rows
    return np.asarray(padded.reshape(h, BLOCK, w, BLOCK).mean(axis=(1, 3)) > SPECKLED)


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
    padded = np.pad(near, 1).astype(np.uint8)
    h, w = near.shape
    count = sum(
        padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    )
    return np.where(near & (count >= 2), 255, 0).astype(np.uint8)


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
            cells = candidate_blocks(crop)
            if self.prefilter:
                parts = regions(cells, crop.shape[0], crop.shape[1])
            else:
                parts = [Box(0, 0, crop.shape[1], crop.shape[0])]
            here: list[Box] = []
            for part in parts:
                here += self._look(frame, grey, photometric, _offset(part, a))
            here += self._look_closer(frame, grey, photometric, a, cells, here)
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
        speckled = _speckled(crop, *left.shape)
        near = speckled.copy()
        near[1:] |= speckled[:-1]
        near[:-1] |= speckled[1:]
        near[:, 1:] |= near[:, :-1].copy()
        near[:, :-1] |= near[:, 1:].copy()
        left &= ~near
        # Only groups of blocks shaped like a line of small text (a few blocks across at
        # most): a larger group is an image's texture, four times the cost for nothing.
        # Each on its own, with a little context: united, lines far apart span the frame.
        parts = []
        for top, first, bottom, last, _ in _components(left):
            if min(bottom - top, last - first) <= LINE_BLOCKS:
                part = Box(first * BLOCK, top * BLOCK, last * BLOCK, bottom * BLOCK)
                parts.append(part.padded(BLOCK // 2, crop.shape[0], crop.shape[1]))
        if sum((p.right - p.left) * (p.bottom - p.top) for p in parts) > CLOSER * crop.size:
            return []  # an image's texture, not a few labels: four times the cost for nothing
        out: list[Box] = []
        for part in parts:
            at = _offset(part, area)
            view = Image.fromarray(self._plain(frame, grey, photometric, at))
            big = np.asarray(
                view.resize((2 * view.width, 2 * view.height), Image.Resampling.BICUBIC)
            )
            boxes = [
                Box(b.left // 2, b.top // 2, -(-b.right // 2), -(-b.bottom // 2))
                for b in self.boxes(big)
            ]
            boxes = [_offset(b, at) for b in boxes]
            out += self._without_colour_flow(frame, boxes) if big.ndim == 3 else boxes
        return out

    def candidates(self, frame: np.ndarray, photometric: str = "MONOCHROME2") -> list[Box]:
        """The regions the first pass gives DBNet (frame pixels): for measuring."""
        grey = to_grey(frame, photometric)
        return regions(candidate_blocks(grey), grey.shape[0], grey.shape[1])

    def _look(self, frame: np.ndarray, grey: np.ndarray, photometric: str, at: Box) -> list[Box]:
        """DBNet's boxes in one region, in every view of it (frame pixels)."""
        sl = (slice(at.top, at.bottom), slice(at.left, at.right))
        plain = self._plain(frame, grey, photometric, at)
        out = list(self._detect(plain, at))
        if self.turn:
            out += self._detect(plain, at, turned=True)
        crop = grey[sl]
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
        grey (black would draw edges DBNet takes for text).
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
            level = int(np.median(bright[~saturated])) if (~saturated).any() else 0
            grey = np.where(saturated, level, bright).astype(np.uint8)
            kept += self._detect(grey, at)
            if self.turn:
                kept += self._detect(grey, at, turned=True)
        return kept

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
    for top, left, bottom, right, pixels in _components(bitmap):
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
