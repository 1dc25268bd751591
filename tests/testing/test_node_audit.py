"""NodeAudit: what the fuzzer and the bench read of a node's audit database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters, ObjectRecord
from deid_node.testing.node_audit import NodeAudit

T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def record(status: str, received_at: datetime, reason: str | None = None) -> ObjectRecord:
    return ObjectRecord(
        received_at=received_at,
        processed_at=received_at,
        association_id="a1",
        calling_ae="FUZZER",
        called_ae="DEID_NODE",
        peer_address="127.0.0.1",
        profile="fuzz",
        sop_class_uid=None,
        transfer_syntax_uid=None,
        size_bytes=10,
        status=status,
        reason=reason,
        pseudo_patient_id=None,
        pseudo_study_uid=None,
        pseudo_series_uid=None,
        pseudo_sop_uid=None,
        output_path=None,
    )


def test_a_database_not_there_yet_reads_as_none_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with NodeAudit(f"sqlite:///{path}", path) as audit:
        assert not audit.available
        assert audit.objects(Filters()) is None
        assert audit.status_counts(Filters()) is None
    assert not path.exists()
    assert NodeAudit(None).objects(Filters()) is None


def test_counts_and_rows_since_a_moment(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    with open_audit(url) as db, NodeAudit(url, path) as audit:
        db.record_objects([(record("stored", T0), None)])  # before the run: not counted
        assert audit.status_counts(Filters(since=T0 + timedelta(seconds=1))) == {}
        later = [
            record("stored", T0 + timedelta(seconds=2)),
            record("quarantined", T0 + timedelta(seconds=3), "burned-in annotation"),
            record("rejected", T0 + timedelta(seconds=4), "0xC210"),
        ]
        db.record_objects([(r, None) for r in later])  # the node keeps writing
        since = Filters(since=T0 + timedelta(seconds=1))
        assert audit.status_counts(since) == {"stored": 1, "quarantined": 1, "rejected": 1}
        rows = audit.objects(since)
        assert rows is not None
        assert [(r["status"], r["reason"]) for r in rows] == [
            ("stored", None),
            ("quarantined", "burned-in annotation"),
            ("rejected", "0xC210"),
        ]
