"""Make the README's before/after pictures of a synthetic ultrasound cleaned by deid-node.

The ultrasound is made up (deid_node.testing.synthetic): its banner, hospital and
measurement are drawn in with DejaVu Sans and Pillow's bitmap font. It goes through the
pipeline with a `clean` profile, as the node would de-identify it; the first frame before
and after is written as JPEG into scripts/readme/. Run from the repository root::

    .venv/bin/python scripts/readme_images.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from deid_node.config import BurnedInPolicy, ProfileConfig
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.pixels.decode import iter_frames
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient
from deid_node.testing.synthetic.annotated import annotated_ultrasound

OUT = Path(__file__).resolve().parent / "readme"


def main() -> None:
    patient = SyntheticPatient.make(PhiTokens(), seed=5)
    ds, _ = annotated_ultrasound(patient, frames=1, rows=360, cols=480, seed=1)
    profile = compile_profile(
        ProfileConfig(name="research", burned_in_annotation=BurnedInPolicy.CLEAN)
    )
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "us.dcm"
        ds.save_as(source, enforce_file_format=True)
        outcome = process_file(source, profile, b"\0" * 32, Path(tmp) / "out")
        if outcome.output_path is None:
            raise SystemExit(f"not written: {outcome.reason}")
        OUT.mkdir(exist_ok=True)
        for name, path in (("us_before.jpg", source), ("us_after.jpg", outcome.output_path)):
            frame = next(iter(iter_frames(path)))
            Image.fromarray(frame).save(OUT / name, quality=85)
    print(f"{OUT}/us_before.jpg, us_after.jpg: {outcome.pixels}")


if __name__ == "__main__":
    main()
