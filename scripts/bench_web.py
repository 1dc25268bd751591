"""The web console under load (part `web` of scripts/bench): audit pages over a million
object rows, and the render time of a 512x512 CT frame, measured in-process through the
ASGI app (server time: no browser, no network).

    .venv/bin/python scripts/bench_web.py [--rows 1000000] [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

ROWS = 1_000_000


def _fill(cfg: Any, rows: int) -> None:
    from deid_node.audit.db import open_audit
    from deid_node.audit.schema import OBJECTS
    from deid_node.audit.sql_engine import transaction

    start = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = ("stored", "stored", "stored", "quarantined", "duplicate", "rejected")
    with open_audit(cfg.database_url) as db:
        engine = db._engine  # a bench's bulk load, not the node's path
        batch = []
        for i in range(rows):
            at = (start + timedelta(seconds=i * 3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            batch.append(
                {
                    "received_at": at,
                    "processed_at": at,
                    "association_id": f"a{i // 500}",
                    "calling_ae": ("CT_SCANNER", "MR_SCANNER", "PACS")[i % 3],
                    "called_ae": "DEID_NODE",
                    "peer_address": "127.0.0.1",
                    "profile": "research",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "size_bytes": 525000,
                    "status": statuses[i % len(statuses)],
                    "pseudo_study_uid": f"2.25.{i // 300}",
                    "pseudo_series_uid": f"2.25.{i // 100}.1",
                    "pseudo_sop_uid": f"2.25.{i}.2",
                }
            )
            if len(batch) == 50_000:
                with transaction(engine, write=True) as conn:
                    conn.execute(insert(OBJECTS), batch)
                batch = []
        if batch:
            with transaction(engine, write=True) as conn:
                conn.execute(insert(OBJECTS), batch)


def _ct(path: Path) -> str:
    from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series

    [ds] = ct_series(1, patient=SyntheticPatient.make(PhiTokens(), 1), seed=1, rows=512, cols=512)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def _times(client: Any, url: str, reps: int, headers: dict[str, str]) -> dict[str, float]:
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        seconds.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    seconds.sort()
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))] * 1000, 1),
    }


def run(rows: int = ROWS, reps: int = 30) -> dict[str, Any]:
    """Fill an audit database, then time the console's audit pages and a frame."""
    from fastapi.testclient import TestClient

    from deid_node.audit.db import open_audit
    from deid_node.audit.records import ObjectRecord
    from deid_node.clock import now
    from deid_node.config import parse_config
    from deid_node.object_status import Status
    from deid_node.web.app import create_app

    work = Path(tempfile.mkdtemp(prefix="deid-bench-web-"))
    cfg = parse_config({"node": {"data_dir": "var"}, "profiles": {"research": {}}}, base_dir=work)
    started = time.perf_counter()
    _fill(cfg, rows)
    fill_s = time.perf_counter() - started
    output = cfg.node.output / "research" / "P" / "S" / "E" / "ct.dcm"
    sop = _ct(output)
    with open_audit(cfg.database_url) as db:
        moment = now()
        record = ObjectRecord(
            received_at=moment,
            processed_at=moment,
            association_id="bench",
            calling_ae="CT_SCANNER",
            called_ae="DEID_NODE",
            peer_address="127.0.0.1",
            profile="research",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size_bytes=output.stat().st_size,
            status=Status.STORED,
            reason=None,
            pseudo_patient_id="P",
            pseudo_study_uid="S",
            pseudo_series_uid="E",
            pseudo_sop_uid=sop,
            output_path=str(output),
        )
        db.record_objects([(record, None)])
        db.users.add("bench", "bench password", moment)
        token = db.users.new_token("bench", moment)
    headers = {"Authorization": f"Bearer {token}"}
    pages = {
        "newest 50": "/api/objects?limit=50",
        "page at offset 10,000": "/api/objects?limit=50&offset=10000",
        "status=quarantined": "/api/objects?limit=50&status=quarantined",
        "calling_ae + since": "/api/objects?limit=50&calling_ae=PACS&since=2026-02-01",
    }
    result: dict[str, Any] = {"rows": rows, "fill_s": round(fill_s, 1), "pages": {}}
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        for name, url in pages.items():
            result["pages"][name] = _times(client, url, reps, headers)
        frame = f"/api/instances/{sop}/frames/0.png?window_center=40&window_width=400"
        result["frame_512"] = _times(client, frame, reps, headers)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.rows, args.reps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
