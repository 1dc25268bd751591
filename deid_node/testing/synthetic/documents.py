"""Synthetic non-image objects: an RT Structure Set over a CT series, a Basic Text SR report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.uid import BasicTextSRStorage, RTStructureSetStorage

from deid_node.testing.synthetic.patient import (
    SyntheticPatient,
    code_item,
    equipment,
    new_dataset,
    patient_and_study,
    study_of,
    tokens_of_study,
)
from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = ["rt_structure_set", "sr_document"]


def rt_structure_set(ct: Sequence[Dataset], *, tokens: PhiTokens | None = None) -> Dataset:
    """RT Structure Set referencing every slice of the CT series ``ct`` (same patient/study).

    Two ROIs (BODY and GTV) with one closed planar contour per slice.  New identifying values
    (operator, ROI interpreter, dates, UIDs) are planted as tokens of ``tokens``, by default the
    registry of the patient the CT series was made for.
    """
    if not ct:
        raise ValueError("rt_structure_set needs at least one CT slice")
    first = ct[0]
    if tokens is None:
        tokens = tokens_of_study(str(first.StudyInstanceUID)) or PhiTokens(start=90_000)
    sop_uid = tokens.new_uid("SOPInstanceUID", "rtstruct", first.SeriesInstanceUID)
    ds = new_dataset(RTStructureSetStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "StudyDescription",
        "InstitutionName",
    ):
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "rtstruct series", sop_uid)
    ds.SeriesNumber = 90
    ds.SeriesDescription = "Structure set"
    ds.OperatorsName = tokens.new_name("OperatorsName")
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = "Synthetica Contour"
    ds.StationName = tokens.new_token("StationName")
    ds.SoftwareVersions = "SYN 1.0"
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "SYN_RS"
    ds.StructureSetName = "Synthetic structures"
    ds.StructureSetDate = tokens.new_date("StructureSetDate", start=dt.date(2024, 2, 1))
    ds.StructureSetTime = tokens.new_time("StructureSetTime", start=dt.time(16, 0))

    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(ct)]
    _add_rois(ds, ct, tokens)
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _referenced_frame(ct: Sequence[Dataset]) -> Dataset:
    """The Referenced Frame of Reference item: the CT's study, series and every slice."""
    first = ct[0]
    contour_images = []
    for sl in ct:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sl.SOPClassUID
        ref.ReferencedSOPInstanceUID = sl.SOPInstanceUID
        contour_images.append(ref)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = contour_images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Mgmt (retired)
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = [study_ref]
    return frame_ref


def _ellipse(sl: Dataset, cx: float, cy: float, ax: float, ay: float) -> Dataset:
    """A closed planar contour on one slice: 16 points of an ellipse."""
    z = float(sl.ImagePositionPatient[2])
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    points = []
    for a in angles:
        points += [f"{cx + ax * np.cos(a):.2f}", f"{cy + ay * np.sin(a):.2f}", f"{z:.2f}"]
    img = Dataset()
    img.ReferencedSOPClassUID = sl.SOPClassUID
    img.ReferencedSOPInstanceUID = sl.SOPInstanceUID
    contour = Dataset()
    contour.ContourImageSequence = [img]
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(angles)
    contour.ContourData = points
    return contour


def _add_rois(ds: Dataset, ct: Sequence[Dataset], tokens: PhiTokens) -> None:
    """Two ROIs, BODY and GTV, with one contour per slice and a token interpreter each."""
    first = ct[0]
    rows, cols = int(first.Rows), int(first.Columns)
    spacing = [float(v) for v in first.PixelSpacing]
    origin = [float(v) for v in first.ImagePositionPatient]
    cx = origin[0] + spacing[1] * (cols - 1) / 2
    cy = origin[1] + spacing[0] * (rows - 1) / 2
    rois = [
        (1, "BODY", "EXTERNAL", [0, 255, 0], 0.40 * cols * spacing[1], 0.32 * rows * spacing[0]),
        (2, "GTV", "GTV", [255, 0, 0], 0.05 * cols * spacing[1], 0.05 * rows * spacing[0]),
    ]
    ss_rois, roi_contours, observations = [], [], []
    for number, name, interpreted, color, ax, ay in rois:
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(roi)
        shift = 0.1 * cols * spacing[1] if name == "GTV" else 0.0
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = color
        roi_contour.ContourSequence = [_ellipse(sl, cx + shift, cy, ax, ay) for sl in ct]
        roi_contours.append(roi_contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = interpreted
        obs.ROIInterpreter = tokens.new_name(
            f"RTROIObservationsSequence[{number - 1}].ROIInterpreter"
        )
        observations.append(obs)
    ds.StructureSetROISequence = ss_rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations


def sr_document(
    patient: SyntheticPatient, study_uid: str | None = None, *, seed: int = 0
) -> Dataset:
    """A Basic Text SR report whose TEXT items mention the patient's name and ID tokens.

    Content: TEXT (history, mentions the patient), a CONTAINER of findings with TEXT, PNAME
    (observer), DATE (study date) and UIDREF (study UID) items; verified by a token observer.
    """
    tokens = patient.tokens
    study = study_of(patient, study_uid, seed, "CT CHEST WITH CONTRAST")
    sop_uid = tokens.new_uid("SOPInstanceUID", "sr", study.uid, seed)
    ds = new_dataset(BasicTextSRStorage, sop_uid)
    tokens.record(sop_uid, "file_meta.MediaStorageSOPInstanceUID", "uid")
    patient_and_study(ds, patient, study)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = tokens.new_uid("SeriesInstanceUID", "sr series", sop_uid)
    ds.SeriesNumber = 99
    ds.SeriesDescription = "Report"
    ds.ReferencedPerformedProcedureStepSequence = []
    equipment(ds, tokens, model="Synthetica Reporting")
    ds.InstanceNumber = 1
    content_date = tokens.new_date("ContentDate", start=dt.date(2024, 3, 1))
    ds.ContentDate = content_date
    ds.ContentTime = tokens.new_time("ContentTime", start=dt.time(17, 0))
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = tokens.new_name(
        "VerifyingObserverSequence[0].VerifyingObserverName"
    )
    verifier.VerifyingObserverIdentificationCodeSequence = []
    verifier.VerifyingOrganization = tokens.new_token(
        "VerifyingObserverSequence[0].VerifyingOrganization"
    )
    verifier.VerificationDateTime = tokens.new_datetime(
        "VerifyingObserverSequence[0].VerificationDateTime", start=dt.date(2024, 3, 2)
    )
    ds.VerifyingObserverSequence = [verifier]
    ds.PerformedProcedureCodeSequence = []

    def item(relationship: str, value_type: str, code: Dataset) -> Dataset:
        it = Dataset()
        it.RelationshipType = relationship
        it.ValueType = value_type
        it.ConceptNameCodeSequence = [code]
        return it

    observer = item("HAS OBS CONTEXT", "PNAME", code_item("121008", "DCM", "Person Observer Name"))
    observer.PersonName = tokens.new_name("ContentSequence[0].PersonName")
    history = item("CONTAINS", "TEXT", code_item("121060", "DCM", "History"))
    for value, kind in [
        (patient.family, "name"),
        (patient.given, "name"),
        (patient.patient_id, "id"),
        (patient.birth_date, "date"),
    ]:
        tokens.record(value, "ContentSequence[1].TextValue", kind)
    history.TextValue = (
        f"{patient.given} {patient.family} (MRN {patient.patient_id}, DOB {patient.birth_date}) "
        "presents with cough for three weeks."
    )
    findings = item("CONTAINS", "CONTAINER", code_item("121070", "DCM", "Findings"))
    findings.ContinuityOfContent = "SEPARATE"
    finding = item("CONTAINS", "TEXT", code_item("121071", "DCM", "Finding"))
    for value, kind in [(patient.family, "name"), (patient.patient_id, "id")]:
        tokens.record(value, "ContentSequence[2].ContentSequence[0].TextValue", kind)
    contact = tokens.new_token("ContentSequence[2].ContentSequence[0].TextValue")
    finding.TextValue = (
        f"No acute abnormality for {patient.family} ({patient.patient_id}). "
        f"Result phoned to {contact}."
    )
    findings.ContentSequence = [finding]
    date = item("HAS OBS CONTEXT", "DATE", code_item("111060", "DCM", "Study Date"))
    tokens.record(study.date, "ContentSequence[3].Date", "date")
    date.Date = study.date
    uidref = item("HAS OBS CONTEXT", "UIDREF", code_item("110180", "DCM", "Study Instance UID"))
    tokens.record(study.uid, "ContentSequence[4].UID", "uid")
    uidref.UID = study.uid
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code_item("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [observer, history, findings, date, uidref]
    return ds
