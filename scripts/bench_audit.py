"""Audit rows per second, SQLite against PostgreSQL: object rows written the way the node's
audit writer writes them (AuditDB.record_objects, a batch per transaction), same run.

PostgreSQL is a throwaway Debian server in a temporary folder (deid_node/testing/postgres.py),
with fsync on, as a real one runs; or the database of `--url`.

    .venv/bin/python scripts/bench_audit.py [--rows 20000] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from deid_node.audit.db import open_audit
from deid_node.audit.records import ObjectRecord
from deid_node.object_status import Status
from deid_node.testing.postgres import PostgresServer, server_bin


def _record(i: int) -> ObjectRecord:
    at = datetime.now(UTC)
    return ObjectRecord(
        received_at=at,
        processed_at=at,
        association_id="a" * 32,
        calling_ae="CT_SCANNER",
        called_ae="DEID_NODE",
        peer_address="127.0.0.1",
        profile="research",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size_bytes=526_000,
        status=Status.STORED,
        reason=None,
        pseudo_patient_id="RES1",
        pseudo_study_uid="2.25.1",
        pseudo_series_uid="2.25.2",
        pseudo_sop_uid=f"2.25.{1000 + i}",
        output_path=f"/output/research/RES1/2.25.1/2.25.2/2.25.{1000 + i}.dcm",
        receipt_id=f"receipt-{i}",
        node="gw-1",
    )


def rows_per_second(url: str, rows: int, batch: int) -> float:
    """Write `rows` object rows in transactions of `batch`; rows per second."""
    with open_audit(url) as db:
        db.record_objects([(_record(-1), None)])  # schema and connection ready
        started = time.perf_counter()
        for first in range(0, rows, batch):
            db.record_objects([(_record(i), None) for i in range(first, first + batch)])
        return rows / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    """Print rows per second per database and batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--url", help="a PostgreSQL database to measure instead")
    args = parser.parse_args()
    server = None
    if args.url is None:
        bin_dir = server_bin()
        if bin_dir is None:
            print("PostgreSQL server binaries missing: apt-get install postgresql", file=sys.stderr)
            return 1
        server = PostgresServer(bin_dir, _free_port(), fsync=True)
        server.init()
        server.start()
    folder = Path(tempfile.mkdtemp(prefix="deid-bench-audit-"))
    try:
        for batch in (500, 20):  # the writer's most, and a slow stream's
            sqlite = rows_per_second(f"sqlite:///{folder / f'audit-{batch}.db'}", args.rows, batch)
            url = args.url or server.create_database()  # type: ignore[union-attr]
            postgres = rows_per_second(url, args.rows, batch)
            print(
                f"batch {batch:3d}: SQLite {sqlite:7.0f} rows/s, PostgreSQL {postgres:7.0f} "
                f"rows/s ({postgres / sqlite:.2f}x)"
            )
    finally:
        if server is not None:
            server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
