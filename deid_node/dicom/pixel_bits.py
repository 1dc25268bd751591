"""Bits of native pixel words outside BitsStored: cleared before pixel data is written.

The retired overlay-in-pixel-data form keeps overlay planes (names and record numbers as
bitmaps) in the bits of each 16-bit word above HighBit; removing the 60xx group leaves
them standing. Nothing outside BitsStored belongs to the image, so those bits are
cleared in every word: zero for unsigned pixels, the sign extension for signed ones (a
reader that ignores BitsStored then sees the same values). Values inside BitsStored are
never changed. Pure Python on big integers, a chunk at a time: header-only workers keep
numpy out, and a 512x512 slice costs about half a millisecond.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Final

from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid_node.durable import FileRange

CHUNK: Final = 1 << 20  # bytes a step (a multiple of every word size)


@dataclass(frozen=True)
class WordBits:
    """Where a pixel word's value lies, from the Image Pixel module."""

    allocated: int  # 8, 16 or 32
    stored: int
    high_bit: int
    signed: bool
    little_endian: bool

    @classmethod
    def of(cls, ds: Dataset, little_endian: bool) -> WordBits | None:
        """The words of ds's native pixel data, or None when no bit can lie outside."""
        try:
            allocated = int(ds.BitsAllocated)
            stored = int(ds.get("BitsStored") or allocated)
            high_bit = int(ds.get("HighBit") if ds.get("HighBit") is not None else stored - 1)
            signed = int(ds.get("PixelRepresentation") or 0) == 1
        except (AttributeError, TypeError, ValueError):
            return None  # the pixel module is checked elsewhere; nothing to say here
        if allocated not in (8, 16, 32) or not 0 < stored < allocated:
            return None
        if not stored - 1 <= high_bit < allocated:
            high_bit = stored - 1  # an impossible HighBit: the value is taken as the low bits
        return cls(allocated, stored, high_bit, signed, little_endian)

    @property
    def size(self) -> int:
        """Bytes a word."""
        return self.allocated // 8

    @property
    def order(self) -> str:
        """Byte order of the words."""
        return "little" if self.little_endian else "big"

    @property
    def keep(self) -> int:
        """The bits of one word that hold its value."""
        return ((1 << self.stored) - 1) << (self.high_bit - self.stored + 1)

    @property
    def above(self) -> int:
        """The bits of one word above HighBit (a sign extension fills them)."""
        return ((1 << self.allocated) - 1) & ~((1 << (self.high_bit + 1)) - 1)


@lru_cache(maxsize=16)
def _repeated(word: int, size: int, order: str, count: int) -> int:
    return int.from_bytes(word.to_bytes(size, order) * count, order)  # type: ignore[arg-type]


def clear_chunk(data: bytes, bits: WordBits) -> bytes | None:
    """`data` (whole words) with every bit outside BitsStored cleared; None if none is set."""
    size, order = bits.size, bits.order
    count = len(data) // size
    if count == 0:
        return None
    value = int.from_bytes(data, order)  # type: ignore[arg-type]
    keep = _repeated(bits.keep, size, order, count)
    outside = value & _repeated(((1 << bits.allocated) - 1) & ~bits.keep, size, order, count)
    if not outside:
        return None
    extension = 0
    if bits.signed:
        signs = value & _repeated(1 << bits.high_bit, size, order, count)
        extension = (signs >> bits.high_bit) * bits.above
        if outside == extension:
            return None  # exactly the sign extension: no information outside
    return ((value & keep) | extension).to_bytes(len(data), order)  # type: ignore[arg-type]


@cache
def _allowed_high_bytes(stored: int, signed: bool) -> bytes:
    """The high bytes a 16-bit word with its value in the low `stored` bits may have."""
    n = 1 << (stored - 8)
    return bytes(sorted({*range(n), *(range(256 - n, 256) if signed else ())}))


def has_stray_bits(data: bytes | memoryview, bits: WordBits) -> bool:
    """Whether any word of `data` has a bit set outside BitsStored (beyond a sign extension)."""
    view = memoryview(data)
    if bits.allocated == 16 and bits.high_bit == bits.stored - 1 and bits.stored >= 8:
        # The usual case (CT, MR: 12 of 16 bits, low-aligned): every bit outside is in
        # the high byte of a word, so a byte translation in C over those bytes answers.
        raw = view.tobytes()  # a copy, but bytes slice by steps in C; a memoryview does not
        high = raw[1 if bits.little_endian else 0 : len(raw) - len(raw) % 2 : 2]
        return bool(high.translate(None, _allowed_high_bytes(bits.stored, bits.signed)))
    view = memoryview(data)
    whole = len(view) - len(view) % bits.size
    step = CHUNK - CHUNK % bits.size
    return any(
        clear_chunk(bytes(view[i : min(i + step, whole)]), bits) is not None
        for i in range(0, whole, step)
    )


def cleared(data: bytes | memoryview, bits: WordBits) -> Iterator[bytes]:
    """`data` with every bit outside BitsStored cleared, a chunk at a time."""
    view = memoryview(data)
    whole = len(view) - len(view) % bits.size
    step = CHUNK - CHUNK % bits.size
    for start in range(0, whole, step):
        chunk = bytes(view[start : min(start + step, whole)])
        yield clear_chunk(chunk, bits) or chunk
    if whole < len(view):
        yield bytes(view[whole:])  # an odd trailing byte (padding) is kept as it is


_LONG_VRS: Final = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"})


def pixel_element(rng: FileRange, ds: Dataset, ts: UID) -> Iterator[bytes] | None:
    """The native Pixel Data element at `rng` with stray bits cleared; None if it has none.

    Encapsulated pixel data (undefined length) is not read here: its decoded words are
    masked by pydicom, and what is re-encoded is written from them. The element is
    produced a chunk at a time: a large object is never in memory whole.
    """
    if ts.is_compressed or ts.is_deflated:
        return None
    bits = WordBits.of(ds, ts.is_little_endian)
    if bits is None:
        return None
    with _value(rng, ts) as (_, value):
        if value is None or not has_stray_bits(value, bits):
            return None
    return _rewritten(rng, ts, bits)


def _rewritten(rng: FileRange, ts: UID, bits: WordBits) -> Iterator[bytes]:
    with _value(rng, ts) as (head, value):
        assert value is not None
        yield head
        yield from cleared(value, bits)


@contextmanager
def _value(rng: FileRange, ts: UID) -> Iterator[tuple[bytes, memoryview | None]]:
    """The element's header and a view of its value (None: undefined length)."""
    with rng.path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        start, end = rng.offset, rng.offset + rng.length
        size = 8
        if not ts.is_implicit_VR and bytes(buf[start + 4 : start + 6]) in _LONG_VRS:
            size = 12
        head = bytes(buf[start : start + size])
        if head[-4:] == b"\xff\xff\xff\xff":
            yield head, None
            return
        value = memoryview(buf)[start + size : end]
        try:
            yield head, value
        finally:
            value.release()


def clear_dataset_pixels(ds: Dataset, ts: UID) -> bool:
    """Clear stray bits of native Pixel Data held in ds itself; whether any were set."""
    if ts.is_compressed or "PixelData" not in ds:
        return False
    bits = WordBits.of(ds, ts.is_little_endian)
    value = ds.PixelData
    if bits is None or not isinstance(value, bytes) or not has_stray_bits(value, bits):
        return False
    ds.PixelData = b"".join(cleared(value, bits))
    return True
