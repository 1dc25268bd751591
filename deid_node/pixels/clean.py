"""Burned-in text out of an object's frames: found, blanked, looked for again.

Every frame is looked at; identical frames (a cine loop that repeats, a frozen frame)
are looked at once and blanked alike. What is found is blanked with padding on every
sample; then the blanked frame is searched again, and any text still found there means
the object cannot be released: :class:`TextRemains`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np

from deid_node.pixels.decode import LOSSY_SYNTAXES, Layout, PixelError
from deid_node.pixels.ocr import Box, merge, to_grey

PAD: Final = 3  # pixels around each box found
EXTRA_LOOKS: Final = 2  # times text found after blanking is blanked too, before refusing


class TextRemains(PixelError):
    """Text was still found after blanking: the object is not released."""


class Finder(Protocol):
    """What finds text in a frame (detect.TextDetector)."""

    def find(
        self,
        frame: np.ndarray,
        photometric: str = ...,
        blanked: Sequence[Box] = ...,
        within: Sequence[Box] | None = ...,
    ) -> list[Box]:
        """Boxes of the text in the frame; `blanked` boxes are already blanked in it;
        only inside `within` when given."""
        ...


@dataclass
class Report:
    """What cleaning did, for the audit: counts only, never what the text said.

    `boxes` maps each distinct frame (by digest) to what is blanked in it, so a second
    pass over the same frames blanks them alike without looking again.
    """

    frames: int = 0
    distinct: int = 0
    regions: int = 0  # boxes blanked, each counted once
    by_rule: int = 0  # of those, given beforehand (region rules, ultrasound regions)
    frames_changed: int = 0
    looked_whole: int = 0  # frames the finder looked at whole
    looked_in_part: int = 0  # frames looked at only where they differ from the first
    passes: int = 0  # calls of the finder (each look and each look again)
    boxes: dict[bytes, tuple[Box, ...]] = field(default_factory=dict, repr=False)

    @property
    def by_detector(self) -> int:
        """Boxes found by looking."""
        return self.regions - self.by_rule


def fill_value(layout: Layout, frame: np.ndarray) -> int:
    """What blanked pixels become: black as displayed."""
    if layout.photometric == "MONOCHROME1":
        return int(frame.max())  # the highest stored value is displayed darkest
    if layout.photometric.startswith("MONOCHROME"):
        return int(frame.min())
    return 0  # RGB black; for PALETTE COLOR, entry 0


def blank(frame: np.ndarray, boxes: Sequence[Box], value: int) -> np.ndarray:
    """A copy of the frame with every box set to `value` on every sample."""
    out = frame.copy()
    for b in boxes:
        out[b.top : b.bottom, b.left : b.right, ...] = value
    return out


def _digest(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).digest()


def survey(
    frames: Iterable[np.ndarray],
    layout: Layout,
    finder: Finder,
    *,
    fixed: Sequence[Box] = (),
    pad: int = PAD,
    check_only: bool = False,
    view: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Report:
    """Look at every distinct frame: what to blank in it, checked by looking again.

    `fixed` boxes (region rules) are blanked in every frame. Raises TextRemains when a
    blanked frame still shows text. Frames are read one at a time; only the first is
    kept. Burned-in text of a cine is static while the image moves: the first frame is
    looked at whole, every later one only where it differs from the first (the text
    found on the first is blanked in all), so text on one frame of sixty is still seen.
    `check_only`: the object is withheld if anything is found, so the first frame with
    text ends the survey, and nothing is looked at again. `view`: what a frame looks like
    (a palette applied); the finder looks at that, in RGB, as well as at the frame.
    """
    photometric = "RGB" if layout.photometric.startswith("YBR") else layout.photometric
    rows, columns = layout.rows, layout.columns
    given = [b for b in (box.padded(0, rows, columns) for box in fixed) if b.right > b.left]
    given = [b for b in given if b.bottom > b.top]
    looker = _Looker(layout, finder, photometric, pad, check_only, view)
    report = Report(by_rule=len(given), regions=len(given))
    first: np.ndarray | None = None
    on_first: tuple[Box, ...] = ()
    for index, frame in enumerate(frames, start=1):
        report.frames += 1
        digest = _digest(frame)
        boxes = report.boxes.get(digest)
        if boxes is None:
            if first is None:
                first = frame
                on_first = looker.look(frame, given, None, index)
                found = on_first
                report.looked_whole += 1
                report.regions += len(found)
            else:
                # What was found on the first frame and is still there unchanged is
                # blanked without looking; where it changed, it is looked at again.
                diff = moved(first, frame, layout)
                within = parts_of(diff)
                same = tuple(b for b in on_first if _unchanged(first, frame, b, layout))
                if within is not None:
                    # A moving image changes everywhere it is: only parts where strokes
                    # are drawn in one value (an overlay's) are looked at there, and on
                    # lossy syntaxes (no exact values) every part.
                    if layout.transfer_syntax not in LOSSY_SYNTAXES:
                        within = [p for p in within if drawn_strokes(frame, p, photometric, diff)]
                    gone = (b.padded(BLOCK, rows, columns) for b in on_first if b not in same)
                    within = [*within, *gone]
                report.looked_whole += within is None
                report.looked_in_part += bool(within)
                extra = looker.look(frame, (*given, *same), within, index) if within != [] else ()
                # Text of the first frame found again where the frame changed is blanked
                # whole as it was found there: a second look at the same text over a
                # moving image may box it a letter short.
                again = tuple(
                    b for b in on_first if b not in same and any(b.overlaps(e) for e in extra)
                )
                found = (*same, *again, *extra)
                report.regions += sum(b not in on_first for b in extra)
            boxes = (*given, *found)
            report.boxes[digest] = boxes
            report.distinct += 1
        if boxes:
            report.frames_changed += 1
            if check_only:
                break
    report.passes = looker.passes
    return report


# A later frame of a cine is looked at only where it differs from the first: by more
# than this share of the full scale on lossy syntaxes (their noise), by anything on
# lossless ones; in blocks of this side, grown by one block, each part at most a share
# of the frame (beyond it the whole frame is looked at: one look costs less than many).
LOSSY_TOLERANCE: Final = 8 / 255
BLOCK: Final = 16
WHOLE_SHARE: Final = 0.9
STROKE_PIXELS: Final = 12  # stroke pixels of one value: a couple of letters at least
SOLID: Final = 2  # pixels inside an area of one value, per stroke pixel: a background
INK: Final = 24  # 8-bit levels from a box's typical value: drawn, not background
MIN_INK: Final = 8  # pixels: fewer is no text to follow
INK_KEPT: Final = 0.98  # of the ink unchanged: the text is still there


def moved(first: np.ndarray, frame: np.ndarray, layout: Layout) -> np.ndarray:
    """Pixels where `frame` differs from `first` by more than a lossy codec's noise."""
    tolerance = _tolerance(layout)
    if tolerance == 0:
        diff = frame != first
    else:
        wide = np.int32 if layout.bits_allocated > 8 else np.int16
        diff = np.abs(frame.astype(wide) - first.astype(wide)) > tolerance
    return np.asarray(diff.any(axis=2) if diff.ndim == 3 else diff)


def parts_of(diff: np.ndarray) -> list[Box] | None:
    """Boxes around the set pixels of `diff`, in grown blocks; None: most of the frame."""
    rows, columns = diff.shape
    br, bc = -(-rows // BLOCK), -(-columns // BLOCK)
    padded = np.zeros((br * BLOCK, bc * BLOCK), dtype=bool)
    padded[:rows, :columns] = diff
    blocks = np.asarray(padded.reshape(br, BLOCK, bc, BLOCK).any(axis=(1, 3)))
    if not blocks.any():
        return []
    grown = blocks.copy()  # one block more on every side: text at a part's edge is whole
    grown[1:] |= blocks[:-1]
    grown[:-1] |= blocks[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    if grown.mean() > WHOLE_SHARE:
        return None
    parts = []
    for top, bottom in _runs(grown.any(axis=1)):
        band = grown[top:bottom]
        for left, right in _runs(band.any(axis=0)):
            parts.append(
                Box(
                    left * BLOCK,
                    top * BLOCK,
                    min(columns, right * BLOCK),
                    min(rows, bottom * BLOCK),
                )
            )
    return parts


def drawn_strokes(
    frame: np.ndarray, part: Box, photometric: str = "MONOCHROME2", diff: np.ndarray | None = None
) -> bool:
    """Whether a part of a frame holds strokes drawn in one value: in the numbers a few
    letters have, pixels with two or three 4-neighbours of their own value (a stroke's
    run; a solid area's inside has four, a grain none or one) and that are set in `diff`
    (where the frame differs from the first), of a value whose pixels are
    not mostly inside solid areas (a background). Text is drawn so (its anti-aliased
    edges aside); an image's grains, speckle clipped at white included, are not."""
    window = (slice(part.top, part.bottom), slice(part.left, part.right))
    crop = frame[window]
    if crop.dtype == np.uint8 and photometric.strip() != "MONOCHROME1":
        grey = crop.max(axis=2) if crop.ndim == 3 else crop  # to_grey's view, cheaper
    else:
        grey = to_grey(crop, photometric)
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return False
    same = _same_neighbours(grey)
    strokes = (same >= 2) & (same <= 3)
    if diff is not None:  # what the first frame showed there was looked at on it
        strokes &= diff[window]
    stroke = np.bincount(grey[strokes], minlength=256)
    inside = np.bincount(grey[same == 4], minlength=256)
    # A background's pixels are mostly inside it; a stroke's (up to ~5 pixels wide) not.
    return bool(((stroke >= STROKE_PIXELS) & (inside <= SOLID * stroke)).any())


def _same_neighbours(grey: np.ndarray) -> np.ndarray:
    """For each pixel, how many of its 4-neighbours have its value."""
    same = np.zeros(grey.shape, dtype=np.uint8)
    up = grey[1:] == grey[:-1]
    left = grey[:, 1:] == grey[:, :-1]
    same[1:] += up
    same[:-1] += up
    same[:, 1:] += left
    same[:, :-1] += left
    return same


def _unchanged(first: np.ndarray, frame: np.ndarray, box: Box, layout: Layout) -> bool:
    """Whether the frame shows inside `box` the text the first frame did.

    The whole box unchanged (a lossy codec's noise aside) says so; on lossless syntaxes so
    does the ink alone: text drawn in one value over a moving image keeps every pixel of
    that value (its stroke pixels: grains of one value stand alone) while the image
    around its strokes changes. Anything else is looked at
    again instead.
    """
    a = first[box.top : box.bottom, box.left : box.right].astype(np.int32)
    b = frame[box.top : box.bottom, box.left : box.right].astype(np.int32)
    tolerance = _tolerance(layout)
    if int(np.abs(a - b).max(initial=0)) <= tolerance:
        return True
    if tolerance or a.size == 0:
        return False  # lossy: the ink's exact values do not survive coding
    grey = a.max(axis=2) if a.ndim == 3 else a
    far = np.abs(grey - int(np.median(grey))) > INK << max(0, layout.bits_stored - 8)
    if int(far.sum()) < MIN_INK:
        return False
    neighbours = _same_neighbours(grey)
    # A stroke's pixels have two or three neighbours of their value: grains stand alone,
    # a background's inside has four.
    strokes = far & (neighbours >= 2) & (neighbours <= 3)
    if int(strokes.sum()) < MIN_INK:
        return False
    values, counts = np.unique(grey[strokes], return_counts=True)
    value = values[int(np.argmax(counts))]
    ink = strokes & (grey == value)
    inside = int(((grey == value) & (neighbours == 4)).sum())
    if int(ink.sum()) < STROKE_PIXELS or inside > SOLID * int(ink.sum()):
        return False  # not drawn in one value (grains, or a background): look again
    same = (a == b).all(axis=2) if a.ndim == 3 else a == b
    return float(same[ink].mean()) >= INK_KEPT


def _tolerance(layout: Layout) -> int:
    """Differences smaller than this are a lossy codec's noise, not a change."""
    if layout.transfer_syntax in LOSSY_SYNTAXES:
        return int(LOSSY_TOLERANCE * ((1 << layout.bits_stored) - 1))
    return 0


def _runs(present: Any) -> list[tuple[int, int]]:
    """[start, stop) runs of True."""
    at = np.flatnonzero(present)
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) > 1)
    starts = np.concatenate(([at[0]], at[breaks + 1]))
    stops = np.concatenate((at[breaks], [at[-1]])) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class _Looker:
    """Looks at frames (whole or in parts) and again after blanking; counts its passes."""

    def __init__(
        self,
        layout: Layout,
        finder: Finder,
        photometric: str,
        pad: int,
        check_only: bool,
        view: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.layout, self.finder, self.photometric = layout, finder, photometric
        self.pad, self.check_only, self.view = pad, check_only, view
        self.passes = 0

    def find(
        self, frame: np.ndarray, within: Sequence[Box] | None, blanked: Sequence[Box] = ()
    ) -> list[Box]:
        """What the finder sees in the frame, or only inside `within`, padded."""
        rows, columns = self.layout.rows, self.layout.columns
        self.passes += 1 if within is None else len(within)
        found = self.finder.find(frame, self.photometric, blanked, within)
        if self.view is not None:  # the colours shown too: indices may hide what they show
            found += self.finder.find(self.view(frame), "RGB", blanked, within)
        return [b.padded(self.pad, rows, columns) for b in found]

    def look(
        self, frame: np.ndarray, given: Sequence[Box], within: Sequence[Box] | None, index: int
    ) -> tuple[Box, ...]:
        """What to blank in one frame beyond `given`; TextRemains if text is still found.

        `given` is blanked before the first look. Then looked for again: what a first
        look half-saw (strokes broken by lossy compression) is found once its neighbours
        are gone, and blanked too, a bounded number of times; then nothing may be found
        any more. Pieces of one line found in different looks become one box, so no
        letter is left standing between them.
        """
        fill = fill_value(self.layout, frame)
        found = self.find(blank(frame, given, fill) if given else frame, within, given)
        if self.check_only or not found:
            return tuple(found)
        for looks in range(1 + EXTRA_LOOKS):
            boxes = (*given, *merge(found))
            more = self.find(blank(frame, boxes, fill), within, boxes)
            if not more:
                return tuple(merge(found))
            if looks == EXTRA_LOOKS:
                raise TextRemains(f"burned-in text remains after blanking (frame {index})")
            found += more
        return tuple(merge(found))


def apply(frames: Iterable[np.ndarray], layout: Layout, report: Report) -> Iterator[np.ndarray]:
    """The frames with what `survey` found blanked, in order (the same frames again)."""
    for index, frame in enumerate(frames, start=1):
        boxes = report.boxes.get(_digest(frame))
        if boxes is None:  # a decoder that is not deterministic: nothing can be trusted
            raise PixelError(f"frame {index} decoded differently the second time")
        yield blank(frame, boxes, fill_value(layout, frame)) if boxes else frame
