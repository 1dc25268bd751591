"""Output layout, Part-10 encoding with verification, and atomic durable writes."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element

from deid_node.errors import StorageError

_SAFE_PART = re.compile(r"[^A-Za-z0-9._-]")
_TAIL_START = 0x7FE00008  # float/double pixel data, pixel data and what follows them


def output_path(root: Path, profile: str, patient: str, study: str, series: str, sop: str) -> Path:
    """`<root>/<profile>/<patient>/<study>/<series>/<sop>.dcm` (pseudonyms only)."""
    parts = [_SAFE_PART.sub("_", p) or "_" for p in (profile, patient, study, series)]
    return root.joinpath(*parts, _SAFE_PART.sub("_", sop) + ".dcm")


def encode_instance(
    ds: Dataset, check_header: Callable[[bytes], None] | None = None
) -> list[bytes]:
    """Encode ds as Part-10 in its own transfer syntax, as chunks to write in order.

    The header (everything before the pixel data) is encoded first and handed to
    `check_header`, so verification never scans pixel bytes and pixel data is copied
    through without being decoded.
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
        if check_header is not None:
            check_header(header)
        chunks = [header]
        if tail:
            ts = ds.file_meta.TransferSyntaxUID
            fp = DicomBytesIO()
            fp.is_little_endian = ts.is_little_endian
            fp.is_implicit_VR = ts.is_implicit_VR
            for elem in tail:
                write_data_element(fp, elem)
            chunks.append(fp.getvalue())
        return chunks
    finally:
        for t, elem in zip(tail_tags, tail, strict=True):
            ds._dict[t] = elem


def _encode_deflated(ds: Dataset, check_header: Callable[[bytes], None] | None) -> list[bytes]:
    # A deflated body is one zlib stream, so it cannot be written in pieces; verify an
    # uncompressed copy of the header instead (rare transfer syntax, small objects).
    if check_header is not None:
        # A new Dataset, not ds.copy(): a shallow copy shares the element dict.
        header = Dataset({t: ds.get_item(t) for t in ds.keys() if int(t) < _TAIL_START})  # noqa: SIM118
        plain = BytesIO()
        dcmwrite(plain, header, implicit_vr=False, little_endian=True)
        check_header(plain.getvalue())
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return [buf.getvalue()]


@dataclass(frozen=True)
class FileRange:
    """Bytes of another file to copy through unchanged (pixel data stays out of memory)."""

    path: Path
    offset: int
    length: int


def _copy_range(out: BinaryIO, rng: FileRange) -> None:
    out.flush()
    with rng.path.open("rb") as src:
        offset, left = rng.offset, rng.length
        while left > 0:
            try:  # in-kernel copy where the filesystem allows it
                n = os.copy_file_range(src.fileno(), out.fileno(), min(left, 1 << 30), offset)
            except OSError:
                n = 0
            if n <= 0:
                src.seek(offset)
                out.seek(0, os.SEEK_END)
                while left > 0:
                    block = src.read(min(left, 1 << 20))
                    if not block:
                        raise StorageError(f"{rng.path.name}: source shrank while copying")
                    out.write(block)
                    left -= len(block)
                return
            offset += n
            left -= n


def write_atomic(path: Path, chunks: Iterable[bytes | FileRange], *, fsync: bool = False) -> bool:
    """Write to a temp file beside `path`, then move it into place; True if `path` existed.

    Readers never see a partial file. Whether the file existed is decided by the move
    itself (a hard link fails if the target is there), so of two processes writing the
    same path at once exactly one finds it new.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write under {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                if isinstance(chunk, FileRange):
                    _copy_range(fh, chunk)
                else:
                    fh.write(chunk)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        existed = _move_into_place(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {path.name}: {exc.strerror}") from None
    return existed


def _move_into_place(tmp: str, path: Path) -> bool:
    try:
        os.link(tmp, path)
    except FileExistsError:
        os.replace(tmp, path)  # a re-sent object: overwrite it with this copy
        return True
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # A filesystem without hard links: the check and the move are separate steps.
        existed = path.exists()
        os.replace(tmp, path)
        return existed
    os.unlink(tmp)
    return False


def fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename in it survives power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(folder: Path) -> Path:
    """Create a folder that holds PHI (mode 0700), tightening it if it exists."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def check_writable(folder: Path, key: str) -> None:
    """Create `folder` if missing and write a file in it; StorageError naming `key` if not.

    A real write, not a permission check: a read-only filesystem stops root too.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".deid-node-check-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        problem = (
            "a file is in the way"
            if isinstance(exc, FileExistsError | NotADirectoryError)
            else exc.strerror or type(exc).__name__
        )
        raise StorageError(f"{key}: {folder} is not a writable folder: {problem}") from None
