"""Every pixel layout and transfer syntax through the pipeline under `clean`: the text is
gone, the geometry and every frame are kept, and dciodvfy finds no new error.

One synthetic screen capture with the patient's name and ID drawn on it is turned into
each photometric interpretation, bit depth and sign, then into each transfer syntax.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSNearLossless,
)

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status
from deid_node.pixels.decode import iter_frames
from deid_node.pixels.ocr import TextFinder
from deid_node.pixels.release import shared_finder
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient
from deid_node.testing.synthetic.annotated import Drawn, annotated_capture
from tests.support.dcmtk import DCIODVFY, dciodvfy_errors
from tests.support.files import save_in
from tests.support.pixels import readable_in

KEY = b"k" * 32
PROFILE = compile_profile(ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN))


def capture() -> tuple[Dataset, np.ndarray, list[Drawn], SyntheticPatient]:
    patient = SyntheticPatient.make(PhiTokens(), seed=9)
    ds, drawn = annotated_capture(patient, rows=240, cols=320, burned_in="YES")
    frame = np.frombuffer(ds.PixelData, np.uint8).reshape(240, 320).copy()
    return ds, frame, drawn, patient


def grey(ds: Dataset, frame: np.ndarray, bits: int, signed: bool) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        bits,
        bits if bits == 8 else 12,
        (7 if bits == 8 else 11),
    )
    ds.PixelRepresentation = int(signed)
    if bits == 16:
        values = frame.astype(np.int32) * 16  # 12 bits
        if signed:
            values -= 2048
        ds.PixelData = values.astype("<i2" if signed else "<u2").tobytes()
        ds["PixelData"].VR = "OW"
    else:
        ds.PixelData = frame.tobytes()


def colour(ds: Dataset, frame: np.ndarray, photometric: str, planar: int) -> None:
    rgb = np.stack([frame, frame // 2 + 60, 255 - frame // 2], axis=-1).astype(np.uint8)
    rgb[frame > 240] = (255, 255, 0)  # the text in yellow
    if photometric == "YBR_FULL":
        rgb = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = (
        3,
        photometric,
        planar,
    )
    data = rgb.transpose(2, 0, 1) if planar else rgb
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    ds["PixelData"].VR = "OB"


def layouts() -> dict[str, Callable[[Dataset, np.ndarray], None]]:
    def mono1(ds: Dataset, frame: np.ndarray) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (255 - frame).astype(np.uint8).tobytes()  # text stored dark, shown bright

    def palette(ds: Dataset, frame: np.ndarray) -> None:
        ds.PhotometricInterpretation = "PALETTE COLOR"
        ramp = (np.arange(256, dtype=np.uint16) * 257).astype("<u2")
        for c, lut in (("Red", ramp), ("Green", ramp // 2), ("Blue", ramp[::-1])):
            setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{c}PaletteColorLookupTableData", lut.tobytes())
        ds.PixelData = frame.tobytes()

    return {
        "MONOCHROME2 8-bit": lambda ds, f: grey(ds, f, 8, False),
        "MONOCHROME2 16-bit": lambda ds, f: grey(ds, f, 16, False),
        "MONOCHROME2 16-bit signed": lambda ds, f: grey(ds, f, 16, True),
        "MONOCHROME1": mono1,
        "RGB planar 0": lambda ds, f: colour(ds, f, "RGB", 0),
        "RGB planar 1": lambda ds, f: colour(ds, f, "RGB", 1),
        "YBR_FULL": lambda ds, f: colour(ds, f, "YBR_FULL", 0),
        "PALETTE COLOR": palette,
    }


def check_cleaned(
    src: Path,
    out_path: Path | None,
    drawn: list[Drawn],
    patient: SyntheticPatient,
    finder: TextFinder,
) -> Dataset:
    assert out_path is not None
    assert patient.tokens.find_in(out_path.read_bytes()) == []
    written = pydicom.dcmread(out_path)
    source = pydicom.dcmread(src, stop_before_pixels=True)
    assert (written.Rows, written.Columns) == (source.Rows, source.Columns)
    assert written.BurnedInAnnotation == "NO"
    before, after = list(iter_frames(src)), list(iter_frames(out_path))
    assert len(after) == len(before) == int(source.get("NumberOfFrames") or 1)
    photometric = str(written.PhotometricInterpretation)
    for b, a in zip(before, after, strict=True):
        assert a.shape == b.shape
        assert readable_in(a, photometric, [d.box for d in drawn], finder, shared_finder()) == []
        for d in drawn:
            left, top, right, bottom = d.box
            inside = a[top:bottom, left:right].astype(np.float64)
            was = b[top:bottom, left:right].astype(np.float64)
            assert inside.std() < 0.1 * was.std(), (d.text, photometric)
    if DCIODVFY is not None:
        assert not (dciodvfy_errors(out_path) - dciodvfy_errors(src))
    return written


@pytest.mark.parametrize("layout", list(layouts()))
def test_every_photometric_and_bit_depth_is_cleaned(
    tmp_path: Path, layout: str, text_finder: TextFinder
) -> None:
    ds, frame, drawn, patient = capture()
    layouts()[layout](ds, frame)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = process_file(src, PROFILE, KEY, tmp_path / "out")
    assert out.status is Status.STORED, out.reason
    assert out.pixels and out.pixels.startswith("cleaned: ")
    written = check_cleaned(src, out.output_path, drawn, patient, text_finder)
    expected = "RGB" if layout == "YBR_FULL" else str(ds.PhotometricInterpretation)
    assert written.PhotometricInterpretation == expected
    assert written.BitsAllocated == ds.BitsAllocated
    assert written.PixelRepresentation == ds.PixelRepresentation


def _dcmtk(tool: str, option: str) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        done = subprocess.run([f"/usr/bin/{tool}", option, str(src), str(dst)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"dcmtk's {tool} is not installed")

    return encode


def _pydicom(syntax: UID, **options: object) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        ds = pydicom.dcmread(src)
        if syntax.is_compressed:
            ds.compress(syntax, **options)  # type: ignore[arg-type]
            ds.save_as(dst, enforce_file_format=True)
        else:
            save_in(ds, syntax, dst)

    return encode


ENCODINGS: dict[str, tuple[Callable[[Path, Path], None], UID]] = {
    "implicit": (_pydicom(ImplicitVRLittleEndian), ImplicitVRLittleEndian),
    "big endian": (_dcmtk("dcmconv", "+tb"), ExplicitVRLittleEndian),
    "deflated": (_pydicom(DeflatedExplicitVRLittleEndian), ExplicitVRLittleEndian),
    "JPEG lossless SV1": (_dcmtk("dcmcjpeg", "+e1"), ExplicitVRLittleEndian),
    "JPEG-LS near-lossless": (_pydicom(JPEGLSNearLossless, jls_error=2), ExplicitVRLittleEndian),
    "JPEG 2000 lossy": (
        _pydicom(JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[10]),
        ExplicitVRLittleEndian,
    ),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_transfer_syntax_is_cleaned_and_written_where_it_can_be(
    tmp_path: Path, name: str, text_finder: TextFinder
) -> None:
    ds, _frame, drawn, patient = capture()
    native = tmp_path / "native.dcm"
    ds.save_as(native, enforce_file_format=True)
    encode, written_in = ENCODINGS[name]
    src = tmp_path / "in.dcm"
    encode(native, src)
    out = process_file(src, PROFILE, KEY, tmp_path / "out")
    assert out.status is Status.STORED, out.reason
    written = check_cleaned(src, out.output_path, drawn, patient, text_finder)
    assert written.file_meta.TransferSyntaxUID == written_in
    lossy = pydicom.dcmread(src, stop_before_pixels=True).file_meta.TransferSyntaxUID in (
        JPEGLSNearLossless,
        JPEG2000,
    )
    assert (written.get("LossyImageCompression") == "01") == lossy
