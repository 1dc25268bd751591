"""Durable file writes: atomic replacement, fsync, private folders, copies of file ranges.

Shared by the spool (intake), the output writer (deid) and the CLI's folder checks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from deid_node.errors import StorageError


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
        raise StorageError(
            f"cannot write under {path.parent}: {exc.strerror}", exc.strerror
        ) from None
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
        raise StorageError(f"cannot write {path.name}: {exc.strerror}", exc.strerror) from None
    except BaseException:  # a chunk that could not be made (pixels): nothing is left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
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
