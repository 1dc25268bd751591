"""A pydicom decoder plugin for 12-bit JPEG Extended (Process 4), through imagecodecs.

No other installed plugin reads it: Pillow and GDCM stop at 8-bit JPEG Extended, and
pylibjpeg-libjpeg (which does) is GPLv3. imagecodecs (BSD-3) bundles libjpeg-turbo 3
(BSD-style), which decodes 8- and 12-bit lossy JPEG. Registered by :func:`register`
(pixels/decode.py calls it), tried after pydicom's own plugins.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, JPEGExtended12Bit

LABEL: Final = "imagecodecs"
DECODER_DEPENDENCIES: Final = {JPEGExtended12Bit: ("imagecodecs>=2024.1",)}


def is_available(uid: UID) -> bool:
    """Whether imagecodecs is installed with its libjpeg-turbo codec (pydicom asks)."""
    if uid != JPEGExtended12Bit:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner: Any) -> bytes:
    """One frame's JPEG codestream to native words, as pydicom's plugins return them."""
    import imagecodecs
    import numpy as np

    # As the other plugins do for JPEG: colour stays as coded (no YCbCr to RGB here).
    image = imagecodecs.jpeg8_decode(src, colorspace=None, outcolorspace=None)
    width = 2 if runner.bits_allocated > 8 else 1
    if image.dtype.itemsize != width:
        image = image.astype(np.uint16 if width == 2 else np.uint8)
    return bytes(np.ascontiguousarray(image).astype(f"<u{width}", copy=False).tobytes())


def register() -> None:
    """Add the plugin to pydicom's JPEG Extended decoder (once)."""
    with contextlib.suppress(ValueError):  # added before
        get_decoder(JPEGExtended12Bit).add_plugin(LABEL, (__name__, "decode_frame"))
