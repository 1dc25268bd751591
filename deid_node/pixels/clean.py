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
from deid_node.pixels.detect import stretch
from deid_node.pixels.ocr import Box, merge, to_grey
from deid_node.pixels.reader import Reading, names_one_of

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


class Reader(Protocol):
    """What reads a box of text (reader.TextReader): only to tell text from texture and
    to compare it with the object's own identifiers."""

    def read_any_way(self, image: np.ndarray, *, flipped: bool = True) -> Reading:
        """The best reading of a crop in any of its orientations (upside down too unless
        not `flipped`)."""
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
    by_header: int = 0  # of those, small or faint lines that spell a header identifier
    texture: int = 0  # boxes still found after blanking that read as no text: left as is
    frames_changed: int = 0
    looked_whole: int = 0  # frames the finder looked at whole
    looked_in_part: int = 0  # frames looked at only where they differ from the first
    passes: int = 0  # calls of the finder (each look and each look again)
    boxes: dict[bytes, tuple[Box, ...]] = field(default_factory=dict, repr=False)

    @property
    def by_detector(self) -> int:
        """Boxes found by the detector."""
        return max(0, self.regions - self.by_rule - self.by_header)


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
    reader: Reader | None = None,
    words: frozenset[str] = frozenset(),
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
    `reader`: reads what is still found after blanking (and, under `check_only`, what is
    found), so only text withholds an object, never texture; with `words` (the object's
    own identifiers, folded) it also reads the lines the finder left unexplained, and a
    line that spells one of them is blanked.
    """
    photometric = "RGB" if layout.photometric.startswith("YBR") else layout.photometric
    rows, columns = layout.rows, layout.columns
    given = [b for b in (box.padded(0, rows, columns) for box in fixed) if b.right > b.left]
    given = [b for b in given if b.bottom > b.top]
    looker = _Looker(layout, finder, photometric, pad, check_only, view, reader, words)
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
    report.by_header, report.texture = looker.by_header, looker.texture
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


MAX_READ: Final = 4  # unexplained lines read per look (for text, the header's identifiers)
READ_PAD: Final = 2  # pixels around a line read


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
        reader: Reader | None = None,
        words: frozenset[str] = frozenset(),
    ) -> None:
        self.layout, self.finder, self.photometric = layout, finder, photometric
        self.pad, self.check_only, self.view = pad, check_only, view
        self.reader, self.words = reader, words
        self.passes = 0
        self.by_header = 0  # unexplained lines blanked because they spell a header identifier
        self.texture = 0  # boxes found after blanking that read as no text
        self._said: dict[bytes, str] = {}  # unexplained lines read: "", "text", "identifier"

    def find(
        self,
        frame: np.ndarray,
        within: Sequence[Box] | None,
        blanked: Sequence[Box] = (),
        read: bool = False,
    ) -> list[Box]:
        """What the finder sees in the frame, or only inside `within`, padded; `read`:
        with the unexplained lines that read as text or spell an identifier."""
        rows, columns = self.layout.rows, self.layout.columns
        self.passes += 1 if within is None else len(within)
        found = self.finder.find(frame, self.photometric, blanked, within)
        unexplained = list(getattr(self.finder, "unexplained", ()))
        if self.view is not None:  # the colours shown too: indices may hide what they show
            found += self.finder.find(self.view(frame), "RGB", blanked, within)
            unexplained += getattr(self.finder, "unexplained", ())
        found = [b.padded(self.pad, rows, columns) for b in found]
        if within is not None or not read:
            # Parts of a later frame of a cine are where the image moved: what is left
            # unexplained there is the moving image, read in vain on every frame. After
            # blanking, the edges of what was blanked are left unexplained: not read.
            return found
        return found + self._read_unexplained(frame, unexplained)

    def look(
        self, frame: np.ndarray, given: Sequence[Box], within: Sequence[Box] | None, index: int
    ) -> tuple[Box, ...]:
        """What to blank in one frame beyond `given`; TextRemains if text is still found.

        `given` is blanked before the first look. Then looked for again: what a first
        look half-saw (strokes broken by lossy compression) is found once its neighbours
        are gone, and blanked too, a bounded number of times; then what is still found
        must read as no text (texture), else the object is refused. Pieces of one line
        found in different looks become one box, so no letter is left standing between
        them.
        """
        fill = fill_value(self.layout, frame)
        start = blank(frame, given, fill) if given else frame
        found = self.find(start, within, given, read=True)
        if self.check_only:
            return tuple(found) if self._any_text(start, found) else ()
        if not found:
            return ()
        for looks in range(1 + EXTRA_LOOKS):
            boxes = (*given, *merge(found))
            blanked = blank(frame, boxes, fill)
            more = self.find(blanked, within, boxes)
            if not more:
                return tuple(merge(found))
            if looks == EXTRA_LOOKS:
                if self._any_text(blanked, more):
                    raise TextRemains(f"burned-in text remains after blanking (frame {index})")
                self.texture += len(more)
                return tuple(merge(found))
            found += more
        return tuple(merge(found))

    def _shown(self, frame: np.ndarray) -> np.ndarray:
        """The frame as 8-bit grey or RGB, as text is read in it."""
        if self.view is not None:
            return self.view(frame)
        if frame.ndim == 3 and frame.dtype == np.uint8 and self.photometric == "RGB":
            return frame
        return to_grey(frame, self.photometric)

    def _readings(self, shown: np.ndarray, box: Box, flipped: bool = True) -> Iterator[Reading]:
        """What each line of a box says (a box may hold several lines)."""
        assert self.reader is not None
        rows, columns = shown.shape[0], shown.shape[1]
        at = box.padded(READ_PAD, rows, columns)
        crop: np.ndarray | None = shown[at.top : at.bottom, at.left : at.right]
        if crop is not None and crop.ndim == 2:  # faint text read as plainly as bright
            crop = stretch(crop) if crop.size else None
        if crop is None:  # flat: nothing written
            return
        for line in _lines(crop):
            yield self.reader.read_any_way(line, flipped=flipped)

    def _any_text(self, frame: np.ndarray, boxes: Sequence[Box]) -> bool:
        """Whether any box reads as anything but blank; without a reader, every box
        counts as text."""
        if self.reader is None:
            return bool(boxes)
        shown = self._shown(frame)
        return any(
            not r.is_blank or names_one_of(r, self.words)
            for box in merge(boxes)
            for r in self._readings(shown, box)
        )

    def _read_unexplained(self, frame: np.ndarray, parts: Sequence[Box]) -> list[Box]:
        """The lines the finder left unexplained that read as text or spell one of the
        object's identifiers (small or faint lines DBNet does not box)."""
        if self.reader is None or not parts:
            return []
        shown = self._shown(frame)
        rows, columns = self.layout.rows, self.layout.columns
        found = []
        for part in _joined_lines(parts)[:MAX_READ]:
            # The same line is unexplained again in every look after blanking and on every
            # frame of a cine it stays on: read once.
            crop = np.ascontiguousarray(shown[part.top : part.bottom, part.left : part.right])
            key = hashlib.blake2b(crop.data, digest_size=16, person=_key(part)).digest()
            said = self._said.get(key)
            if said is None:
                # Upright or turned a quarter: labels are not drawn upside down, and
                # reading each line twice would double the cost of every frame.
                readings = list(self._readings(shown, part, flipped=False))
                if any(names_one_of(r, self.words) for r in readings):
                    said = "identifier"
                else:
                    said = "text" if any(r.is_clear_text for r in readings) else ""
                self._said[key] = said
                self.by_header += said == "identifier"
            if said:
                found.append(part.padded(self.pad, rows, columns))
        return found


def _key(box: Box) -> bytes:
    return b"%d,%d,%d,%d" % (box.left, box.top, box.right, box.bottom)


LINE_GAP: Final = 48  # pixels between two pieces of one line (a faint line breaks up)


def _joined_lines(parts: Sequence[Box]) -> list[Box]:
    """Pieces side by side on one band of rows (gaps up to LINE_GAP) as one box, read
    whole: a name broken into pieces spells nothing piece by piece."""
    out: list[Box] = []
    for part in sorted(merge(parts), key=lambda b: (b.top, b.left)):
        for i, line in enumerate(out):
            same_rows = part.top < line.bottom and line.top < part.bottom
            if same_rows and part.left - line.right <= LINE_GAP:
                out[i] = line.union(part)
                break
        else:
            out.append(part)
    return out


LINE_INK: Final = 0.4  # of the strongest row's ink: a row of a line of text
MIN_INK_LEVELS: Final = 24  # 8-bit levels off the background for anything to be written


def _lines(crop: np.ndarray) -> list[np.ndarray]:
    """A crop cut down to its lines of text (rows far off the background, between rows
    that are not; each to the columns its ink spans), so a small line fills the reader's
    height; whole when nothing stands out."""
    grey = crop if crop.ndim == 2 else crop.max(axis=2)
    if min(grey.shape) < 5:
        return [crop]
    off = np.abs(grey.astype(np.int16) - int(np.median(grey)))
    per_row = np.percentile(off, 90, axis=1)
    strongest = float(per_row.max())
    if strongest < MIN_INK_LEVELS:
        return [crop]
    lines = []
    for a, b in _runs(per_row >= LINE_INK * strongest):
        columns = _runs(off[a:b].max(axis=0) >= LINE_INK * strongest)
        if b - a < 3 or not columns:
            continue
        left, right = columns[0][0], columns[-1][1]
        lines.append(
            crop[max(0, a - READ_PAD) : b + READ_PAD, max(0, left - READ_PAD) : right + READ_PAD]
        )
    return lines or [crop]


def apply(frames: Iterable[np.ndarray], layout: Layout, report: Report) -> Iterator[np.ndarray]:
    """The frames with what `survey` found blanked, in order (the same frames again)."""
    for index, frame in enumerate(frames, start=1):
        boxes = report.boxes.get(_digest(frame))
        if boxes is None:  # a decoder that is not deterministic: nothing can be trusted
            raise PixelError(f"frame {index} decoded differently the second time")
        yield blank(frame, boxes, fill_value(layout, frame)) if boxes else frame
