"""Reading boxes of text (deid_node/pixels/reader.py) and what reading decides in cleaning.

Only text withholds an object, never texture; a small or faint line that spells one of the
object's own identifiers is blanked; what is read never leaves the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status
from deid_node.pixels.clean import TextRemains, survey
from deid_node.pixels.decode import Layout, iter_frames
from deid_node.pixels.detect import TextDetector
from deid_node.pixels.ocr import Box
from deid_node.pixels.reader import Reading, TextReader, identifier_words, names_one_of
from deid_node.pixels.release import header_identifiers, shared_reader
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, secondary_capture
from deid_node.testing.synthetic.annotated import draw_text

NAME = "COOKSON^HAZEL"
WORDS = identifier_words([NAME, "19570314", "MRN48213"])


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return shared_reader()


@pytest.fixture
def patient() -> SyntheticPatient:
    return SyntheticPatient.make(PhiTokens(), seed=3)


def layout(rows: int, columns: int, frames: int = 1) -> Layout:
    return Layout(
        rows, columns, 1, frames, 8, 8, False, "MONOCHROME2", 0, UID("1.2.840.10008.1.2.1")
    )


def flat(rows: int, columns: int, level: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = np.full((rows, columns), level, np.float32) + rng.normal(0, noise, (rows, columns))
    frame[0, 0], frame[0, 1] = 0, 255  # the frame's full range: faint stays faint
    return np.asarray(frame.clip(0, 255), dtype=np.uint8)


def speckle(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(rng.rayleigh(45, (rows, columns)).clip(0, 255), dtype=np.uint8)


def test_a_line_is_read_and_texture_reads_as_nothing(reader: TextReader) -> None:
    frame, [drawn] = draw_text(np.zeros((40, 320), np.uint8), [((4, 8), "HAZEL COOKSON", 14, 230)])
    left, top, right, bottom = drawn.box
    said = reader.read(frame[top - 3 : bottom + 3, left - 3 : right + 3])
    assert said.is_text and names_one_of(said, WORDS)
    turned = reader.read_any_way(np.rot90(frame[top - 3 : bottom + 3, left - 3 : right + 3]))
    assert turned.is_text and names_one_of(turned, WORDS)
    for texture in (speckle(40, 200), flat(40, 200, 100, 30)):
        assert not reader.read_any_way(texture).is_text


def test_identifiers_come_from_every_name_id_and_date_spelling(
    patient: SyntheticPatient,
) -> None:
    ds = secondary_capture(patient, None, rows=8, cols=8)
    ds.PatientName = "DOE^JO=ドウ^ジョー"
    ds.PatientID = "MRN48213"
    ds.PatientBirthDate = "19570314"
    ds.ReferringPhysicianName = "WRIGHT^AMOS"
    words = identifier_words(header_identifiers(ds))
    assert {"DOE", "WRIGHT", "AMOS", "MRN4BZI3"} <= words  # look-alikes folded (8->B ...)
    for spelling in ("1957-03-14", "14/03/1957", "03/14/1957", "14 MAR 1957", "14.03.57"):
        assert names_one_of(_reading(f"DOB {spelling}"), words), spelling
    assert "JO" not in words  # two letters would match anything


def _reading(text: str) -> Reading:
    return Reading(text, 0.99)


@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize(("ink", "ground"), [(60, 30), (90, 70), (140, 120)])
def test_a_small_faint_name_is_blanked(
    text_detector: TextDetector, reader: TextReader, size: int, ink: int, ground: int
) -> None:
    frame = flat(200, 300, ground, 1.5, seed=size * ink)
    frame, [drawn] = draw_text(frame, [((30, 100), "COOKSON HAZEL", size, ink)])
    report = survey([frame], layout(200, 300), text_detector, reader=reader, words=WORDS)
    [boxes] = report.boxes.values()
    left, top, right, bottom = drawn.box
    assert any(
        b.left <= left and b.top <= top and b.right >= right and b.bottom >= bottom for b in boxes
    ), (drawn.box, boxes)


class _Finds:
    """A finder that finds the given boxes, one list per call (the last one again)."""

    def __init__(self, *calls: list[Box]) -> None:
        self.calls = list(calls)

    def find(
        self,
        frame: np.ndarray,
        photometric: str = "MONOCHROME2",
        blanked: Sequence[Box] = (),
        within: Sequence[Box] | None = None,
    ) -> list[Box]:
        return self.calls.pop(0) if len(self.calls) > 1 else self.calls[0]


def test_texture_still_found_after_blanking_is_kept_and_text_refuses(reader: TextReader) -> None:
    frame = speckle(120, 320)
    frame[10:40, 10:310] = 0
    frame, [drawn] = draw_text(frame, [((14, 14), "HAZEL COOKSON", 16, 255)])
    on_speckle = [Box(20 + 30 * i, 60, 50 + 30 * i, 110) for i in range(5)]
    looks = [[b] for b in on_speckle]
    report = survey([frame], layout(120, 320), _Finds(*looks), reader=reader)
    assert report.texture == 1 and report.regions >= 1  # the looks blanked, the rest kept
    [boxes] = report.boxes.values()
    assert not any(b.overlaps(on_speckle[-1]) for b in boxes)
    # The same, but what is still found at the end is the name: refused.
    name = Box(*drawn.box)
    with pytest.raises(TextRemains):
        survey([frame], layout(120, 320), _Finds(*looks[:3], [name]), reader=reader)
    # Without a reader nothing tells texture from text: refused too.
    with pytest.raises(TextRemains):
        survey([frame], layout(120, 320), _Finds(*looks))


def test_check_only_withholds_text_and_not_texture(reader: TextReader) -> None:
    frame = speckle(120, 320)
    frame[10:40, 10:310] = 0
    frame, [drawn] = draw_text(frame, [((14, 14), "HAZEL COOKSON", 16, 255)])
    texture = _Finds([Box(20, 60, 120, 110)])
    assert survey([frame], layout(120, 320), texture, check_only=True, reader=reader).regions == 0
    text = _Finds([Box(*drawn.box)])
    assert survey([frame], layout(120, 320), text, check_only=True, reader=reader).regions == 1
    # Scripts the recognizer does not know read as look-alikes: text all the same.
    for name in ("Иванов Пётр", "כהן דוד", "محمد علي"):
        other = speckle(120, 320)
        other[10:40, 10:310] = 0
        other, [drawn] = draw_text(other, [((14, 14), name, 16, 255)])
        found = _Finds([Box(*drawn.box)])
        assert survey([other], layout(120, 320), found, check_only=True, reader=reader).regions


def test_a_faint_name_in_a_capture_is_blanked_as_a_header_match(
    tmp_path: Path, patient: SyntheticPatient, text_detector: TextDetector
) -> None:
    ds = secondary_capture(patient, None, rows=200, cols=300)
    ds.BurnedInAnnotation = "YES"
    ds.PatientName = NAME  # a made-up name in words (the tokens' digits read poorly at 4 px)
    family, given = NAME.split("^")
    frame = flat(200, 300, 30, 1.5, seed=7)
    frame, [drawn] = draw_text(frame, [((30, 100), f"{family} {given}", 5, 60)])
    ds.PixelData = frame.tobytes()
    src = tmp_path / "in" / "sc.dcm"
    src.parent.mkdir()
    ds.save_as(src, enforce_file_format=True)
    profile = ProfileConfig(name="clean", burned_in_annotation=BurnedInPolicy.CLEAN)
    out = process_file(src, compile_profile(profile), b"k" * 32, tmp_path / "out")
    assert out.status is Status.STORED, out.reason
    assert out.pixels is not None and "matching a header value" in out.pixels
    assert family not in out.pixels and given not in out.pixels  # counts only
    assert out.output_path is not None
    [after] = list(iter_frames(out.output_path))
    left, top, right, bottom = drawn.box
    inside = after[top:bottom, left:right]
    assert int(inside.max()) - int(inside.min()) < 6  # contrast inside: under a tenth of 60
    assert pydicom.dcmread(out.output_path).PatientName != ds.PatientName


def test_a_long_line_is_read_to_its_end(reader: TextReader) -> None:
    # Wide enough to be scaled past one piece of the recognizer's input (1024 columns).
    text = "RADIOLOGY DEPARTMENT WEST WING COOKSON"
    frame, [drawn] = draw_text(np.zeros((30, 620), np.uint8), [((4, 6), text, 16, 230)])
    left, top, right, bottom = drawn.box
    said = reader.read(frame[top - 2 : bottom + 2, left - 2 : right + 2])
    assert "COOKSON" in said.text.replace(" ", "")
