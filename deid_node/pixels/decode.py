"""Frames out of every transfer syntax the installed plugins decode, one at a time.

pydicom reads each frame's bytes from the file only when that frame is asked for (native
data by its offset, encapsulated data by its fragments), so a 1 GB multi-frame object is
never in memory whole. Which plugin decodes which syntax is pydicom's choice among those
installed (pyproject.toml says which and why): :func:`codecs` reports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import UID

from deid_node.errors import DeidError
from deid_node.pixels import jpeg12

if TYPE_CHECKING:
    import numpy as np

# Every transfer syntax with pixel data the node may receive, in the order a table of
# them reads best: native, deflated, then the compressed ones.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, Process 14, Selection Value 1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
)


# Transfer syntaxes whose decoded values differ from what was coded (lossy ones).
LOSSY_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.203",
    }
)

jpeg12.register()  # 12-bit JPEG Extended: no plugin pydicom ships reads it here


class PixelError(DeidError):
    """Pixel data that cannot be decoded; the message names no value, only why."""


@dataclass(frozen=True)
class Layout:
    """How an object's pixel data is laid out, from its Image Pixel module."""

    rows: int
    columns: int
    samples: int
    frames: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    transfer_syntax: UID

    @classmethod
    def of(cls, ds: Dataset) -> Layout:
        """The layout `ds` declares; PixelError if the module is incomplete."""
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
            return cls(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples=int(ds.get("SamplesPerPixel") or 1),
                frames=frames,
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated),
                signed=int(ds.get("PixelRepresentation") or 0) == 1,
                photometric=str(ds.PhotometricInterpretation).strip(),
                planar=int(ds.get("PlanarConfiguration") or 0),
                transfer_syntax=UID(ds.file_meta.TransferSyntaxUID),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PixelError(f"incomplete Image Pixel module ({type(exc).__name__})") from None


def can_decode(transfer_syntax: str) -> bool:
    """Whether an installed plugin decodes this transfer syntax."""
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def codecs() -> list[tuple[UID, list[str], list[str]]]:
    """(transfer syntax, plugins that decode it, plugins that encode it) for each one."""
    rows = []
    for ts in map(UID, TRANSFER_SYNTAXES):
        decoders = sorted(_plugins(get_decoder, ts)) or (["native"] if not ts.is_compressed else [])
        encoders = sorted(_plugins(get_encoder, ts)) or (["native"] if not ts.is_compressed else [])
        rows.append((ts, decoders, encoders))
    return rows


def _plugins(lookup: Any, ts: UID) -> set[str]:
    try:
        return set(lookup(ts).available_plugins)
    except (NotImplementedError, ValueError):
        return set()


def read_layout(path: Path) -> Layout:
    """The layout of the object at `path`, read without its pixel data."""
    try:
        with warnings.catch_warnings():  # pydicom's warnings on odd files: the error says it
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise PixelError(f"unreadable object ({type(exc).__name__})") from None
    return Layout.of(ds)


def iter_frames(path: Path, *, as_stored: bool = False) -> Iterator[np.ndarray]:
    """Each frame of the object at `path`, decoded, in order; one in memory at a time.

    Shapes are (rows, columns) or (rows, columns, samples) whatever the planar
    configuration; YBR_FULL, YBR_FULL_422 and (JPEG 2000's) YBR_RCT and YBR_ICT come out
    as RGB; other photometric interpretations (MONOCHROME1, PALETTE COLOR) as stored.
    PixelError when the syntax has no plugin here or the data does not decode (the
    message names the syntax). Bits outside BitsStored are cleared (signed values sign-
    extended from HighBit), unless `as_stored`: then they come as they are stored.
    """
    layout = read_layout(path)
    ts = layout.transfer_syntax
    if not can_decode(ts):
        raise PixelError(f"no decoder here for {ts.name}")
    produced = 0
    try:
        # A deflated body is one zlib stream: pydicom inflates it whole, then decodes.
        source: Path | Dataset = dcmread(path) if ts.is_deflated else path
        # pydicom tries each installed plugin in turn until one decodes the frame.
        for frame in iter_pixels(source, correct_unused_bits=not as_stored):
            produced += 1
            yield frame
    except Exception as exc:
        raise PixelError(f"{ts.name} pixel data does not decode ({type(exc).__name__})") from None
    if produced != layout.frames:
        raise PixelError(f"{produced} of {layout.frames} frames decoded ({ts.name})")
