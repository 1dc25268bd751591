"""Ultrasound multi-frame and secondary capture images, with a burned-in banner on request."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundMultiFrameImageStorage

from deid_node.testing.synthetic.patient import (
    SyntheticPatient,
    equipment,
    new_dataset,
    patient_and_study,
    study_of,
)

__all__ = ["secondary_capture", "us_multiframe"]


def _burn_banner(pixels: npt.NDArray[np.uint8], value: int | Sequence[int]) -> None:
    """Marks a text-like banner at the top left, as burned-in annotations look."""
    h, w = pixels.shape[0], pixels.shape[1]
    bar = max(3, h // 10)
    for k in range(0, w // 2, 4):
        pixels[1 : 1 + bar, k : k + 2] = value


def us_multiframe(
    patient: SyntheticPatient,
    frames: int = 3,
    rows: int = 48,
    cols: int = 64,
    burned_in: str | None = None,
    *,
    study_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Ultrasound Multi-frame Image Storage, RGB 8-bit; BurnedInAnnotation only when given."""
    tokens = patient.tokens
    study = study_of(patient, study_uid, seed, "US ABDOMEN")
    sop_uid = tokens.new_uid("SOPInstanceUID", "us", study.uid, seed)
    ds = new_dataset(UltrasoundMultiFrameImageStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    patient_and_study(ds, patient, study)
    ds.Modality = "US"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "us series", sop_uid)
    ds.SeriesNumber = 1
    equipment(ds, tokens, model="Synthetica Sono")
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = study.date
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(11, 0))
    tokens.record(study.date, "ContentDate", "date")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "33.3"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    fan = (np.hypot(x - cols / 2, y) < 0.95 * rows) & (np.abs(x - cols / 2) < y + 2)
    pixels = np.zeros((frames, rows, cols, 3), dtype=np.uint8)
    for f in range(frames):
        speckle = rng.gamma(2.0, 40.0, size=(rows, cols)).clip(0, 255).astype(np.uint8)
        for c in range(3):
            pixels[f, :, :, c] = np.where(fan, speckle, 0)
        if burned_in is not None and burned_in.upper() == "YES":
            _burn_banner(pixels[f], [255, 255, 0])
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def secondary_capture(
    patient: SyntheticPatient,
    burned_in: str | None = None,
    *,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> Dataset:
    """Secondary Capture Image Storage, MONOCHROME2 8-bit; BurnedInAnnotation only when given."""
    tokens = patient.tokens
    study = study_of(patient, study_uid, seed, "SCREEN CAPTURE")
    sop_uid = tokens.new_uid("SOPInstanceUID", "sc", study.uid, seed)
    ds = new_dataset(SecondaryCaptureImageStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    patient_and_study(ds, patient, study)
    ds.Modality = "OT"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "sc series", sop_uid)
    ds.SeriesNumber = 300
    ds.ConversionType = "WSD"
    equipment(ds, tokens, model="Synthetica Workstation")
    ds.SecondaryCaptureDeviceManufacturer = "ACME Medical Systems"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = study.date
    tokens.record(study.date, "ContentDate", "date")
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(12, 0))
    ds.DateOfSecondaryCapture = study.date
    tokens.record(study.date, "DateOfSecondaryCapture", "date")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    pixels = ((x + y) * 255 // max(rows + cols - 2, 1)).astype(np.uint8)
    pixels = np.clip(pixels + rng.integers(0, 8, size=(rows, cols)), 0, 255).astype(np.uint8)
    if burned_in is not None and burned_in.upper() == "YES":
        _burn_banner(pixels, 255)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds
