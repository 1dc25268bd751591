"""Files on disk: what a folder holds, data sets saved in a syntax, pydicom's test files."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

# pydicom's own test files, read from its folder (never downloaded).
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def files_under(folder: Path, pattern: str = "*") -> list[Path]:
    """Regular files under a folder (recursively), sorted."""
    return sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.exists() else []


def bundled(name: str) -> Path:
    """One of pydicom's bundled test files; fails the test if this pydicom lacks it."""
    path = PYDICOM_FILES / name
    assert path.exists(), f"{name} is not bundled with this pydicom"  # never downloaded
    return path


def save_in(ds: Dataset, syntax: UID, path: Path) -> Path:
    """ds written as a Part-10 file in `syntax`."""
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(
        path,
        enforce_file_format=True,
        implicit_vr=syntax.is_implicit_VR,
        little_endian=syntax.is_little_endian,
    )
    return path
