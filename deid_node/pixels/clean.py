"""Burned-in text out of an object's frames: found, blanked, looked for again.

Every frame is looked at; identical frames (a cine loop that repeats, a frozen frame)
are looked at once and blanked alike. What is found is blanked with padding on every
sample; then the blanked frame is searched again, and any text still found there means
the object cannot be released: :class:`TextRemains`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np

from deid_node.pixels.decode import Layout, PixelError
from deid_node.pixels.ocr import Box, merge

PAD: Final = 3  # pixels around each box found
EXTRA_LOOKS: Final = 2  # times text found after blanking is blanked too, before refusing


class TextRemains(PixelError):
    """Text was still found after blanking: the object is not released."""


class Finder(Protocol):
    """What finds text in a frame (ocr.TextFinder)."""

    def find(
        self, frame: np.ndarray, photometric: str = ..., blanked: Sequence[Box] = ...
    ) -> list[Box]:
        """Boxes of the text in the frame; `blanked` boxes are already blanked in it."""
        ...


@dataclass
class Report:
    """What cleaning did, for the audit: counts only, never what the text said.

    `boxes` maps each distinct frame (by digest) to what is blanked in it, so a second
    pass over the same frames blanks them alike without looking again.
    """

    frames: int = 0
    distinct: int = 0
    regions: int = 0  # boxes blanked, counted once per distinct frame
    by_rule: int = 0  # of those, given beforehand (region rules, ultrasound regions)
    frames_changed: int = 0
    boxes: dict[bytes, tuple[Box, ...]] = field(default_factory=dict, repr=False)

    @property
    def by_ocr(self) -> int:
        """Boxes found by looking (OCR)."""
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
) -> Report:
    """Look at every distinct frame: what to blank in it, checked by looking again.

    `fixed` boxes (region rules) are blanked in every frame. Raises TextRemains when a
    blanked frame still shows text. Frames are read one at a time and not kept.
    `check_only`: the object is withheld if anything is found, so the first frame with
    text ends the survey, and nothing is looked at again.
    """
    photometric = "RGB" if layout.photometric.startswith("YBR") else layout.photometric
    rows, columns = layout.rows, layout.columns
    given = [b for b in (box.padded(0, rows, columns) for box in fixed) if b.right > b.left]
    given = [b for b in given if b.bottom > b.top]
    report = Report()
    for index, frame in enumerate(frames, start=1):
        report.frames += 1
        digest = _digest(frame)
        boxes = report.boxes.get(digest)
        if boxes is None:
            if check_only:
                boxes = (*given, *finder.find(frame, photometric))
            else:
                boxes = _look(frame, layout, finder, photometric, given, pad, index)
            report.boxes[digest] = boxes
            report.distinct += 1
            report.regions += len(boxes)
            report.by_rule += len(given)
        if boxes:
            report.frames_changed += 1
            if check_only:
                break
    return report


def _look(
    frame: np.ndarray,
    layout: Layout,
    finder: Finder,
    photometric: str,
    given: list[Box],
    pad: int,
    index: int,
) -> tuple[Box, ...]:
    """What to blank in one frame; TextRemains if text is still found after blanking."""
    rows, columns = layout.rows, layout.columns
    found = [b.padded(pad, rows, columns) for b in finder.find(frame, photometric)]
    boxes = (*given, *found)
    if not boxes:
        return boxes
    fill = fill_value(layout, frame)
    # Looked for again: what a first look half-saw (strokes broken by lossy compression)
    # is found once its neighbours are gone, and blanked too, a bounded number of times;
    # then nothing may be found any more. Pieces of one line found in different looks
    # become one box, so no letter is left standing between them.
    for looks in range(1 + EXTRA_LOOKS):
        boxes = (*given, *merge(found))
        more = finder.find(blank(frame, boxes, fill), photometric, boxes)
        if not more:
            return boxes
        if looks == EXTRA_LOOKS:
            raise TextRemains(f"burned-in text remains after blanking (frame {index})")
        found += [b.padded(pad, rows, columns) for b in more]
    return boxes


def apply(frames: Iterable[np.ndarray], layout: Layout, report: Report) -> Iterator[np.ndarray]:
    """The frames with what `survey` found blanked, in order (the same frames again)."""
    for index, frame in enumerate(frames, start=1):
        boxes = report.boxes.get(_digest(frame))
        if boxes is None:  # a decoder that is not deterministic: nothing can be trusted
            raise PixelError(f"frame {index} decoded differently the second time")
        yield blank(frame, boxes, fill_value(layout, frame)) if boxes else frame
