#!/usr/bin/env python3
"""Compare burned-in text finders on synthetic frames: recall, false boxes, time.

Finders: DBNet alone (every frame whole), DBNet behind the stroke pre-filter (the
detector deid-node uses, deid_node/pixels/detect.py), the same without the quarter-turned
view, and Tesseract over masks (deid_node/pixels/ocr.py). Frames: the cases of
deid_node/testing/synthetic/textcases.py. One thread, a fixed number of repetitions;
prints one table.

Example:
    .venv/bin/python scripts/measure_detect.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import numpy as np

from deid_node.pixels.detect import TextDetector, to_grey
from deid_node.pixels.ocr import Box, TextFinder
from deid_node.pixels.strokes import candidate_blocks, regions
from deid_node.testing.synthetic.annotated import Drawn
from deid_node.testing.synthetic.textcases import Case, ct_slice, text_cases, textless_cases

REPEAT = 3  # timing runs per frame; the median is reported
COVERED = 0.95  # share of a drawn text's ink pixels the boxes found must hold


def found(case: Case, drawn: Drawn, boxes: Sequence[Box]) -> bool:
    """Whether the boxes hold at least COVERED of the text's ink pixels."""
    ink = case.ink_in(drawn)
    inside = np.zeros(len(ink), dtype=bool)
    for b in boxes:
        inside |= (
            (ink[:, 0] >= b.top)
            & (ink[:, 0] < b.bottom)
            & (ink[:, 1] >= b.left)
            & (ink[:, 1] < b.right)
        )
    return bool(inside.mean() >= COVERED) if len(ink) else True


def timed(find: Callable[[], list[Box]]) -> tuple[list[Box], float]:
    """The boxes, and the median CPU milliseconds of REPEAT runs (this process's CPU
    time: one thread, so the time of one core, whatever else the machine runs)."""
    times, boxes = [], []
    for _ in range(REPEAT):
        start = time.process_time()
        boxes = find()
        times.append((time.process_time() - start) * 1000)
    return boxes, statistics.median(times)


def _phantom_slice(z: int) -> np.ndarray:
    """A slice of the CT series the bench sends (deid_node/testing/synthetic/ct.py)."""
    from deid_node.testing.synthetic.ct import _phantom

    return _phantom(512, 512, np.random.default_rng(z), float(z))


def candidate_list(frame: np.ndarray) -> list[Box]:
    """The first pass alone: the regions it would give DBNet."""
    grey = to_grey(frame)
    return regions(candidate_blocks(grey), grey.shape[0], grey.shape[1])


def main() -> int:
    """Print the table; 0."""
    whole = TextDetector(prefilter=False)
    filtered = TextDetector()
    upright = TextDetector(turn=False)
    tesseract = TextFinder()

    def tesseract_find(case: Case) -> list[Box]:
        tesseract._seen.clear()  # its cache of parts read: every run reads afresh
        return tesseract.find(case.frame, case.photometric)

    finders: dict[str, Callable[[Case], list[Box]]] = {
        "DBNet alone": lambda c: whole.find(c.frame, c.photometric),
        "pre-filter+DBNet": lambda c: filtered.find(c.frame, c.photometric),
        "same, no turn": lambda c: upright.find(c.frame, c.photometric),
        "Tesseract (ocr.py)": lambda c: tesseract_find(c),
    }
    planted, textless = text_cases(), textless_cases()
    print(f"{'case':30} " + " ".join(f"{n:>20}" for n in finders))
    totals = {n: [0, 0, 0.0, 0.0] for n in finders}  # found, false boxes, ms text, ms none
    for case in planted:
        cells = []
        for name, find in finders.items():
            boxes, ms = timed(lambda f=find, c=case: f(c))  # type: ignore[misc]
            hits = sum(found(case, d, boxes) for d in case.drawn)
            totals[name][0] += hits
            totals[name][2] += ms
            cells.append(f"{hits}/{len(case.drawn)} {ms:6.0f} ms")
        print(f"{case.name:30} " + " ".join(f"{c:>20}" for c in cells))
    for case in textless:
        cells = []
        for name, find in finders.items():
            boxes, ms = timed(lambda f=find, c=case: f(c))  # type: ignore[misc]
            totals[name][1] += len(boxes)
            totals[name][3] += ms
            cells.append(f"{len(boxes)} box {ms:6.1f} ms")
        print(f"{case.name:30} " + " ".join(f"{c:>20}" for c in cells))
    n_drawn = sum(len(c.drawn) for c in planted)
    print()
    print(f"{'total':30} " + " ".join(f"{n:>20}" for n in finders))
    row = [f"{t[0]}/{n_drawn}" for t in totals.values()]
    print(f"{'texts found':30} " + " ".join(f"{c:>20}" for c in row))
    row = [f"{t[1]}" for t in totals.values()]
    print(f"{'false boxes (text-free)':30} " + " ".join(f"{c:>20}" for c in row))
    row = [f"{t[2] / len(planted):.0f} ms" for t in totals.values()]
    print(f"{'mean ms, frame with text':30} " + " ".join(f"{c:>20}" for c in row))
    print()
    for label, slices in (
        ("CT phantom (synthetic/ct.py)", [_phantom_slice(z) for z in range(10)]),
        ("CT with lungs (textcases.py)", [ct_slice(seed=s) for s in range(10)]),
    ):
        costs = [timed(lambda f=f: filtered.find(f))[1] for f in slices]  # type: ignore[misc]
        first = [timed(lambda f=f: candidate_list(f))[1] for f in slices]  # type: ignore[misc]
        print(
            f"{label}, 10 slices 512x512 text-free: pre-filter+DBNet median "
            f"{statistics.median(costs):.1f} ms/slice (max {max(costs):.1f}), "
            f"first pass alone {statistics.median(first):.1f} ms"
        )
    tesseract.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
