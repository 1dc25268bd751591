"""One file in, one outcome out: read, de-identify, verify, write. No sockets, no SQL."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from deid_node.engine import DeidResult, Originals, deidentify_dataset, verify_clean
from deid_node.errors import DeidError, StorageError
from deid_node.profiles import CompiledProfile
from deid_node.storage import encode_instance, output_path, write_atomic


class Status(StrEnum):
    """Outcome of one object, as recorded in the audit `status` column."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    SKIPPED = "skipped"  # offline only: not a DICOM file


@dataclass(frozen=True)
class Outcome:
    """What happened to one object; everything here is safe to log except `originals`."""

    status: Status
    reason: str | None = None
    size_bytes: int = 0
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    pseudo_patient_id: str | None = None
    pseudo_study_uid: str | None = None
    pseudo_series_uid: str | None = None
    pseudo_sop_uid: str | None = None
    output_path: Path | None = None
    originals: Originals | None = None


class NotDicomError(DeidError):
    """The file is not a DICOM dataset at all."""


def _read(source: Path | BinaryIO, *, force: bool = False) -> Dataset:
    # pydicom reports a premature end of data only as a warning and returns what it
    # parsed; a partial object must never pass for a whole one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dcmread(source, force=force)
    for w in caught:
        text = str(w.message).lower()
        if "end of file" in text or "unexpected end" in text:
            raise DeidError("truncated object: data ends before its declared length")
    return ds


def read_dataset(path: Path | BinaryIO) -> Dataset:
    """Read a Part-10 file (or a bare dataset with SOP UIDs); DeidError if unreadable."""
    try:
        ds = _read(path)
        _check_pixel_length(ds)
        return ds
    except DeidError:
        raise
    except InvalidDicomError:
        pass
    except Exception as exc:  # truncated, bad lengths: the message may quote values
        raise DeidError(f"unreadable DICOM ({type(exc).__name__})") from None
    try:
        if not isinstance(path, Path):
            path.seek(0)
        ds = _read(path, force=True)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds and len(ds) > 2:
            ds.SOPClassUID  # noqa: B018 - force conversion: garbage fails here
            return ds
    except DeidError:
        raise
    except Exception:
        pass
    raise NotDicomError("not a DICOM file")


def _check_pixel_length(ds: Dataset) -> None:
    """Native pixel data shorter than its geometry means a truncated object."""
    elem = ds.get_item(0x7FE00010) if 0x7FE00010 in ds else None
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if elem is None or elem.value is None or (ts is not None and UID(ts).is_compressed):
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = ds.Rows * ds.Columns * frames * ds.SamplesPerPixel * ds.BitsAllocated
    except Exception:
        return  # geometry missing or odd: the IOD check is not ours to make here
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected * 2 // 3  # two chroma samples shared by each pixel pair
    if len(elem.value) * 8 < expected:
        raise DeidError("truncated pixel data")


def deidentify_to_output(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    verify: bool = True,
) -> tuple[DeidResult, Path, bool]:
    """De-identify ds and write it; returns (result, path, was it already there)."""
    result = deidentify_dataset(ds, profile, key)
    target = output_path(
        output_root,
        profile.name,
        result.pseudo_patient_id,
        result.pseudo_study_uid,
        result.pseudo_series_uid,
        result.pseudo_sop_uid,
    )

    def check(header: bytes) -> None:
        if verify:
            verify_clean(header, result.verify_patterns)

    try:
        chunks = encode_instance(result.dataset, check)
    except DeidError:
        raise
    except Exception as exc:
        raise DeidError(f"cannot encode the de-identified object ({type(exc).__name__})") from None
    existed = target.exists()
    write_atomic(target, chunks, fsync=fsync)
    return result, target, existed


def process_file(
    path: Path,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    verify: bool = True,
) -> Outcome:
    """De-identify one file into the output layout; never raises for bad input."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}")
    try:
        ds = read_dataset(path)
    except NotDicomError as exc:
        return Outcome(Status.SKIPPED, str(exc), size_bytes=size)
    except DeidError as exc:
        return Outcome(Status.QUARANTINED, str(exc), size_bytes=size)
    return process_dataset(ds, profile, key, output_root, size=size, fsync=fsync, verify=verify)


def process_dataset(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    size: int,
    fsync: bool = False,
    verify: bool = True,
) -> Outcome:
    """De-identify an already-read dataset; quarantine outcome on any doubt."""
    sop_class = str(ds.get("SOPClassUID", "") or "") or None
    ts = None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        ts = str(meta.TransferSyntaxUID)
    try:
        result, target, existed = deidentify_to_output(
            ds, profile, key, output_root, fsync=fsync, verify=verify
        )
    except DeidError as exc:
        return Outcome(
            Status.QUARANTINED,
            str(exc),
            size_bytes=size,
            sop_class_uid=sop_class,
            transfer_syntax_uid=ts,
        )
    except StorageError:
        raise  # the node must stop acknowledging, not quarantine: output is broken
    except Exception as exc:  # fail closed on anything we did not foresee
        return Outcome(
            Status.QUARANTINED,
            f"internal error ({type(exc).__name__})",
            size_bytes=size,
            sop_class_uid=sop_class,
            transfer_syntax_uid=ts,
        )
    return Outcome(
        Status.DUPLICATE if existed else Status.STORED,
        None,
        size_bytes=size,
        sop_class_uid=result.sop_class_uid,
        transfer_syntax_uid=result.transfer_syntax_uid,
        pseudo_patient_id=result.pseudo_patient_id,
        pseudo_study_uid=result.pseudo_study_uid,
        pseudo_series_uid=result.pseudo_series_uid,
        pseudo_sop_uid=result.pseudo_sop_uid,
        output_path=target,
        originals=result.originals,
    )
