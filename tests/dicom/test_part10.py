"""Reading Part-10 files up to the pixel data, which is copied through from disk."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_node.dicom.part10 import read_header
from deid_node.durable import FileRange
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, write_files

TRAILING = 0x7FE10010  # a private creator after the pixel data: it must meet the profile


def ct_file(tmp_path: Path, ts: str, *, pixels: bool = True) -> Path:
    ds = ct_series(1, patient=SyntheticPatient.make(PhiTokens()), rows=8, cols=8)[0]
    ds.file_meta.TransferSyntaxUID = ts
    if not pixels:
        del ds.PixelData
    (path,) = write_files([ds], tmp_path / str(ts))
    return path


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_native_pixel_data_stays_on_disk(tmp_path: Path, ts: str) -> None:
    path = ct_file(tmp_path, ts)
    ds, pixels = read_header(path)
    assert "PixelData" not in ds and ds.Rows == 8
    size = path.stat().st_size
    header = 8 if ts == ImplicitVRLittleEndian else 12
    assert pixels == FileRange(path, size - 8 * 8 * 2 - header, 8 * 8 * 2 + header)


def test_encapsulated_pixel_data_stays_on_disk() -> None:
    path = Path(str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))
    raw = path.read_bytes()
    at = raw.rindex(b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff")
    ds, pixels = read_header(path)
    assert "PixelData" not in ds
    assert pixels == FileRange(path, at, len(raw) - at)


def test_an_element_after_the_pixel_data_sends_the_whole_file_through_the_profile(
    tmp_path: Path,
) -> None:
    path = ct_file(tmp_path, ExplicitVRLittleEndian)
    path.write_bytes(path.read_bytes() + struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 4) + b"ACME")
    ds, pixels = read_header(path)
    assert pixels is None and TRAILING in ds and "PixelData" in ds


@pytest.mark.parametrize("vr", ["SV", "UV"])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_sv_and_uv_at_the_pixel_data_are_read_with_their_4_byte_length(
    tmp_path: Path, ts: str, vr: str
) -> None:
    # read_header had its own VR table without SV and UV, and read their length from
    # the two reserved bytes. Reserved bytes that say "to the end of the file" made an
    # element after it pass as pixel data: copied to the output unread by the profile.
    # (The encoding check refuses SV or UV there; read_header must not rely on that.)
    path = ct_file(tmp_path, ts, pixels=False)
    endian = "<" if ts != ExplicitVRBigEndian else ">"
    value = b"\x01" * 8 * 8 * 2  # as long as the 8x8 16-bit geometry asks
    trailing = struct.pack(endian + "HH2sH", 0x7FE1, 0x0010, b"LO", 4) + b"ACME"
    reserved = 4 + len(value) + len(trailing)  # what a 2-byte reading takes for the length
    float_pixels = struct.pack(endian + "HH2sHL", 0x7FE0, 0x0008, vr.encode(), reserved, len(value))
    path.write_bytes(path.read_bytes() + float_pixels + value + trailing)
    ds, pixels = read_header(path)
    assert pixels is None
    assert ds[TRAILING].value == "ACME"
