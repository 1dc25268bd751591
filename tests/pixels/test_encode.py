"""Frames written back decode to the same values, in the syntax the rules say."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from deid_node.pixels.decode import Layout, PixelError, iter_frames, read_layout
from deid_node.pixels.encode import output_layout, output_syntax, pixel_data_element
from tests.support.files import bundled


def rewrite(src: Path, dst: Path) -> Layout:
    """src's frames through pixel_data_element into dst, its header adjusted to match."""
    layout = read_layout(src)
    out = output_layout(layout)
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    ds.file_meta.TransferSyntaxUID = out.transfer_syntax
    ds.PhotometricInterpretation = out.photometric
    if out.samples > 1:
        ds.PlanarConfiguration = 0
    for _ in ds:  # decoded, so that a big endian header can be written little endian
        pass
    head = BytesIO()
    pydicom.dcmwrite(
        head,
        ds,
        enforce_file_format=True,
        implicit_vr=out.transfer_syntax.is_implicit_VR,
        little_endian=True,
    )
    with dst.open("wb") as fh:
        fh.write(head.getvalue())
        for chunk in pixel_data_element(iter_frames(src), out):
            fh.write(chunk)
    return out


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("MR_small.dcm", "1.2.840.10008.1.2.1"),  # native stays native
        ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.1"),  # big endian: little
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),  # lossless: back into RLE
        ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
        ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
        ("SC_rgb_rle_2frame.dcm", "1.2.840.10008.1.2.5"),
        ("SC_rgb_rle_16bit_2frame.dcm", "1.2.840.10008.1.2.5"),
        ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.1"),  # lossy JPEG: uncompressed
        ("JPEG2000.dcm", "1.2.840.10008.1.2.1"),  # lossy JPEG 2000: uncompressed
        ("SC_ybr_full_422_uncompressed.dcm", "1.2.840.10008.1.2.1"),  # YBR 422: RGB
        ("examples_palette.dcm", "1.2.840.10008.1.2.1"),
        ("CT_small.dcm", "1.2.840.10008.1.2.1"),  # signed
    ],
)
def test_frames_written_back_decode_to_the_same_values(
    tmp_path: Path, name: str, syntax: str
) -> None:
    src = bundled(name)
    dst = tmp_path / "out.dcm"
    out = rewrite(src, dst)
    assert out.transfer_syntax == syntax
    assert read_layout(dst).transfer_syntax == syntax
    before, after = list(iter_frames(src)), list(iter_frames(dst))
    assert len(after) == len(before) == out.frames
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)
    if read_layout(src).photometric.startswith("YBR"):
        assert pydicom.dcmread(dst).PhotometricInterpretation == "RGB"


def test_output_syntax_falls_back_to_explicit_little_endian() -> None:
    for ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.201"):
        assert output_syntax(UID(ts)) == "1.2.840.10008.1.2.1"
    assert output_syntax(UID("1.2.840.10008.1.2.1.99")) == "1.2.840.10008.1.2.1"


def test_a_frame_of_the_wrong_shape_or_count_is_a_pixel_error() -> None:
    layout = read_layout(bundled("MR_small.dcm"))
    out = output_layout(layout)
    with pytest.raises(PixelError, match="shape"):
        list(pixel_data_element([np.zeros((3, 3), dtype=np.int16)], out))
    with pytest.raises(PixelError, match="0 of 1 frames"):
        list(pixel_data_element([], out))
