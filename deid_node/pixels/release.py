"""One object's pixels made fit to release: looked at, blanked where text is, re-encoded.

Two passes over the frames, one frame in memory at a time: the first decides what to
blank in each distinct frame and checks the result by looking again; the second, run
while the output file is written, decodes the frames again and blanks them alike. So the
header (transfer syntax, photometric interpretation, marks) is known before any pixel
byte is written, and an object of any size is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid_node.config import ProfileConfig
from deid_node.pixels.clean import Finder, Report, apply, survey
from deid_node.pixels.decode import Layout, PixelError, iter_frames
from deid_node.pixels.detect import TextDetector
from deid_node.pixels.encode import output_layout, pixel_data_element
from deid_node.pixels.ocr import Box
from deid_node.pixels.rules import given_boxes

# Lossy transfer syntaxes, and the LossyImageCompressionMethod each one means.
LOSSY_METHODS: Final = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_FLOAT_PIXELS: Final = (0x7FE00008, 0x7FE00009)
_OFFSET_TABLES: Final = (0x7FE00001, 0x7FE00002)  # extended offset table and its lengths


@cache
def shared_finder() -> TextDetector:
    """This process's text detector, started on first use and kept."""
    return TextDetector()


@dataclass
class PixelPlan:
    """What becomes of one object's pixels; `summary` is for the audit (counts only)."""

    source: Path
    layout: Layout
    report: Report
    rules: list[str]
    output: Layout | None  # None: the pixel data is written as it came

    @property
    def found_text(self) -> bool:
        """Whether any region is blanked (found by looking, or given by a rule)."""
        return self.report.regions > 0

    @property
    def changed(self) -> bool:
        """Whether anything is blanked (the pixel data is re-encoded)."""
        return self.output is not None

    def cleaned_frames(self) -> Iterator[np.ndarray]:
        """The frames again, decoded, with what was found blanked."""
        return apply(iter_frames(self.source), self.layout, self.report)

    def element(self) -> Iterator[bytes]:
        """The cleaned Pixel Data element, encoded frame by frame (only when changed)."""
        if self.output is None:
            raise ValueError("the pixel data is unchanged")
        frames = self.cleaned_frames()
        try:
            yield from pixel_data_element(frames, self.output)
        except PixelError:
            raise
        except Exception as exc:  # an encoder's own error: its message may say anything
            what = type(exc).__name__
            raise PixelError(f"cannot re-encode the cleaned pixel data ({what})") from None

    @property
    def summary(self) -> str:
        """One line: what was looked at, found and done; never what any text said."""
        r = self.report
        frames = f"{r.frames} frame{'s' if r.frames != 1 else ''}"
        looked = f"looked at {r.looked_whole} whole, {r.looked_in_part} in part; {r.passes} passes"
        if self.output is None:
            return f"checked: no text in {frames} ({r.distinct} distinct; {looked})"
        how = [
            f"{r.by_rule} by rule" * bool(r.by_rule),
            f"{r.by_detector} by detector" * bool(r.by_detector),
        ]
        text = (
            f"cleaned: {r.regions} region{'s' if r.regions != 1 else ''} "
            f"({', '.join(h for h in how if h)}) in {r.frames_changed} of {frames}; {looked}"
        )
        if self.output.transfer_syntax != self.layout.transfer_syntax:
            text += f"; {self.layout.transfer_syntax.name} -> {self.output.transfer_syntax.name}"
        if self.rules:
            text += f"; rules: {', '.join(self.rules)}"
        return text[:500]


@dataclass(frozen=True)
class PixelsAsSent:
    """What the header as it arrived says about its pixels (read before it is changed)."""

    layout: Layout
    boxes: list[Box]
    rules: list[str]


def pixels_as_sent(original: Dataset, profile: ProfileConfig) -> PixelsAsSent:
    """Layout and region-rule boxes of an object, from its header as it arrived."""
    if any(t in original for t in _FLOAT_PIXELS):
        raise PixelError("float pixel data is not cleaned")
    layout = Layout.of(original)
    boxes, names = given_boxes(original, profile)
    return PixelsAsSent(layout, boxes, names)


def plan_pixels(
    source: Path, as_sent: PixelsAsSent, finder: Finder | None = None, *, check_only: bool = False
) -> PixelPlan:
    """Look at every frame of the object at `source` (up to the first text, `check_only`).

    Raises TextRemains when text is still found after blanking, PixelError when the
    pixels do not decode or could not be re-encoded.
    """
    layout = as_sent.layout
    report = survey(
        iter_frames(source),
        layout,
        finder or shared_finder(),
        fixed=as_sent.boxes,
        check_only=check_only,
        view=_palette(source) if layout.photometric == "PALETTE COLOR" else None,
    )
    output = output_layout(layout) if report.regions else None
    return PixelPlan(source, layout, report, as_sent.rules if report.regions else [], output)


def _palette(source: Path) -> Callable[[np.ndarray], np.ndarray]:
    """PALETTE COLOR frames as displayed: text is in the colours, not in the indices (two
    indices side by side may be white and black)."""
    from pydicom import dcmread
    from pydicom.pixels.processing import apply_color_lut

    ds = dcmread(source, stop_before_pixels=True)

    def shown(frame: np.ndarray) -> np.ndarray:
        try:
            rgb = np.asarray(apply_color_lut(frame, ds))
        except Exception as exc:  # a palette pydicom cannot apply: nothing can be judged
            raise PixelError(f"the palette cannot be applied ({type(exc).__name__})") from None
        if rgb.dtype == np.uint8 or int(rgb.max(initial=0)) <= 255:  # 8-bit entries
            return rgb.astype(np.uint8)
        return (rgb >> 8).astype(np.uint8)

    return shown


def rewrite_header(ds: Dataset, plan: PixelPlan) -> UID:
    """Make the de-identified header describe the cleaned pixel data; its transfer syntax.

    The pixel data element itself is removed from ds: plan.element() is written instead.
    """
    out = plan.output
    assert out is not None
    for tag in (0x7FE00010, *_OFFSET_TABLES):
        if tag in ds:
            del ds[tag]
    ds.PhotometricInterpretation = out.photometric
    if out.samples > 1:
        ds.PlanarConfiguration = 0
    method = LOSSY_METHODS.get(str(plan.layout.transfer_syntax))
    if method is not None or str(ds.get("LossyImageCompression", "")).strip() == "01":
        # Once lossy, always lossy: the history stays, and says how if it did not.
        ds.LossyImageCompression = "01"
        if method is not None and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    return out.transfer_syntax
