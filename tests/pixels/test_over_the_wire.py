"""Over the wire, with a `clean` profile: ultrasound and screen captures sent by dcmtk's
storescu come out with their burned-in text blanked, and the audit says what was done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from deid_node.config import Config
from deid_node.pixels.decode import iter_frames
from deid_node.pixels.ocr import TextFinder
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    secondary_capture,
    write_files,
)
from deid_node.testing.synthetic.annotated import annotated_capture, annotated_ultrasound
from tests.support.dcmtk import STORESCU, run_dcmtk
from tests.support.node import audit_objects, node_table

CONFIG = """
[[sources]]
ae_title = "US_CART"
profile = "research"

[profiles.research]
patient_id_prefix = "RES"
burned_in_annotation = "clean"
"""


@pytest.mark.usefixtures("dcmtk")
def test_burned_in_text_sent_by_storescu_is_blanked_before_anything_is_written(
    tmp_path: Path,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    text_finder: TextFinder,
) -> None:
    cfg = write_config(node_table() + CONFIG)
    node = start_node(cfg)
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=11)
    us, _ = annotated_ultrasound(patient, frames=2, text_frames=[1], rows=240, cols=320)
    sc, _ = annotated_capture(patient, rows=240, cols=320, seed=2)
    plain = secondary_capture(patient, rows=240, cols=320, seed=3)
    plain.BurnedInAnnotation = "YES"  # said to carry text, and has none
    files = write_files([us, sc, plain], tmp_path / "send")
    host, port = node.address
    done = run_dcmtk(
        STORESCU, "-aet", "US_CART", "-aec", "DEID_NODE", host, str(port), *map(str, files)
    )
    assert done.returncode == 0, done.stderr
    assert node.wait_idle(120)
    rows = {str(r["sop_class_uid"]) + str(r["size_bytes"]): r for r in audit_objects(cfg)}
    assert len(rows) == 3 and all(r["status"] == "stored" for r in rows.values()), rows
    by_pixels = sorted(str(r["pixels"]) for r in rows.values())
    assert by_pixels[0].startswith("checked: no text in 1 frame")
    assert all(p.startswith("cleaned: ") for p in by_pixels[1:])
    for row in rows.values():
        out = Path(str(row["output_path"]))
        assert tokens.find_in(out.read_bytes()) == []
        written = pydicom.dcmread(out)
        assert written.BurnedInAnnotation == "NO" and written.PatientIdentityRemoved == "YES"
        photometric = str(written.PhotometricInterpretation)
        for frame in iter_frames(out):
            assert text_finder.find(frame, photometric) == []


QUARANTINE_ONLY = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "basic"

[profiles.basic]
"""


@pytest.mark.usefixtures("dcmtk")
def test_a_node_that_only_quarantines_looks_at_derived_images(
    tmp_path: Path, write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    # Its workers must be able to look at pixels: a screen capture saved as CT, claiming
    # no text, is withheld; a reformatted slice without text is released, not withheld
    # because its pixels could not be looked at.
    from deid_node.testing.synthetic import ct_series
    from deid_node.testing.synthetic.annotated import annotated_slice

    cfg = write_config(node_table() + QUARANTINE_ONLY)
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), seed=12)
    capture, _ = annotated_slice(patient, burned_in="NO", size=128)
    reformat = ct_series(1, patient=patient, rows=128, cols=128, seed=4)[0]
    reformat.ImageType = ["DERIVED", "SECONDARY", "MPR"]
    files = write_files([capture, reformat], tmp_path / "send")
    host, port = node.address
    done = run_dcmtk(
        STORESCU, "-aet", "CT_SCANNER", "-aec", "DEID_NODE", host, str(port), *map(str, files)
    )
    assert done.returncode == 0, done.stderr
    assert node.wait_idle(120)
    rows = sorted(audit_objects(cfg), key=lambda r: str(r["status"]))
    assert [r["status"] for r in rows] == ["quarantined", "stored"], rows
    assert "text-like content" in str(rows[0]["reason"])
    assert str(rows[1]["pixels"]).startswith("checked: no text")
