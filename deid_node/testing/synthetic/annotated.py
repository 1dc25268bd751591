"""Ultrasound and secondary captures with real burned-in text, as scanners draw it.

The text is rendered with a TrueType font (DejaVu Sans from Debian's fonts-dejavu-core,
Pillow's own bitmap font where it is missing): the patient's name and ID, the hospital,
the date. What is drawn, and where, is returned so that tests can look for it after
cleaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from deid_node.testing.synthetic.captures import secondary_capture, us_multiframe
from deid_node.testing.synthetic.patient import SyntheticPatient

__all__ = ["DEJAVU", "Drawn", "annotated_capture", "annotated_ultrasound", "draw_text"]

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class Drawn:
    """One text drawn into a frame: where (left, top, right, bottom) and what."""

    box: tuple[int, int, int, int]
    text: str


def _font(size: int | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if size is None or not DEJAVU.exists():
        return ImageFont.load_default()
    return ImageFont.truetype(str(DEJAVU), size)


def draw_text(
    frame: np.ndarray, texts: Sequence[tuple[tuple[int, int], str, int | None, object]]
) -> tuple[np.ndarray, list[Drawn]]:
    """The frame with each (position, text, font size or None, fill) drawn on it."""
    img = Image.fromarray(frame)
    pen = ImageDraw.Draw(img)
    drawn = []
    for (x, y), text, size, fill in texts:
        face = _font(size)
        pen.text((x, y), text, fill=fill, font=face)  # type: ignore[arg-type]
        left, top, right, bottom = pen.textbbox((x, y), text, font=face)
        drawn.append(Drawn((int(left), int(top), int(right), int(bottom)), text))
    return np.asarray(img).copy(), drawn


def _region(ds: Dataset, box: tuple[int, int, int, int]) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = box[0], box[1]
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box[2] - 1, box[3] - 1
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    item.PhysicalDeltaX = item.PhysicalDeltaY = 0.02
    return item


def annotated_ultrasound(
    patient: SyntheticPatient,
    *,
    frames: int = 3,
    text_frames: Sequence[int] | None = None,
    rows: int = 480,
    cols: int = 640,
    burned_in: str | None = "YES",
    seed: int = 0,
) -> tuple[Dataset, dict[int, list[Drawn]]]:
    """An RGB ultrasound cine whose frames carry the patient's name, ID and hospital.

    The banner (name, ID, date) is across the top, the hospital at the bottom left inside
    the image, a measurement in yellow beside the fan. `text_frames` (default: all) say
    which frames carry text. Returns the dataset and what was drawn in each frame.
    """
    ds = us_multiframe(patient, frames, rows, cols, burned_in=None, seed=seed)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    fan = (cols // 6, rows // 8, cols - cols // 6, rows - rows // 10)
    ds.SequenceOfUltrasoundRegions = [_region(ds, fan)]
    hospital = patient.tokens.new_token("burned-in institution")
    when = str(ds.StudyDate)
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(frames, rows, cols, 3).copy()
    drawn: dict[int, list[Drawn]] = {}
    wanted = range(frames) if text_frames is None else text_frames
    white = (255, 255, 255)
    banner = f"{patient.family} {patient.given}  {patient.patient_id}"
    for f in wanted:
        texts = [
            ((8, 6), banner, 18, white),
            ((cols - 200, 6), f"{when[:4]}-{when[4:6]}-{when[6:]}", 16, white),
            ((fan[0] + 12, fan[3] - 40), f"{hospital} HOSPITAL", 16, (240, 240, 240)),
            ((8, rows // 2), "DIST 4.2cm", None, (255, 255, 0)),
        ]
        pixels[f], drawn[f] = draw_text(pixels[f], texts)
    ds.PixelData = pixels.tobytes()
    return ds, drawn


def annotated_capture(
    patient: SyntheticPatient,
    *,
    rows: int = 480,
    cols: int = 640,
    burned_in: str | None = None,
    seed: int = 0,
) -> tuple[Dataset, list[Drawn]]:
    """A MONOCHROME2 secondary capture (a screen save) with the patient's name on it."""
    ds = secondary_capture(patient, None, rows=rows, cols=cols, seed=seed)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    frame = np.frombuffer(ds.PixelData, np.uint8).reshape(rows, cols).copy()
    frame, drawn = draw_text(
        frame,
        [
            ((20, 20), f"{patient.family}^{patient.given}", 20, 255),
            ((20, rows - 40), f"ID {patient.patient_id}", 16, 250),
        ],
    )
    ds.PixelData = frame.tobytes()
    return ds, drawn
