"""12-bit JPEG Extended: decoded (imagecodecs' libjpeg-turbo), looked at, cleaned."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGExtended12Bit

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status
from deid_node.pixels.decode import can_decode, iter_frames
from deid_node.pixels.release import shared_finder
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient
from deid_node.testing.synthetic.annotated import annotated_slice
from tests.support.files import bundled

DCMDJPEG = Path("/usr/bin/dcmdjpeg")  # dcmtk's own JPEG decoder: a reference no one here wrote
CLEAN = ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN)


def test_twelve_bit_jpeg_extended_decodes_as_dcmtk_decodes_it(tmp_path: Path) -> None:
    if not DCMDJPEG.exists():
        pytest.skip("dcmtk's dcmdjpeg is not installed")
    assert can_decode(JPEGExtended12Bit)
    source = Path(bundled("JPGExtended.dcm"))
    assert dcmread(source).BitsStored == 12
    reference = tmp_path / "plain.dcm"
    subprocess.run([str(DCMDJPEG), str(source), str(reference)], check=True, capture_output=True)
    (ours,) = iter_frames(source)
    assert np.array_equal(ours, dcmread(reference).pixel_array)


def test_text_in_a_twelve_bit_jpeg_is_cleaned(tmp_path: Path) -> None:
    who = SyntheticPatient.make(PhiTokens(), seed=4)
    ds, drawn = annotated_slice(who, burned_in="YES", size=256)
    words = np.frombuffer(ds.PixelData, np.uint16).reshape(256, 256)
    ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(words, level=95, bitspersample=12)])
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = process_file(src, compile_profile(CLEAN), b"k" * 32, tmp_path / "out")
    assert out.status is Status.STORED and out.output_path is not None, out.reason
    written = dcmread(out.output_path)
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert written.LossyImageCompression == "01"
    (frame,) = iter_frames(out.output_path)
    assert shared_finder().find(frame, "MONOCHROME2") == []
    for d in drawn:
        left, top, right, bottom = d.box
        assert float(frame[top:bottom, left:right].std()) < 1.0
