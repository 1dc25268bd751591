"""Frames back into a Pixel Data element, one frame at a time.

Where a lossless encoder is installed for the syntax an object came in (RLE Lossless,
JPEG-LS Lossless, JPEG 2000 Lossless), the cleaned frames go back into it; anything else
(JPEG, JPEG Lossless, HTJ2K, lossy JPEG-LS or JPEG 2000, big endian, deflated) becomes
Explicit VR Little Endian, uncompressed. Colour that was decoded from YBR is RGB now, and
every colour frame is written by pixel (planar configuration 0).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, Final

import numpy as np
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from deid_node.pixels.decode import Layout, PixelError

LOSSLESS_REENCODED: Final = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
_PIXEL_DATA: Final = struct.pack("<HH", 0x7FE0, 0x0010)
_ITEM: Final = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_END: Final = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_UNDEFINED: Final = 0xFFFFFFFF


def output_syntax(ts: UID) -> UID:
    """The transfer syntax cleaned frames of an object in `ts` are written in."""
    if ts in LOSSLESS_REENCODED and get_encoder(ts).is_available:
        return ts
    if ts == ImplicitVRLittleEndian:
        return ts
    return ExplicitVRLittleEndian


def output_layout(layout: Layout) -> Layout:
    """The layout of the written pixel data: its syntax, RGB for decoded YBR, planar 0."""
    if layout.bits_allocated % 8:
        raise PixelError(f"{layout.bits_allocated}-bit pixel data is not re-encoded")
    photometric = layout.photometric
    if photometric in ("YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        photometric = "RGB"  # what decode.iter_frames yields for them
    elif photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"):
        raise PixelError(f"photometric interpretation {photometric} is not re-encoded")
    return replace(
        layout,
        photometric=photometric,
        planar=0,
        transfer_syntax=output_syntax(layout.transfer_syntax),
    )


def pixel_data_element(frames: Iterable[np.ndarray], out: Layout) -> Iterator[bytes]:
    """The encoded (7FE0,0010) element, header first, then frame by frame.

    `out` is from :func:`output_layout`; every frame must have its shape.
    """
    ts = out.transfer_syntax
    if ts.is_compressed:
        yield _header(ts, b"OB", _UNDEFINED)
        yield _ITEM + struct.pack("<L", 0)  # an empty basic offset table
        encoder = get_encoder(ts)
        count = 0
        for frame in frames:
            data = encoder.encode(_checked(frame, out), **_description(out))
            if len(data) % 2:
                data += b"\0"
            yield _ITEM + struct.pack("<L", len(data)) + data
            count += 1
        _check_count(count, out)
        yield _SEQUENCE_END
        return
    size = out.rows * out.columns * out.samples * (out.bits_allocated // 8)
    total = size * out.frames
    vr = b"OW" if out.bits_allocated > 8 else b"OB"
    yield _header(ts, vr, total + total % 2)
    count = 0
    for frame in frames:
        yield _checked(frame, out).tobytes()
        count += 1
    _check_count(count, out)
    if total % 2:
        yield b"\0"


def _header(ts: UID, vr: bytes, length: int) -> bytes:
    if ts.is_implicit_VR:
        return _PIXEL_DATA + struct.pack("<L", length)
    return _PIXEL_DATA + vr + b"\0\0" + struct.pack("<L", length)


def _checked(frame: np.ndarray, out: Layout) -> np.ndarray:
    shape = (out.rows, out.columns) if out.samples == 1 else (out.rows, out.columns, out.samples)
    if frame.shape != shape:
        raise PixelError(f"a frame of shape {frame.shape}, expected {shape}")
    kind = "i" if out.signed else "u"
    return np.ascontiguousarray(frame, dtype=np.dtype(f"<{kind}{out.bits_allocated // 8}"))


def _check_count(count: int, out: Layout) -> None:
    if count != out.frames:
        raise PixelError(f"{count} of {out.frames} frames to encode")


def _description(out: Layout) -> dict[str, Any]:
    described: dict[str, Any] = {
        "rows": out.rows,
        "columns": out.columns,
        "number_of_frames": 1,
        "samples_per_pixel": out.samples,
        "bits_allocated": out.bits_allocated,
        "bits_stored": out.bits_stored,
        "pixel_representation": int(out.signed),
        "photometric_interpretation": out.photometric,
        "planar_configuration": 0,
    }
    if out.transfer_syntax == JPEG2000Lossless:
        described["use_mct"] = False  # RGB stays RGB (with MCT it would be YBR_RCT)
    return described
