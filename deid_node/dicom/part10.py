"""Part-10 files: reading (up to the pixel data, which stays on disk) and encoding."""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.dicom.elements import UNDEFINED, skip_fragments, syntax_of
from deid_node.dicom.pydicom_compat import element_dict
from deid_node.durable import FileRange
from deid_node.errors import DeidError

_TAIL_START = 0x7FE00008  # float/double pixel data, pixel data and what follows them
# Float, double float and integer pixel data: the only elements verification never reads.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _verified(tag: int) -> bool:
    """Whether verification reads this element: all but the pixel data itself."""
    return tag not in PIXEL_DATA_TAGS


def encode_instance(
    ds: Dataset, check_header: Callable[[bytes], None] | None = None
) -> list[bytes]:
    """Encode ds as Part-10 in its own transfer syntax, as chunks to write in order.

    `check_header` gets the header (everything before the pixel data) and whatever
    follows the pixel data, so verification reads every element but the pixel bytes.
    """
    # ds.keys(), not ds: iterating a Dataset converts every element's value
    if ds.file_meta.TransferSyntaxUID.is_deflated:
        return _encode_deflated(ds, check_header)
    tail_tags = [t for t in ds.keys() if int(t) >= _TAIL_START]  # noqa: SIM118
    tail = [ds.get_item(t) for t in tail_tags]
    for t in tail_tags:
        del ds[t]
    try:
        head = BytesIO()
        dcmwrite(head, ds, enforce_file_format=True)
        header = head.getvalue()
        chunks = [header]
        after = b""  # the elements after the pixel data, encoded
        if tail:
            ts = ds.file_meta.TransferSyntaxUID
            fp = DicomBytesIO()
            fp.is_little_endian = ts.is_little_endian
            fp.is_implicit_VR = ts.is_implicit_VR
            spans = []
            for elem in tail:
                at = fp.tell()
                write_data_element(fp, elem)
                if _verified(int(elem.tag)):
                    spans.append((at, fp.tell()))
            encoded = fp.getvalue()
            chunks.append(encoded)
            after = b"".join(encoded[a:b] for a, b in spans)
    finally:
        for t, elem in zip(tail_tags, tail, strict=True):
            element_dict(ds)[t] = elem
    if check_header is not None:  # with the tail back: a hit is looked up in all of ds
        check_header(header + after if after else header)
    return chunks


def _encode_deflated(ds: Dataset, check_header: Callable[[bytes], None] | None) -> list[bytes]:
    # A deflated body is one zlib stream, so it cannot be written in pieces; verify an
    # uncompressed copy of the header instead (rare transfer syntax, small objects).
    if check_header is not None:
        # A new Dataset, not ds.copy(): a shallow copy shares the element dict.
        header = Dataset({t: ds.get_item(t) for t in ds.keys() if _verified(int(t))})  # noqa: SIM118
        plain = BytesIO()
        dcmwrite(plain, header, implicit_vr=False, little_endian=True)
        check_header(plain.getvalue())
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return [buf.getvalue()]


def transfer_syntax_of(ds: Dataset) -> UID:
    """The transfer syntax the dataset arrived in."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian


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
        check_pixel_length(ds)
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
    end, length = _element_end(path, at, size, ts)
    if end < size:
        return read_dataset(path), None  # trailing elements must go through the profile
    if length is not None:
        check_pixel_length(ds, length, ts)
    return ds, FileRange(path, at, size - at)


def _element_end(path: Path, at: int, size: int, ts: UID) -> tuple[int, int | None]:
    """End offset of the pixel data element at `at`, and its value length if defined."""
    syntax = syntax_of(ts)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        end = min(size, len(buf))
        _, _, length, vpos = syntax.read_header(buf, at, end)
        if length != UNDEFINED:
            if vpos + length > end:
                raise DeidError("truncated pixel data")
            return vpos + length, length
        # Encapsulated: fragments up to the sequence delimiter, never loaded.
        return skip_fragments(buf, vpos, end, syntax), None


def check_pixel_length(ds: Dataset, length: int | None = None, ts: UID | None = None) -> None:
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
