"""No header says "no text": which objects' pixels are looked at, and what each policy does.

Screen captures saved as CT or MR, secondary captures whose BurnedInAnnotation = NO is
wrong, and overlay planes kept in the high bits of the pixel words are all synthetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.burned_in import looks_at_pixels, suspicion
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.dicom.pixel_bits import WordBits, clear_chunk
from deid_node.object_status import Status
from deid_node.pixels.decode import iter_frames
from deid_node.pixels.release import shared_finder
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.testing.synthetic.annotated import (
    annotated_capture,
    annotated_slice,
    overlay_in_high_bits,
    text_mask,
)

KEY = b"k" * 32
BASIC = ProfileConfig(name="basic")  # burned_in_annotation = "quarantine", the default
CLEAN = ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN)
EVERY = ProfileConfig(name="every", look_at_every_image=True)
CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def patient(seed: int = 1) -> SyntheticPatient:
    return SyntheticPatient.make(PhiTokens(), seed=seed)


def header(sop_class: str, modality: str, flag: str | None, image_type: str | None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    if flag is not None:
        ds.BurnedInAnnotation = flag
    if image_type is not None:
        ds.ImageType = image_type.split("\\")
    ds.PixelData = b"\0\0"
    return ds


@pytest.mark.parametrize(
    ("sop_class", "modality", "flag", "image_type", "expected"),
    [
        (CT, "CT", None, "ORIGINAL\\PRIMARY\\AXIAL", None),
        (CT, "CT", "NO", "ORIGINAL\\PRIMARY\\AXIAL", None),
        (CT, "CT", "YES", "ORIGINAL\\PRIMARY\\AXIAL", "known"),
        (CT, "CT", None, "DERIVED\\SECONDARY", "suspect"),
        (CT, "CT", "NO", "DERIVED\\SECONDARY", "suspect"),
        (CT, "CT", "NO", "ORIGINAL\\SECONDARY", "suspect"),
        (CT, "CT", None, "ORIGINAL\\PRIMARY\\LABEL", "suspect"),
        (US, "US", None, "ORIGINAL\\PRIMARY", "known"),
        (US, "US", "NO", "ORIGINAL\\PRIMARY", "suspect"),
        (SC, "OT", "NO", "DERIVED\\SECONDARY", "suspect"),
        (SC, "OT", None, None, "known"),
        (XA, "XA", "NO", "ORIGINAL\\PRIMARY", "suspect"),
        (SEG, "SEG", None, "DERIVED\\PRIMARY", None),
    ],
)
def test_what_is_looked_at_follows_what_an_object_is(
    sop_class: str, modality: str, flag: str | None, image_type: str | None, expected: str | None
) -> None:
    found = suspicion(header(sop_class, modality, flag, image_type))
    got = None if found is None else "known" if found.known else "suspect"
    assert got == expected
    if expected == "suspect":  # the default policy looks at it; it does not withhold it unseen
        assert looks_at_pixels(BASIC, header(sop_class, modality, flag, image_type))


def test_every_image_is_looked_at_on_request() -> None:
    original = header(CT, "CT", "NO", "ORIGINAL\\PRIMARY\\AXIAL")
    assert not looks_at_pixels(BASIC, original)
    assert looks_at_pixels(EVERY, original)
    allowed = ProfileConfig(name="x", burned_in_annotation=BurnedInPolicy.ALLOW)
    assert not looks_at_pixels(allowed, header(CT, "CT", None, "DERIVED\\SECONDARY"))


def run(ds: Dataset, tmp_path: Path, cfg: ProfileConfig, name: str = "in.dcm") -> Outcome:
    src = tmp_path / "in" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(src, enforce_file_format=True)
    return process_file(src, compile_profile(cfg), KEY, tmp_path / f"out-{cfg.name}")


def assert_unreadable(path: Path, drawn_boxes: list[tuple[int, int, int, int]]) -> None:
    """The finder sees no text, and inside each planted text's box the contrast is gone."""
    finder = shared_finder()
    for frame in iter_frames(path):
        assert finder.find(frame, "MONOCHROME2") == []
        for left, top, right, bottom in drawn_boxes:
            assert float(frame[top:bottom, left:right].std()) < 1.0


@pytest.mark.parametrize(
    ("modality", "flag"), [("CT", None), ("CT", "NO"), ("MR", None), ("MR", "NO")]
)
def test_a_screen_capture_under_a_clean_header_is_withheld_or_cleaned(
    tmp_path: Path, modality: str, flag: str | None
) -> None:
    who = patient()
    ds, drawn = annotated_slice(who, modality=modality, burned_in=flag)
    withheld = run(ds, tmp_path, BASIC)
    assert withheld.status is Status.QUARANTINED and withheld.output_path is None
    assert "text-like content" in (withheld.reason or "")
    assert who.family not in (withheld.reason or "")
    cleaned = run(ds, tmp_path, CLEAN)
    assert cleaned.status is Status.STORED and cleaned.output_path is not None
    assert (cleaned.pixels or "").startswith("cleaned:")
    out = dcmread(cleaned.output_path)
    assert out.BurnedInAnnotation == "NO" and out.PatientIdentityRemoved == "YES"
    assert_unreadable(cleaned.output_path, [d.box for d in drawn])


def test_a_secondary_capture_whose_no_is_wrong(tmp_path: Path) -> None:
    ds, drawn = annotated_capture(patient(), burned_in="NO")
    assert run(ds, tmp_path, BASIC).status is Status.QUARANTINED
    cleaned = run(ds, tmp_path, CLEAN)
    assert cleaned.status is Status.STORED and cleaned.output_path is not None
    assert_unreadable(cleaned.output_path, [d.box for d in drawn])


def test_a_derived_slice_without_text_is_looked_at_and_released(tmp_path: Path) -> None:
    ds = ct_series(1, patient=patient(), rows=128, cols=128)[0]
    ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
    outcome = run(ds, tmp_path, BASIC)
    assert outcome.status is Status.STORED
    assert (outcome.pixels or "").startswith("checked:")


def test_an_original_slice_is_not_looked_at_unless_the_profile_says_so(tmp_path: Path) -> None:
    ds = ct_series(1, patient=patient(), rows=64, cols=64)[0]
    assert run(ds, tmp_path, BASIC).pixels is None
    every = run(ds, tmp_path, EVERY)
    assert every.status is Status.STORED and (every.pixels or "").startswith("checked:")


# --------------------------------------------------------------------------------------------
# Bits outside BitsStored


@pytest.mark.parametrize("bit", [12, 15])
@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=str
)
@pytest.mark.parametrize("cfg", [BASIC, CLEAN, EVERY], ids=lambda c: c.name)
def test_overlay_bits_in_the_pixel_words_are_cleared(
    tmp_path: Path, bit: int, ts: str, cfg: ProfileConfig
) -> None:
    ds, kept = overlay_in_high_bits(patient(), bit=bit)
    ds.file_meta.TransferSyntaxUID = ts
    if ts == ExplicitVRBigEndian:  # the words as a big endian writer stores them
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    outcome = run(ds, tmp_path, cfg)
    assert outcome.status is Status.STORED and outcome.output_path is not None
    out = dcmread(outcome.output_path)
    assert not any(elem.tag.group == 0x6000 for elem in out)  # the overlay group is gone
    big = out.file_meta.TransferSyntaxUID == ExplicitVRBigEndian  # looked at: re-encoded
    words = np.frombuffer(out.PixelData, ">u2" if big else "<u2")
    assert not (words & 0xF000).any()  # no bit outside BitsStored
    assert np.array_equal(words.reshape(kept.shape), kept)  # every value inside unchanged


def test_a_slice_without_stray_bits_is_copied_as_it_came(tmp_path: Path) -> None:
    ds = ct_series(1, patient=patient(), rows=64, cols=64)[0]
    outcome = run(ds, tmp_path, BASIC)
    assert outcome.output_path is not None
    assert dcmread(outcome.output_path).PixelData == ds.PixelData


@pytest.mark.parametrize("little", [True, False])
def test_signed_words_keep_their_sign_extension(little: bool) -> None:
    order = "<" if little else ">"
    bits = WordBits(16, 12, 11, True, little)
    values = np.array([-1, -2048, 2047, 0, 5], np.int16)
    extended = values.astype(order + "i2").tobytes()
    assert clear_chunk(extended, bits) is None  # sign extension carries nothing
    unextended = (values.view(np.uint16) & 0x0FFF).astype(order + "u2").tobytes()
    assert clear_chunk(unextended, bits) is None  # nothing outside the value either
    stray = (values.view(np.uint16) | 0x4000).astype(order + "u2").tobytes()
    cleared = clear_chunk(stray, bits)
    assert cleared is not None and np.array_equal(np.frombuffer(cleared, order + "i2"), values)


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_turned_text_is_found_and_blanked(tmp_path: Path, angle: int) -> None:
    who = patient(seed=angle)
    ds, drawn = annotated_slice(who, burned_in="NO", angle=angle)
    assert run(ds, tmp_path, BASIC).status is Status.QUARANTINED
    cleaned = run(ds, tmp_path, CLEAN)
    assert cleaned.status is Status.STORED and cleaned.output_path is not None, cleaned.reason
    assert_unreadable(cleaned.output_path, [d.box for d in drawn])


def test_palette_text_is_found_in_its_colours_not_its_indices(tmp_path: Path) -> None:
    # The name is drawn with index 10 on index 11: one apart as numbers, white on black as
    # shown. Looked at as indices it cannot be seen.
    who = patient(seed=21)
    ds = ct_series(1, patient=who, rows=128, cols=256)[0]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    rng = np.random.default_rng(3)
    indices = rng.integers(20, 256, size=(128, 256)).astype(np.uint8)
    indices[4:40, 4:250] = 11
    mask, drawn = text_mask((128, 256), [((8, 10), f"{who.family} {who.patient_id}", 16)])
    indices[mask] = 10
    ramp = np.linspace(0, 65535, 256).astype("<u2")
    ramp[10], ramp[11] = 65535, 0
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    for keyword in (
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
    ):
        delattr(ds, keyword)
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp.tobytes())
    ds.PixelData = indices.tobytes()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SC
    ds.Modality = "OT"
    withheld = run(ds, tmp_path, BASIC)
    assert withheld.status is Status.QUARANTINED and "text-like" in (withheld.reason or "")
    cleaned = run(ds, tmp_path, CLEAN)
    assert cleaned.status is Status.STORED and cleaned.output_path is not None, cleaned.reason
    (frame,) = iter_frames(cleaned.output_path)
    for d in drawn:
        left, top, right, bottom = d.box
        assert len(set(frame[top:bottom, left:right].ravel().tolist())) == 1


@pytest.mark.parametrize("cfg", [BASIC, CLEAN], ids=lambda c: c.name)
def test_overlay_bits_inside_compressed_pixel_data_are_cleared(
    tmp_path: Path, cfg: ProfileConfig
) -> None:
    # RLE words that hold a name in bit 15 (encoded as 16 bits stored, then declared 12).
    ds, kept = overlay_in_high_bits(patient(), bit=15)
    words = np.frombuffer(ds.PixelData, "<u2").reshape(kept.shape)
    assert (words & 0x8000).any()
    ds.BitsStored, ds.HighBit = 16, 15
    ds.compress(RLELossless, words, encoding_plugin="pydicom")
    ds.BitsStored, ds.HighBit = 12, 11
    outcome = run(ds, tmp_path, cfg)
    assert outcome.status is Status.STORED, outcome.reason
    assert outcome.pixels is not None and "bits outside BitsStored cleared" in outcome.pixels
    assert outcome.output_path is not None
    out = dcmread(outcome.output_path)
    assert out.file_meta.TransferSyntaxUID == RLELossless
    [frame] = list(iter_frames(outcome.output_path, as_stored=True))
    assert not (frame.astype(np.uint16) & 0xF000).any()  # no bit outside BitsStored
    assert np.array_equal(frame, kept)  # every value inside unchanged
