"""Pixel libraries kept out of processes that never touch pixel values.

pydicom imports numpy whenever it can, and, to say which pixel plugins are available,
Pillow, GDCM and the pylibjpeg family as well: some 35 MB in every process that merely
reads headers. Receiving processes and header-only workers call :func:`keep_pixels_out`
before anything imports pydicom; pydicom then reports those plugins unavailable, which
such a process never asks about. Processes that clean pixels never call it.
"""

from __future__ import annotations

import sys
from typing import Final

PIXEL_LIBRARIES: Final = (
    "numpy",
    "PIL",
    "gdcm",
    "pylibjpeg",
    "openjpeg",
    "rle",
    "libjpeg",
    "jpeg_ls",
    "tesserocr",
)


def keep_pixels_out() -> None:
    """Make the pixel libraries unimportable in this process (an import raises)."""
    for name in PIXEL_LIBRARIES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
