"""De-identified output, read for the console: header summaries and frames as PNG.

Only files under the node's output folder are read: spool and quarantine (PHI) never.
Rendering (PS3.3 C.11): the modality LUT (rescale slope and intercept, or the LUT
sequence), then VOI: the window asked for, else the file's first window or VOI LUT, else
the full range, with the LINEAR function of C.11.2.1.2.1; MONOCHROME1 inverted; RGB,
YBR and palette colour shown as 8-bit RGB.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array

__all__ = ["InstanceInfo", "OutsideOutput", "header_rows", "info", "linear_window", "render_png"]

_CACHE_SIZE: Final = 4096


class OutsideOutput(Exception):
    """A path that is not a de-identified output file of this node."""


@dataclass(frozen=True)
class InstanceInfo:
    """What the viewer needs to know of one instance before it asks for frames."""

    modality: str
    series_description: str
    instance_number: int | None
    frames: int
    rows: int
    columns: int
    photometric_interpretation: str
    windows: tuple[tuple[float, float], ...]  # (center, width) presets of the file


_lock = threading.Lock()
_infos: OrderedDict[tuple[str, int], InstanceInfo] = OrderedDict()


def checked_path(output_root: Path, path: str) -> Path:
    """`path` if it is a file under the output folder, else OutsideOutput."""
    root = output_root.resolve()
    target = Path(path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise OutsideOutput(path)
    return target


def _numbers(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [float(v) for v in values]


def info(path: Path) -> InstanceInfo:
    """The instance's summary, read once per file version (cached)."""
    key = (str(path), path.stat().st_mtime_ns)
    with _lock:
        found = _infos.get(key)
        if found is not None:
            _infos.move_to_end(key)
            return found
    ds = dcmread(path, stop_before_pixels=True)
    centers = _numbers(ds.get("WindowCenter"))
    widths = _numbers(ds.get("WindowWidth"))
    number = ds.get("InstanceNumber")
    found = InstanceInfo(
        modality=str(ds.get("Modality", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        instance_number=int(number) if number not in (None, "") else None,
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "") or ""),
        windows=tuple(zip(centers, widths, strict=False)),
    )
    with _lock:
        _infos[key] = found
        while len(_infos) > _CACHE_SIZE:
            _infos.popitem(last=False)
    return found


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR, to 0..255."""
    x = values.astype(np.float64)
    if width <= 1:  # the standard's threshold case
        return np.where(x <= center - 0.5, 0.0, 255.0)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.where(x <= low, 0.0, np.where(x > high, 255.0, y))


def _full_range(values: np.ndarray) -> np.ndarray:
    x = values.astype(np.float64)
    low, high = float(x.min()), float(x.max())
    if high <= low:
        return np.zeros_like(x)
    return (x - low) * (255.0 / (high - low))


def _grey(frame: np.ndarray, ds: Dataset, window: tuple[float, float] | None) -> np.ndarray:
    values = apply_modality_lut(frame, ds)
    if window is not None:
        out = linear_window(values, *window)
    elif "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        centers, widths = _numbers(ds.get("WindowCenter")), _numbers(ds.get("WindowWidth"))
        if centers and widths and "VOILUTSequence" not in ds:
            out = linear_window(values, centers[0], widths[0])
        else:
            out = _full_range(apply_voi_lut(values, ds, index=0))
    else:
        out = _full_range(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 255.0 - out
    return out


def _to_8bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 or bits <= 8:
        return rgb.astype(np.uint8)
    return (rgb.astype(np.float64) * (255.0 / ((1 << bits) - 1))).round().astype(np.uint8)


def render(path: Path, index: int, window: tuple[float, float] | None) -> np.ndarray:
    """Frame `index` (0-based) as uint8: (rows, columns) grey or (rows, columns, 3) RGB."""
    ds = dcmread(path, stop_before_pixels=True)  # the LUTs and windows are in the header
    frame = pixel_array(str(path), index=index)  # one frame decoded; YBR arrives as RGB
    photometric = str(ds.PhotometricInterpretation)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey: np.ndarray = np.clip(np.rint(_grey(frame, ds, window)), 0, 255)
        return grey.astype(np.uint8)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_8bit(np.asarray(rgb), bits)
    return _to_8bit(frame, int(ds.get("BitsStored", 8) or 8))


def render_png(path: Path, index: int, window: tuple[float, float] | None) -> bytes:
    """The frame as a PNG."""
    from PIL import Image  # only the console renders

    image = render(path, index, window)
    buffer = io.BytesIO()
    Image.fromarray(image, "L" if image.ndim == 2 else "RGB").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _as_written(value: object) -> str:
    """A value as DICOM writes it: several values joined by a backslash
    (ORIGINAL\\PRIMARY\\AXIAL), not as a Python list."""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def header_rows(path: Path, limit: int = 400) -> list[dict[str, str]]:
    """The de-identified header, element by element (values cut short), sequences flat."""
    ds = dcmread(path, stop_before_pixels=True)
    rows: list[dict[str, str]] = []

    def walk(data: Dataset, depth: int) -> None:
        for elem in data:
            if len(rows) >= limit:
                return
            value = (
                ""
                if elem.VR == "SQ"
                else _as_written(elem.value)
                if elem.VR not in ("OB", "OW", "UN")
                else "(binary)"
            )
            rows.append(
                {
                    "tag": f"({elem.tag.group:04X},{elem.tag.element:04X})",
                    "keyword": ("  " * depth) + (elem.keyword or "(private)"),
                    "vr": elem.VR,
                    "value": value[:120],
                }
            )
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item, depth + 1)

    walk(ds.file_meta, 0)
    walk(ds, 0)
    return rows
