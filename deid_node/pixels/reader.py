"""What a box of burned-in text says, read only to compare it with the object's header.

The detector says where text is; this module says what a box holds, with the text
recognizer of PP-OCR (CRNN, the ``ch_PP-OCRv4_rec`` model in the same
``rapidocr-onnxruntime`` wheel; Latin letters, digits and CJK). It is used for two
questions only, and what it reads never leaves the process (no log, no audit, no error
message):

- is what the detector still finds after blanking *text* (any letter or digit read) or
  texture (nothing readable at all): only text withholds an object;
- does a faint or small line the detector does not box spell one of the object's own
  identifiers (its header's names, IDs, dates as they arrived): then it is blanked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import Image

from deid_node.pixels.detect import DetectorUnavailable, package_model

MODEL_FILE: Final = "models/ch_PP-OCRv4_rec_infer.onnx"
HEIGHT: Final = 48  # the recognizer's input height
MAX_WIDTH: Final = 1280  # a line wider than this (at HEIGHT) is read in pieces
PIECE: Final = 960  # width of those pieces, overlapping by a character or two
OVERLAP: Final = 64
TEXT_CONFIDENCE: Final = 0.6  # mean probability of the characters read: text, not texture
TEXT_CHARS: Final = 2  # letters or digits at least, read with that confidence
BLANK_CONFIDENCE: Final = 0.3  # below this, what is read is noise
CLEAR_CONFIDENCE: Final = 0.8  # the same for a line no detector boxed
CLEAR_CHARS: Final = 3
MIN_IDENTIFIER: Final = 3  # shorter header values (initials, 'M') would match anything
FUZZY: Final = 5  # words this long match with one character misread


@dataclass(frozen=True)
class Reading:
    """What one box says: the characters and their mean probability."""

    text: str
    confidence: float

    @property
    def is_text(self) -> bool:
        """Letters or digits read with confidence (texture reads as a few stray marks)."""
        alnum = sum(c.isalnum() for c in self.text)
        return alnum >= TEXT_CHARS and self.confidence >= TEXT_CONFIDENCE

    @property
    def is_blank(self) -> bool:
        """Nothing written: no letter or digit read with any confidence (texture reads
        so; text in a script the recognizer does not know reads as look-alikes)."""
        return self.confidence < BLANK_CONFIDENCE or not any(c.isalnum() for c in self.text)

    @property
    def is_clear_text(self) -> bool:
        """Text beyond doubt (what no detector boxed is blanked only on this)."""
        alnum = sum(c.isalnum() for c in self.text)
        return alnum >= CLEAR_CHARS and self.confidence >= CLEAR_CONFIDENCE


class TextReader:
    """PP-OCR's recognizer: one onnxruntime session on one thread, kept per process."""

    def __init__(self) -> None:
        """Load the model and its alphabet; DetectorUnavailable when missing."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise DetectorUnavailable("onnxruntime is not installed") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session: Any = ort.InferenceSession(
                str(package_model(MODEL_FILE)), options, providers=["CPUExecutionProvider"]
            )
        except (RuntimeError, ValueError) as exc:
            raise DetectorUnavailable(f"the text reading model does not load ({exc})") from None
        meta = self._session.get_modelmeta().custom_metadata_map
        # CTC: index 0 is the blank; the model's alphabet follows, then a space.
        self._alphabet = ["", *meta.get("character", "").splitlines(), " "]
        self._input = self._session.get_inputs()[0].name
        self.passes = 0

    def read(self, image: np.ndarray) -> Reading:
        """What a crop of one line of text (8-bit grey or RGB, horizontal) says."""
        if image.size == 0 or min(image.shape[0], image.shape[1]) < 2:
            return Reading("", 0.0)
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        h, w = rgb.shape[0], rgb.shape[1]
        width = max(HEIGHT // 2, round(w * HEIGHT / h))
        scaled = np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb)).resize(
                (width, HEIGHT), Image.Resampling.BILINEAR
            )
        )
        texts: list[str] = []
        probs: list[float] = []
        # A long line in overlapping pieces (the model's cost grows with width); a line up
        # to MAX_WIDTH whole.
        starts = range(0, width - OVERLAP, PIECE) if width > MAX_WIDTH else range(1)
        span = PIECE + OVERLAP if width > MAX_WIDTH else width
        for start in starts:
            text, p = self._recognise(scaled[:, start : start + span])
            texts.append(text)
            probs += p
        confidence = float(np.mean(probs)) if probs else 0.0
        return Reading("".join(texts), confidence)

    def read_any_way(self, image: np.ndarray, *, flipped: bool = True) -> Reading:
        """The best reading of a crop as it is, upside down (unless not `flipped`), and
        (when it is taller than wide, a line turned a quarter) turned either way."""
        views = [image, np.rot90(image, 2)] if flipped else [image]
        if image.shape[0] > image.shape[1]:
            views = [np.rot90(image, 1), np.rot90(image, 3), *views]
        readings = []
        for view in views:
            reading = self.read(np.ascontiguousarray(view))
            if reading.is_text:
                return reading  # text one way: what it says is enough to compare
            readings.append(reading)
        return max(readings, key=lambda r: r.confidence * len(r.text))

    def _recognise(self, scaled: np.ndarray) -> tuple[str, list[float]]:
        self.passes += 1
        x = scaled.transpose(2, 0, 1).astype(np.float32)[None] / 255.0
        x = (x - 0.5) / 0.5
        probs = self._session.run(None, {self._input: x})[0][0]
        best = probs.argmax(axis=1)
        chars: list[str] = []
        kept: list[float] = []
        previous = 0
        for t, index in enumerate(best.tolist()):
            if index != 0 and index != previous and index < len(self._alphabet):
                chars.append(self._alphabet[index])
                kept.append(float(probs[t, index]))
            previous = index
        return "".join(chars), kept


# Characters a recognizer confuses on small text: compared as one (both sides alike).
_LOOKALIKE: Final = str.maketrans("0Q1L5826", "OOIISBZG")


def folded(text: str) -> str:
    """Letters and digits only, upper case, accents dropped, look-alikes as one: how
    readings and header values are compared."""
    if text.isascii():
        return _NOT_ALNUM.sub("", text.upper()).translate(_LOOKALIKE)
    plain = unicodedata.normalize("NFKD", text)
    return "".join(c for c in plain if c.isalnum()).upper().translate(_LOOKALIKE)


_NOT_ALNUM: Final = re.compile(r"[^0-9A-Z]+")


_SEPARATORS: Final = re.compile(r"[\^=\s,.\-/]+")


def identifier_words(values: Iterable[str]) -> frozenset[str]:
    """The folded words (and whole values) of header identifiers worth looking for:
    at least MIN_IDENTIFIER characters, not all one character."""
    words: set[str] = set()
    for value in set(values):
        for piece in [value, *_SEPARATORS.split(value)]:
            word = folded(piece)
            if len(word) >= MIN_IDENTIFIER and len(set(word)) > 1:
                words.add(word)
    return frozenset(words)


def names_one_of(reading: Reading, words: frozenset[str]) -> bool:
    """Whether a reading spells one of `words` (a recognizer's one-letter slip forgiven
    in words of FUZZY characters or more)."""
    said = folded(reading.text)
    if len(said) < MIN_IDENTIFIER:
        return False
    for word in words:
        if word in said:
            return True
        if len(word) >= FUZZY and _near_substring(word, said):
            return True
    return False


def _near_substring(word: str, said: str) -> bool:
    """Whether `said` holds `word` with at most one character changed, added or missing."""
    n = len(word)
    for size in (n - 1, n, n + 1):
        for start in range(0, len(said) - size + 1):
            if _within_one(word, said[start : start + size]):
                return True
    return False


def _within_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) != 1:
        return False
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]
