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
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from deid_node.config import ProfileConfig
from deid_node.pixels.clean import Finder, Reader, Report, apply, survey
from deid_node.pixels.decode import Layout, PixelError, iter_frames
from deid_node.pixels.detect import TextDetector
from deid_node.pixels.encode import output_layout, pixel_data_element
from deid_node.pixels.ocr import Box
from deid_node.pixels.reader import TextReader, identifier_words
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


@cache
def shared_reader() -> TextReader:
    """This process's text reader, started on first use and kept."""
    return TextReader()


@dataclass
class PixelPlan:
    """What becomes of one object's pixels; `summary` is for the audit (counts only)."""

    source: Path
    layout: Layout
    report: Report
    rules: list[str]
    output: Layout | None  # None: the pixel data is written as it came
    stray_bits: bool = False  # bits outside BitsStored were set (cleared when written)

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
        return apply(_frames_as_looked_at(self.source, self.layout), self.layout, self.report)

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
        kept = f"; {r.texture} texture boxes read as no text, kept" if r.texture else ""
        if self.output is None:
            return f"checked: no text in {frames} ({r.distinct} distinct; {looked}){kept}"
        if not r.regions:
            return (
                f"checked: no text in {frames} ({r.distinct} distinct; {looked}){kept}; "
                f"bits outside BitsStored cleared, re-encoded as {self.output.transfer_syntax.name}"
            )[:500]
        how = [
            f"{r.by_rule} by rule" * bool(r.by_rule),
            f"{r.by_detector} by detector" * bool(r.by_detector),
            f"{r.by_header} matching a header value" * bool(r.by_header),
        ]
        text = (
            f"cleaned: {r.regions} region{'s' if r.regions != 1 else ''} "
            f"({', '.join(h for h in how if h)}) in {r.frames_changed} of {frames}; {looked}"
        )
        if self.output.transfer_syntax != self.layout.transfer_syntax:
            text += f"; {self.layout.transfer_syntax.name} -> {self.output.transfer_syntax.name}"
        text += kept
        if self.rules:
            text += f"; rules: {', '.join(self.rules)}"
        return text[:500]


@dataclass(frozen=True)
class PixelsAsSent:
    """What the header as it arrived says about its pixels (read before it is changed)."""

    layout: Layout
    boxes: list[Box]
    rules: list[str]
    words: frozenset[str] = frozenset()  # the object's identifiers, folded (reader.folded)


def pixels_as_sent(original: Dataset, profile: ProfileConfig) -> PixelsAsSent:
    """Layout, region-rule boxes and identifiers of an object, from its header as it
    arrived."""
    if any(t in original for t in _FLOAT_PIXELS):
        raise PixelError("float pixel data is not cleaned")
    layout = Layout.of(original)
    boxes, names = given_boxes(original, profile)
    return PixelsAsSent(layout, boxes, names, identifier_words(header_identifiers(original)))


# Values that name or number the patient, the visit or the place, as burned-in text
# repeats them; dates in the spellings screens use.
_IDENTIFIER_KEYWORDS: Final = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "RequestedProcedureID",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "PatientAddress",
    "StationName",
)
_DATE_KEYWORDS: Final = (
    "PatientBirthDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
)
_MONTHS: Final = [
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
]
_MAX_DEPTH: Final = 4  # sequences walked for person names


def header_identifiers(ds: Dataset) -> list[str]:
    """The header's names (every person name, all groups, in sequences too), IDs,
    places and dates (YYYYMMDD, DDMMYYYY, MMDDYYYY, DDMONYYYY, two-digit years too)."""
    values: list[str] = []
    _person_names(ds, values, 0)
    for keyword in _IDENTIFIER_KEYWORDS:
        value = ds.get(keyword)
        if value is not None and not isinstance(value, bytes):
            values += [str(v) for v in value] if _multi(value) else [str(value)]
    for item in ds.get("OtherPatientIDsSequence", None) or []:
        values.append(str(item.get("PatientID", "")))
    for keyword in _DATE_KEYWORDS:
        values += _date_spellings(str(ds.get(keyword, "") or ""))
    return [v for v in values if v]


def _multi(value: object) -> bool:
    return isinstance(value, MultiValue | list | tuple)


def _person_names(ds: Dataset, out: list[str], depth: int) -> None:
    # Raw elements first: only names and sequences are decoded (a whole header decoded
    # costs a CT slice's budget).
    for raw in ds.elements():
        vr = raw.VR or _dictionary_vr(raw.tag)
        if vr not in ("PN", "SQ") or (vr == "SQ" and depth >= _MAX_DEPTH):
            continue
        value = ds[raw.tag].value
        if value is None:
            continue
        if vr == "PN":
            out += [str(v) for v in value] if _multi(value) else [str(value)]
        else:
            for item in value:
                _person_names(item, out, depth + 1)


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private or unknown: not a name we can tell
        return ""


def _date_spellings(date: str) -> list[str]:
    digits = "".join(c for c in date if c.isdigit())
    if len(digits) != 8:
        return []
    y, m, d = digits[:4], digits[4:6], digits[6:]
    month = _MONTHS[int(m) - 1] if 1 <= int(m) <= 12 else m
    return [y + m + d, d + m + y, m + d + y, d + month + y, d + m + y[2:], m + d + y[2:]]


def plan_pixels(
    source: Path,
    as_sent: PixelsAsSent,
    finder: Finder | None = None,
    *,
    check_only: bool = False,
    reader: Reader | None = None,
) -> PixelPlan:
    """Look at every frame of the object at `source` (up to the first text, `check_only`).

    Raises TextRemains when text is still found after blanking, PixelError when the
    pixels do not decode or could not be re-encoded.
    """
    layout = as_sent.layout
    stray: list[bool] = []
    report = survey(
        _frames_as_looked_at(source, layout, stray),
        layout,
        finder or shared_finder(),
        fixed=as_sent.boxes,
        check_only=check_only,
        view=_palette(source) if layout.photometric == "PALETTE COLOR" else None,
        reader=reader or shared_reader(),
        words=as_sent.words,
    )
    output = output_layout(layout) if report.regions or any(stray) else None
    rules = as_sent.rules if report.regions else []
    return PixelPlan(source, layout, report, rules, output, stray_bits=any(stray))


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


def _frames_as_looked_at(
    source: Path, layout: Layout, stray: list[bool] | None = None
) -> Iterator[np.ndarray]:
    """The frames decoded as stored, then cleared here of bits outside BitsStored: what a
    compressed stream holds there (a retired overlay) is seen (noted in `stray`), and the
    frames are re-encoded without it. Both passes over the frames read them so."""
    for frame in iter_frames(source, as_stored=True):
        frame, found = without_stray_bits(frame, layout)
        if stray is not None and found:
            stray.append(True)
        yield frame


def without_stray_bits(frame: np.ndarray, layout: Layout) -> tuple[np.ndarray, bool]:
    """A frame decoded `as_stored` with the bits outside BitsStored cleared (signed values
    sign-extended), and whether any was set: a retired overlay kept in the high bits."""
    stored = layout.bits_stored
    if frame.dtype.kind not in "iu" or stored >= frame.dtype.itemsize * 8:
        return frame, False
    if not frame.dtype.isnative:  # big endian words: compared and cleared as numbers
        frame = frame.astype(frame.dtype.newbyteorder("="))
    unsigned = frame.view(np.dtype(f"u{frame.dtype.itemsize}"))
    mask = (1 << stored) - 1
    kept = unsigned & mask
    if layout.signed:
        sign = 1 << (stored - 1)
        corrected = ((kept ^ sign).astype(np.int64) - sign).astype(frame.dtype)
    else:
        corrected = kept.astype(frame.dtype)
    stray = not np.array_equal(corrected, frame)
    return (corrected if stray else frame), stray
