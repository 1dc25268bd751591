"""Synthetic CT series: axial slices of a noisy body phantom, valid per dciodvfy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.uid import CTImageStorage

from deid_node.testing.synthetic.patient import (
    Study,
    SyntheticPatient,
    new_dataset,
    patient_and_study,
    study_of,
)

__all__ = ["ct_series", "iter_ct_series"]


def _phantom(rows: int, cols: int, rng: np.random.Generator, z: float) -> npt.NDArray[np.uint16]:
    """A CT slice (stored values, HU + 1024): air, an elliptical body, a bone ring, noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    r = np.hypot((x - cx) / (0.42 * cols), (y - cy) / (0.34 * rows))
    scale = 1.0 - 0.15 * np.sin(z / 40.0) ** 2
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    hu[r < scale] = 40.0
    hu[(r > 0.8 * scale) & (r < 0.88 * scale)] = 700.0
    lesion = np.hypot(x - cx - 0.1 * cols, y - cy) < 0.05 * cols
    hu[lesion & (r < scale)] = 90.0
    hu += rng.normal(0.0, 12.0, size=(rows, cols)).astype(np.float32)
    stored: npt.NDArray[np.uint16] = np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)
    return stored


def ct_series(
    n: int,
    *,
    patient: SyntheticPatient,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> list[Dataset]:
    """``n`` axial CT slices of one series (CT Image Storage, 16-bit, Explicit VR LE).

    Same Study/Series/FrameOfReference UID, InstanceNumber 1..n, 2.5 mm slices, pixel values
    of a noisy body phantom (12 bits stored, RescaleIntercept -1024).  Identifying values
    (patient, dates, times, accession, station, institution, operator, UIDs) are tokens of
    ``patient.tokens``.  Valid per dciodvfy.
    """
    return list(
        iter_ct_series(n, patient=patient, study_uid=study_uid, rows=rows, cols=cols, seed=seed)
    )


def iter_ct_series(
    n: int,
    *,
    patient: SyntheticPatient,
    study_uid: str | None = None,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
) -> Iterator[Dataset]:
    """Like :func:`ct_series`, one slice at a time (for series too large to hold in memory)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    if rows < 8 or cols < 8:
        raise ValueError("rows and cols must be >= 8")
    tokens = patient.tokens
    study = study_of(patient, study_uid, seed, "CT CHEST WITH CONTRAST")
    series_uid = tokens.new_uid("SeriesInstanceUID", "ct series", study.uid, seed)
    series = _CTSeries(
        uid=series_uid,
        frame_uid=tokens.new_uid("FrameOfReferenceUID", "ct frame", series_uid),
        time=tokens.new_time("SeriesTime", start=dt.time(9, 15)),
        operator=tokens.new_name("OperatorsName"),
        station=tokens.new_token("StationName"),
        serial=tokens.new_token("DeviceSerialNumber", "id"),
    )
    return _ct_slices(n, patient, study, series, rows, cols, seed)


@dataclass(frozen=True)
class _CTSeries:
    uid: str
    frame_uid: str
    time: str
    operator: str
    station: str
    serial: str


def _ct_slices(
    n: int,
    patient: SyntheticPatient,
    study: Study,
    series: _CTSeries,
    rows: int,
    cols: int,
    seed: int,
) -> Iterator[Dataset]:
    tokens = patient.tokens
    series_uid, frame_uid = series.uid, series.frame_uid
    series_date, series_time = study.date, series.time
    operator, station, serial = series.operator, series.station, series.serial
    thickness = 2.5
    spacing = 300.0 / max(rows, cols)
    rng = np.random.default_rng(seed)
    for i in range(n):
        z = -thickness * i
        sop_uid = tokens.new_uid("SOPInstanceUID", "ct slice", series_uid, i)
        ds = new_dataset(CTImageStorage, sop_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceCreationDate = series_date
        ds.InstanceCreationTime = series_time
        patient_and_study(ds, patient, study)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 2
        ds.SeriesDate = series_date
        ds.SeriesTime = series_time
        ds.SeriesDescription = "AXIAL 2.5MM"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.OperatorsName = operator
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "ACME Medical Systems"
        ds.ManufacturerModelName = "Synthetica CT 64"
        ds.DeviceSerialNumber = serial
        ds.StationName = station
        ds.SoftwareVersions = "SYN 1.0"
        ds.AcquisitionNumber = 1
        ds.AcquisitionDate = series_date
        ds.AcquisitionTime = series_time
        ds.ContentDate = series_date
        ds.ContentTime = series_time
        ds.InstanceNumber = i + 1
        ds.PatientOrientation = ""
        ds.ImagePositionPatient = [f"{-spacing * (cols - 1) / 2:.4f}", "-150.0", f"{z:.2f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.2f}"
        ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
        ds.SliceThickness = f"{thickness}"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = f"{spacing * cols:.1f}"
        ds.XRayTubeCurrent = 250
        ds.ExposureTime = 500
        ds.ConvolutionKernel = "STANDARD"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = _phantom(rows, cols, rng, z).tobytes()
        ds["PixelData"].VR = "OW"
        for path, value, kind in [
            ("file_meta.MediaStorageSOPInstanceUID", sop_uid, "uid"),
            ("AcquisitionDate", series_date, "date"),
            ("ContentDate", series_date, "date"),
            ("SeriesDate", series_date, "date"),
            ("InstanceCreationDate", series_date, "date"),
            ("AcquisitionTime", series_time, "date"),
            ("ContentTime", series_time, "date"),
            ("InstanceCreationTime", series_time, "date"),
        ]:
            tokens.record(value, path, kind)
        yield ds
