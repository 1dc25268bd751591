"""scripts/bench end to end, quick: the bare pynetdicom SCP and dcmtk's storescp, one rep.

Checks that the bench runs and reports, not how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dcmtk import STORESCU
from tests.support.paths import REPO

STORESCP = Path("/usr/bin/storescp")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_bench_bare_and_dcmtk(tmp_path: Path) -> None:
    if not (STORESCP.exists() and STORESCU.exists()):
        pytest.skip(
            "dcmtk's /usr/bin/storescp and /usr/bin/storescu are absent (apt-get install dcmtk)"
        )
    results_file = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench"), "--quick", "--reps", "1"]
    cmd += [
        "--only",
        "bare,dcmtk",
        "--no-offline",
        "--no-forward",
        "--no-web",
        "--json",
        str(results_file),
    ]
    cmd += ["--tmpdir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=80, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(results_file.read_text(encoding="utf-8"))
    assert report["machine"]["nproc"] >= 1
    assert report["versions"]["pynetdicom"]
    assert "offline" not in report
    results = report["results"]
    assert {r["receiver"] for r in results} == {"bare", "dcmtk"}
    assert {r["scenario"] for r in results} == {"ct1", "ct4", "us", "px"}
    cost = report["pixel_cost"]  # burned-in text, measured in the bench's own process
    assert cost["frames"] > cost["objects"] > 0 and cost["ms_per_frame"] > 0
    assert cost["clean"]["stored"] == cost["objects"]
    for r in results:
        assert r["ok"], (r["scenario"], r["receiver"], r["errors"])
        assert r["objects"] > 0
        assert r["bytes"] > 0
        assert len(r["reps"]) == 1
        assert r["median_s"] > 0
        assert r["peak_rss_mb"] > 0
    # the temporary data folder is gone; only the results file stays
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
