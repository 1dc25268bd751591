"""One file in, one outcome out: read, de-identify, verify, write. No sockets, no SQL."""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from deid_node.deid.engine import (
    DeidResult,
    Originals,
    deidentify_dataset,
    transfer_syntax_of,
    verify_clean,
)
from deid_node.deid.profiles import CompiledProfile
from deid_node.dicom.encoding import check_file
from deid_node.dicom.part10 import FileRange, encode_instance, output_path, write_atomic
from deid_node.errors import DeidError, StorageError

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})


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


def _read(source: Path | BinaryIO, *, force: bool = False, header_only: bool = False) -> Dataset:
    # pydicom reports a premature end of data only as a warning and returns what it
    # parsed; a partial object must never pass for a whole one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dcmread(source, force=force, stop_before_pixels=header_only)
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


def read_header(path: Path) -> tuple[Dataset, FileRange | None]:
    """Read everything before the pixel data; the pixel data element stays on disk.

    Returns the dataset and the byte range of the pixel data element (header included)
    to copy through unchanged, or (whole dataset, None) where that is not possible:
    no pixel data, a deflated body, or elements after the pixel data.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            ds = _read(fh, header_only=True)
            at = fh.tell()
    except DeidError:
        raise
    except Exception:
        return read_dataset(path), None  # bare datasets, odd files: the careful path
    ts = transfer_syntax_of(ds)
    if ts.is_deflated:  # the file position says nothing inside a zlib stream
        return read_dataset(path), None
    if at >= size:
        return ds, None
    with path.open("rb") as fh:
        end, length = _element_end(fh, at, size, ts)
    if end < size:
        return read_dataset(path), None  # trailing elements must go through the profile
    if length is not None:
        _check_pixel_length(ds, length, ts)
    return ds, FileRange(path, at, size - at)


def _element_end(fh: BinaryIO, at: int, size: int, ts: UID) -> tuple[int, int | None]:
    """End offset of the pixel data element at `at`, and its value length if defined."""
    endian = "<" if ts.is_little_endian else ">"
    fh.seek(at)
    head = fh.read(12)
    if len(head) < 8:
        raise DeidError("truncated object: pixel data element header cut off")
    if ts.is_implicit_VR:
        length, header = struct.unpack(endian + "L", head[4:8])[0], 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            raise DeidError("truncated object: pixel data element header cut off")
        length, header = struct.unpack(endian + "L", head[8:12])[0], 12
    else:
        length, header = struct.unpack(endian + "H", head[6:8])[0], 8
    pos = at + header
    if length != _UNDEFINED:
        if pos + length > size:
            raise DeidError("truncated pixel data")
        return pos + length, length
    # Encapsulated: items up to the sequence delimiter, each skipped, never loaded.
    while True:
        fh.seek(pos)
        item = fh.read(8)
        if len(item) < 8:
            raise DeidError("truncated pixel data: no sequence delimiter")
        group, elem, item_len = struct.unpack(endian + "HHL", item)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos, None
        if (group, elem) != (0xFFFE, 0xE000) or item_len == _UNDEFINED:
            raise DeidError("malformed encapsulated pixel data")
        pos += item_len
        if pos > size:
            raise DeidError("truncated pixel data")


def _check_pixel_length(ds: Dataset, length: int | None = None, ts: UID | None = None) -> None:
    """Native pixel data shorter than its geometry means a truncated object."""
    if length is None:
        elem = ds.get_item(0x7FE00010) if 0x7FE00010 in ds else None
        if elem is None or elem.value is None:
            return
        length = len(elem.value)
        meta = getattr(ds, "file_meta", None)
        found = meta.get("TransferSyntaxUID") if meta is not None else None
        ts = UID(str(found)) if found else None
    if ts is not None and ts.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = ds.Rows * ds.Columns * frames * ds.SamplesPerPixel * ds.BitsAllocated
    except Exception:
        return  # geometry missing or odd: the IOD check is not ours to make here
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected * 2 // 3  # two chroma samples shared by each pixel pair
    if length * 8 < expected:
        raise DeidError("truncated pixel data")


def deidentify_to_output(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    verify: bool = True,
    pixels: FileRange | None = None,
) -> tuple[DeidResult, Path, bool]:
    """De-identify ds and write it (pixel bytes copied from `pixels`, if given).

    Returns (result, path, was it already there).
    """
    result = deidentify_dataset(ds, profile, key, has_pixels=True if pixels else None)
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
            verify_clean(header, result.needles, result.dataset)

    try:
        chunks = encode_instance(result.dataset, check)
    except DeidError:
        raise
    except Exception as exc:
        raise DeidError(f"cannot encode the de-identified object ({type(exc).__name__})") from None
    existed = write_atomic(target, [*chunks, pixels] if pixels else chunks, fsync=fsync)
    return result, target, existed


def process_file(
    path: Path,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    verify: bool = True,
    check_encoding: bool = True,
) -> Outcome:
    """De-identify one file into the output layout; never raises for bad input.

    `check_encoding=False` skips the strict encoding check, for files that passed it
    already (the node checks every object before acknowledging it).
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}")
    try:
        ds, pixels = read_header(path)
        if check_encoding:
            check_file(path)
    except NotDicomError as exc:
        return Outcome(Status.SKIPPED, str(exc), size_bytes=size)
    except DeidError as exc:
        return Outcome(Status.QUARANTINED, str(exc), size_bytes=size)
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}", size_bytes=size)
    return process_dataset(
        ds, profile, key, output_root, size=size, fsync=fsync, verify=verify, pixels=pixels
    )


def process_dataset(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    size: int,
    fsync: bool = False,
    verify: bool = True,
    pixels: FileRange | None = None,
) -> Outcome:
    """De-identify an already-read dataset; quarantine outcome on any doubt."""
    sop_class = str(ds.get("SOPClassUID", "") or "") or None
    ts = None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        ts = str(meta.TransferSyntaxUID)
    try:
        result, target, existed = deidentify_to_output(
            ds, profile, key, output_root, fsync=fsync, verify=verify, pixels=pixels
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
