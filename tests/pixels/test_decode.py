"""Pixel data decodes in every transfer syntax, frame by frame, to the same values.

pydicom's bundled test files (read from its own folder, never fetched), and objects
that dcmtk's encoders (dcmcjpeg, dcmcjpls, dcmcrle) made from a synthetic native image.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from deid_node.pixels.decode import (
    TRANSFER_SYNTAXES,
    Layout,
    PixelError,
    can_decode,
    codecs,
    iter_frames,
    read_layout,
)
from tests.support.files import bundled


def test_every_transfer_syntax_with_pixel_data_has_a_decoder_here() -> None:
    missing = [UID(ts).name for ts in TRANSFER_SYNTAXES if not can_decode(ts)]
    assert missing == []
    rows = {str(ts): (dec, enc) for ts, dec, enc in codecs()}
    assert rows["1.2.840.10008.1.2.4.90"][1]  # a lossless re-encoder: JPEG 2000
    assert rows["1.2.840.10008.1.2.4.80"][1]  # JPEG-LS
    assert rows["1.2.840.10008.1.2.5"][1]  # RLE


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
    ],
)
def test_lossless_syntaxes_decode_to_the_native_values(name: str) -> None:
    [native] = list(iter_frames(bundled("MR_small.dcm")))
    [frame] = list(iter_frames(bundled(name)))
    assert frame.shape == native.shape == (64, 64)
    assert np.array_equal(frame, native)


@pytest.mark.parametrize(
    ("name", "frames", "shape", "photometric"),
    [
        ("CT_small.dcm", 1, (128, 128), "MONOCHROME2"),
        ("image_dfl.dcm", 1, None, None),  # deflated
        ("SC_rgb_rle_2frame.dcm", 2, (100, 100, 3), "RGB"),
        ("SC_rgb_rle_16bit_2frame.dcm", 2, (100, 100, 3), "RGB"),
        ("SC_rgb_jpeg_dcmtk.dcm", 1, (100, 100, 3), None),  # JPEG baseline, YBR -> RGB
        ("JPEGLSNearLossless_16.dcm", 1, None, None),
        ("JPEG2000.dcm", 1, None, None),
        ("SC_ybr_full_422_uncompressed.dcm", 1, (100, 100, 3), "YBR_FULL_422"),
        ("examples_palette.dcm", 1, None, "PALETTE COLOR"),
    ],
)
def test_bundled_objects_decode_frame_by_frame(
    name: str, frames: int, shape: tuple[int, ...] | None, photometric: str | None
) -> None:
    path = bundled(name)
    layout = read_layout(path)
    assert layout.frames == frames
    if photometric is not None:
        assert layout.photometric == photometric
    decoded = list(iter_frames(path))
    assert len(decoded) == frames
    expected = shape or (
        (layout.rows, layout.columns)
        if layout.samples == 1
        else (layout.rows, layout.columns, layout.samples)
    )
    assert all(f.shape == expected for f in decoded)


def _native(tmp_path: Path, bits: int) -> tuple[Path, np.ndarray]:
    """A synthetic MONOCHROME2 frame: a gradient with a bright block."""
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    top = (1 << bits) - 1
    pixels = (np.arange(48 * 40).reshape(48, 40) * 7 % top).astype(dtype)
    pixels[10:20, 5:30] = top
    pixels ^= rng.integers(0, 4, size=pixels.shape, dtype=dtype)  # a little noise
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / f"native{bits}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, pixels


@pytest.mark.dcmtk
@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize(
    ("tool", "option", "syntax"),
    [
        ("dcmcjpeg", "+e1", "1.2.840.10008.1.2.4.70"),  # JPEG lossless, selection value 1
        ("dcmcjpeg", "+el", "1.2.840.10008.1.2.4.57"),  # JPEG lossless, process 14
        ("dcmcjpls", "+el", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
        ("dcmcrle", None, "1.2.840.10008.1.2.5"),  # RLE lossless
    ],
)
def test_what_dcmtk_encodes_losslessly_decodes_to_the_same_pixels(
    dcmtk: None, tmp_path: Path, bits: int, tool: str, option: str | None, syntax: str
) -> None:
    src, pixels = _native(tmp_path, bits)
    out = tmp_path / "encoded.dcm"
    cmd = [f"/usr/bin/{tool}", *([option] if option else []), str(src), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    layout = read_layout(out)
    assert layout.transfer_syntax == syntax
    [frame] = list(iter_frames(out))
    assert np.array_equal(frame, pixels)


def test_missing_pixel_module_and_garbage_are_pixel_errors(tmp_path: Path) -> None:
    with pytest.raises(PixelError, match="incomplete Image Pixel module"):
        Layout.of(Dataset())
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(PixelError):
        list(iter_frames(garbage))
    src, _ = _native(tmp_path, 8)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:-500])  # the last rows are missing
    with pytest.raises(PixelError):
        list(iter_frames(cut))


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("option", "syntax"), [("+eb", "1.2.840.10008.1.2.4.50"), ("+ee", "1.2.840.10008.1.2.4.51")]
)
def test_what_dcmtk_encodes_lossily_in_8_bits_decodes_close_to_the_pixels(
    dcmtk: None, tmp_path: Path, option: str, syntax: str
) -> None:
    src, pixels = _native(tmp_path, 8)
    out = tmp_path / "lossy.dcm"
    done = subprocess.run(["/usr/bin/dcmcjpeg", option, str(src), str(out)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert read_layout(out).transfer_syntax == syntax
    [frame] = list(iter_frames(out))
    assert frame.shape == pixels.shape
    assert np.abs(frame.astype(int) - pixels.astype(int)).mean() < 8


def test_12_bit_jpeg_extended_decodes_through_imagecodecs() -> None:
    # Neither GDCM's wheel nor Pillow decodes it; pixels/jpeg12.py's plugin does
    # (tests/pixels/test_jpeg12.py compares it with dcmtk's dcmdjpeg).
    (frame,) = iter_frames(bundled("JPEG-lossy.dcm"))
    assert frame.dtype == np.uint16 and frame.shape == (1024, 256) and int(frame.max()) < 4096


ITERATE_IN_A_FRESH_PROCESS = """
import resource, sys
from pathlib import Path
import numpy, pydicom.pixels.utils  # imported before the baseline
from deid_node.pixels.decode import iter_frames
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = sum(1 for _ in iter_frames(Path(sys.argv[1])))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(n, grown // 1024)
"""


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_a_large_multi_frame_object_is_decoded_without_holding_it_whole(
    tmp_path: Path, syntax: str
) -> None:
    frames, rows, cols = 120, 512, 512  # 60 MiB of 16-bit pixels
    frame = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 3) % 4096
    ds = pydicom.dcmread(_native(tmp_path, 16)[0])
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = frame.tobytes() * frames
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, encoding_plugin="pylibjpeg")
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    del ds
    done = subprocess.run(
        [sys.executable, "-c", ITERATE_IN_A_FRESH_PROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    count, grown_mib = map(int, done.stdout.split())
    assert count == frames
    assert grown_mib < 20  # a few frames' worth, not the object's 60 MiB
