"""The console's header table shows values as DICOM writes them."""

from __future__ import annotations

from pathlib import Path

from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.web.images import header_rows


def test_the_consoles_header_table_writes_several_values_as_dicom_does(tmp_path: Path) -> None:
    ds = ct_series(1, patient=SyntheticPatient.make(PhiTokens(), seed=5), rows=8, cols=8)[0]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    rows = {r["keyword"]: r["value"] for r in header_rows(path)}
    assert rows["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
