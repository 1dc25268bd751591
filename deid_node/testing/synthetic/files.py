"""Writing synthetic objects as Part-10 files, and files a receiver must refuse."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydicom import Dataset

from deid_node.testing.synthetic.ct import ct_series
from deid_node.testing.synthetic.patient import SyntheticPatient
from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = ["write_bad_files", "write_files"]


def write_files(datasets: Iterable[Dataset], folder: str | Path) -> list[Path]:
    """Writes each dataset as ``<folder>/<n>.dcm`` (n = 1, 2, ...) as a Part-10 file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _element_offset(data: bytes, tag: int) -> int:
    """Offset of an explicit-VR little-endian element header (first occurrence)."""
    needle = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    offset = data.find(needle, 132)
    if offset < 0 or not data[offset + 4 : offset + 6].isalpha():
        raise ValueError(f"tag {tag:08X} not found")
    return offset


def write_bad_files(folder: str | Path, *, tokens: PhiTokens | None = None) -> dict[str, Path]:
    """Files a receiver must reject or quarantine, by name.

    ``truncated``        a valid CT file cut in the middle of the PatientName value;
    ``truncated_pixels`` a valid CT file cut in the middle of its pixel data;
    ``garbage``          random bytes;
    ``text``             a plain text file;
    ``no_sop_instance_uid`` a Part-10 file whose dataset lacks SOPInstanceUID;
    ``bad_length``       Rows (US) encoded with a 3-byte value;
    ``wrong_vr``         PatientName encoded with VR US and a 3-byte value;
    ``empty``            a zero-byte file.

    Beware: pydicom's ``dcmread`` reads ``truncated`` and ``truncated_pixels`` without raising
    (it returns the elements before the cut), and reads ``no_sop_instance_uid`` fine; it raises
    ``InvalidDicomError`` for ``garbage``, ``text`` and ``empty`` and ``BytesLengthException``
    for ``bad_length`` and ``wrong_vr``.  The files carry tokens of ``tokens`` when given.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = tokens if tokens is not None else PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=1)
    ct = ct_series(1, patient=patient, rows=16, cols=16, seed=1)[0]
    good = folder / "_good.dcm"
    ct.save_as(good, enforce_file_format=True)
    data = good.read_bytes()
    good.unlink()
    out: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        path = folder / f"{name}.dcm"
        path.write_bytes(content)
        out[name] = path

    name_at = _element_offset(data, 0x00100010)
    name_len = int.from_bytes(data[name_at + 6 : name_at + 8], "little")
    put("truncated", data[: name_at + 8 + name_len // 2])
    pixels_at = _element_offset(data, 0x7FE00010)
    put("truncated_pixels", data[: pixels_at + 12 + 100])
    put("garbage", np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    put("text", b"This is not a DICOM file.\nPatient: nobody\n" * 20)
    no_uid = ct.copy()
    del no_uid.SOPInstanceUID
    path = folder / "no_sop_instance_uid.dcm"
    no_uid.save_as(path, enforce_file_format=True)
    out["no_sop_instance_uid"] = path
    rows_at = _element_offset(data, 0x00280010)
    bad_rows = data[rows_at : rows_at + 4] + b"US" + (3).to_bytes(2, "little") + b"\x10\x00\x00"
    put("bad_length", data[:rows_at] + bad_rows + data[rows_at + 10 :])
    wrong = data[name_at : name_at + 4] + b"US" + (3).to_bytes(2, "little") + b"\x01\x02\x03"
    put("wrong_vr", data[:name_at] + wrong + data[name_at + 8 + name_len :])
    put("empty", b"")
    return out
