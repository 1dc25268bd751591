#!/usr/bin/env python3
"""What looking at pixels costs, in this process on one core, side by side in one run.

    scripts/bench_pixels.py [--quick] [--json FILE]

- mixed corpus: pydicom's bundled images that decode (ultrasound, photographs, screen
  captures, CT, MR; real text on some) and synthetic ones with names drawn in, through a
  `clean` profile against the same files header-only (`allow`); the ratio is the cost.
  Also: how many were withheld, and why (counts by reason).
- cine: a 640x480 RGB ultrasound of 120 frames with a static overlay, cleaned.
- derived CT: 512x512 DERIVED\\SECONDARY slices without text under the default policy
  (looked at, released) against the same slices as ORIGINAL\\PRIMARY (not looked at).
Synthetic data only, made in a temporary folder; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv"
if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
    os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

import numpy as np  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.data import get_testdata_files  # noqa: E402

from deid_node.config import BurnedInPolicy, ProfileConfig  # noqa: E402
from deid_node.deid.pipeline import Outcome, process_file  # noqa: E402
from deid_node.deid.profiles import compile_profile  # noqa: E402
from deid_node.dicom.encoding import check_file  # noqa: E402
from deid_node.pixels.decode import iter_frames  # noqa: E402
from deid_node.pixels.release import shared_finder  # noqa: E402
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series  # noqa: E402
from deid_node.testing.synthetic.annotated import (  # noqa: E402
    annotated_capture,
    annotated_slice,
    annotated_ultrasound,
    draw_text,
)

KEY = b"\x5e" * 32
MAX_BUNDLED = 4 << 20


def bundled_images() -> list[Path]:
    """pydicom's test files with pixel data that decode and pass the encoding check."""
    found = []
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if path.suffix.lower() not in (".dcm", "") or path.stat().st_size > MAX_BUNDLED:
            continue
        try:
            check_file(path)
            ds = dcmread(path, stop_before_pixels=True)
            if "Rows" not in ds or "SOPClassUID" not in ds:
                continue
            next(iter(iter_frames(path)))
        except Exception:
            continue
        found.append(path)
    return found


def synthetic_with_text(folder: Path, n: int) -> list[Path]:
    """Screen captures, derived slices and cines with a patient's name drawn in."""
    out = []
    for i in range(n):
        who = SyntheticPatient.make(PhiTokens(), seed=100 + i)
        made = [
            annotated_capture(who, burned_in="NO", seed=i)[0],
            annotated_slice(who, burned_in="NO", size=512, seed=i)[0],
            annotated_ultrasound(who, frames=4, burned_in="YES", seed=i)[0],
        ]
        for j, ds in enumerate(made):
            path = folder / f"text-{i}-{j}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.append(path)
    return out


def run(files: list[Path], profile: ProfileConfig, out: Path) -> tuple[float, list[Outcome]]:
    compiled = compile_profile(profile)
    started = time.process_time()
    outcomes = [process_file(p, compiled, KEY, out) for p in files]
    return time.process_time() - started, outcomes


def mixed(folder: Path, quick: bool) -> dict[str, Any]:
    files = bundled_images() + synthetic_with_text(folder, 2 if quick else 5)
    header, _ = run(
        files, ProfileConfig("allow", burned_in_annotation=BurnedInPolicy.ALLOW), folder / "a"
    )
    clean, outcomes = run(
        files, ProfileConfig("clean", burned_in_annotation=BurnedInPolicy.CLEAN), folder / "c"
    )
    withheld = Counter((o.reason or "")[:70] for o in outcomes if o.status.value == "quarantined")
    return {
        "objects": len(files),
        "header_only_s": round(header, 2),
        "clean_s": round(clean, 2),
        "ratio": round(clean / header, 1),
        "withheld": dict(withheld),
    }


def cine(folder: Path, quick: bool) -> dict[str, Any]:
    frames = 30 if quick else 120
    who = SyntheticPatient.make(PhiTokens(), seed=7)
    ds, _ = annotated_ultrasound(who, frames=frames, text_frames=[], burned_in="YES")
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(frames, 480, 640, 3).copy()
    banner = [((8, 6), f"{who.family} {who.given}  {who.patient_id}", 18, (255, 255, 255))]
    for f in range(frames):
        pixels[f], _ = draw_text(pixels[f], banner)
    ds.PixelData = pixels.tobytes()
    path = folder / "cine.dcm"
    ds.save_as(path, enforce_file_format=True)
    cpu, (outcome,) = run(
        [path], ProfileConfig("clean", burned_in_annotation=BurnedInPolicy.CLEAN), folder / "cine"
    )
    return {
        "frames": frames,
        "cpu_s": round(cpu, 2),
        "status": outcome.status.value,
        "pixels": outcome.pixels,
    }


def derived_ct(folder: Path, quick: bool) -> dict[str, Any]:
    n = 10 if quick else 50
    who = SyntheticPatient.make(PhiTokens(), seed=9)
    original, derived = [], []
    for i, ds in enumerate(ct_series(n, patient=who, rows=512, cols=512)):
        path = folder / f"ct-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        original.append(path)
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        path = folder / f"mpr-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        derived.append(path)
    basic = ProfileConfig("basic")
    plain, _ = run(original, basic, folder / "o")
    looked, outcomes = run(derived, basic, folder / "d")
    released = sum(o.status.value == "stored" for o in outcomes)
    return {
        "slices": n,
        "original_ms": round(plain * 1000 / n, 2),
        "derived_ms": round(looked * 1000 / n, 2),
        "extra_ms_per_slice": round((looked - plain) * 1000 / n, 2),
        "released": released,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    shared_finder()  # started once per worker: not part of any object's cost
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[Path, bool], dict[str, Any]]]] = [
        ("mixed corpus", mixed),
        ("cine", cine),
        ("derived CT", derived_ct),
    ]
    with tempfile.TemporaryDirectory(prefix="deid-bench-pixels-") as tmp:
        for name, step in steps:
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            results[name] = step(folder, args.quick)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
