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
from pydicom.uid import MRImageStorage

from deid_node.testing.synthetic.captures import secondary_capture, us_multiframe
from deid_node.testing.synthetic.ct import ct_series
from deid_node.testing.synthetic.patient import SyntheticPatient

__all__ = [
    "DEJAVU",
    "Drawn",
    "annotated_capture",
    "annotated_slice",
    "annotated_ultrasound",
    "draw_text",
    "overlay_in_high_bits",
    "text_mask",
]

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


def text_mask(
    shape: tuple[int, int], texts: Sequence[tuple[tuple[int, int], str, int | None]], angle: int = 0
) -> tuple[np.ndarray, list[Drawn]]:
    """A boolean mask of each (position, text, font size) drawn, turned by `angle` degrees.

    `angle` is 0, 90, 180 or 270 (counter-clockwise); the boxes of what was drawn are
    turned with the mask, so they are where the text is in the returned mask.
    """
    rows, cols = shape
    turns = (angle // 90) % 4
    drawn_shape = (cols, rows) if turns % 2 else (rows, cols)
    canvas, drawn = draw_text(
        np.zeros(drawn_shape, np.uint8), [(at, text, size, 255) for at, text, size in texts]
    )
    mask = np.rot90(canvas > 0, turns).copy()
    boxes = []
    h, w = drawn_shape
    for d in drawn:
        left, top, right, bottom = d.box
        for _ in range(turns):  # (x, y) -> (y, w - x) for each quarter turn
            left, top, right, bottom = top, w - right, bottom, w - left
            h, w = w, h
        h, w = drawn_shape
        boxes.append(Drawn((left, top, right, bottom), d.text))
    return mask, boxes


def annotated_slice(
    patient: SyntheticPatient,
    *,
    modality: str = "CT",
    image_type: Sequence[str] = ("DERIVED", "SECONDARY"),
    burned_in: str | None = None,
    size: int = 256,
    angle: int = 0,
    font: int | None = 14,
    value: int | None = None,
    seed: int = 0,
) -> tuple[Dataset, list[Drawn]]:
    """A CT (or MR) slice saved from a screen: the patient's name and ID drawn on it.

    16-bit words, 12 bits stored; the text is drawn at `value` (default: the brightest
    value stored) and turned by `angle` degrees. BurnedInAnnotation only when given.
    """
    ds = ct_series(1, patient=patient, rows=size, cols=size, seed=seed)[0]
    if modality == "MR":
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality = "MR"
        for keyword in ("KVP", "XRayTubeCurrent", "ExposureTime", "RescaleType"):
            delattr(ds, keyword)
    ds.ImageType = list(image_type)
    if burned_in is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = burned_in
    frame = np.frombuffer(ds.PixelData, np.uint16).reshape(size, size).copy()
    mask, drawn = text_mask(
        (size, size),
        [((6, 6), f"{patient.family}^{patient.given}", font), ((6, 28), patient.patient_id, font)],
        angle,
    )
    frame[mask] = 4095 if value is None else value
    ds.PixelData = frame.tobytes()
    return ds, drawn


def overlay_in_high_bits(
    patient: SyntheticPatient, *, bit: int = 12, size: int = 128, seed: int = 0
) -> tuple[Dataset, np.ndarray]:
    """An ORIGINAL CT slice whose name sits in bit `bit` of the pixel words (retired form).

    The overlay plane is described by a 60xx group without OverlayData (OverlayBitPosition
    says where), as equipment did before overlays moved out of the pixel data. Returns
    the dataset and the words as they are inside BitsStored (what must be kept).
    """
    ds = ct_series(1, patient=patient, rows=size, cols=size, seed=seed)[0]
    frame = np.frombuffer(ds.PixelData, np.uint16).reshape(size, size).copy()
    mask, _ = text_mask(
        (size, size), [((4, 4), patient.family, 16), ((4, 40), patient.patient_id, 16)]
    )
    kept = frame & 0x0FFF
    ds.PixelData = (kept | (mask.astype(np.uint16) << bit)).tobytes()
    ds.add_new(0x60000010, "US", size)  # OverlayRows
    ds.add_new(0x60000011, "US", size)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated (retired form: 16 in the words)
    ds.add_new(0x60000102, "US", bit)  # OverlayBitPosition
    return ds, kept
