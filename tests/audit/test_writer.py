"""The audit writer thread: order, after_commit only after commit, close; real SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deid_node.audit.db import open_audit
from deid_node.audit.records import AssociationFilters, Filters, ObjectRecord
from deid_node.audit.writer import AuditWriter
from deid_node.errors import StorageError
from deid_node.object_status import Status

T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def record(sop: str, association_id: str | None = "a1") -> ObjectRecord:
    """A stored object with made-up pseudonyms."""
    return ObjectRecord(
        received_at=T0,
        processed_at=T0,
        association_id=association_id,
        calling_ae="CT_SCANNER",
        called_ae="DEID_NODE",
        peer_address="127.0.0.1",
        profile="research",
        sop_class_uid=None,
        transfer_syntax_uid=None,
        size_bytes=10,
        status=Status.STORED,
        reason=None,
        pseudo_patient_id="RES1",
        pseudo_study_uid="2.25.1",
        pseudo_series_uid="2.25.2",
        pseudo_sop_uid=sop,
        output_path=None,
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def writer(url: str) -> Iterator[AuditWriter]:
    db = open_audit(url)
    writer = AuditWriter(db, lambda: None)
    writer.start()
    yield writer
    writer.close(30)
    db.close()


def sops(url: str) -> list[object]:
    """Pseudo SOP UIDs of the committed object rows, in id order, read on a new engine."""
    with open_audit(url) as db:
        return [row["pseudo_sop_uid"] for row in db.iter_objects(Filters())]


def test_after_commit_sees_its_row_committed(url: str, writer: AuditWriter) -> None:
    seen: list[list[object]] = []
    done = threading.Event()

    def after() -> None:
        seen.append(sops(url))  # another engine: only committed rows are visible to it
        done.set()

    writer.put_object(record("2.25.10"))
    writer.put_object(record("2.25.11"), None, after)
    assert done.wait(30)
    assert seen == [["2.25.10", "2.25.11"]]


def test_calls_and_objects_are_written_in_order(url: str) -> None:
    db = open_audit(url)
    writer = AuditWriter(db, lambda: None)
    writer.start()
    writer.put_call("start", lambda d: d.record_association_start("a1", T0, "::1", "CT", "N"))
    writer.put_object(record("2.25.20"))
    writer.put_call("end", lambda d: d.record_association_end("a1", T0, 1, "released"))
    assert writer.close(30)  # everything queued is written before the thread ends
    assert writer.idle
    db.close()
    assert sops(url) == ["2.25.20"]
    with open_audit(url) as check:
        [assoc] = check.iter_associations(AssociationFilters())
    assert (assoc["objects"], assoc["outcome"]) == (1, "released")


def test_a_failing_after_commit_is_logged_and_the_writer_goes_on(
    url: str, writer: AuditWriter, caplog: pytest.LogCaptureFixture
) -> None:
    done = threading.Event()

    def broken() -> None:
        raise StorageError("cannot remove spool file 0001")

    writer.put_object(record("2.25.30"), None, broken)
    writer.put_object(record("2.25.31"), None, done.set)
    assert done.wait(30)
    assert sops(url) == ["2.25.30", "2.25.31"]
    messages = [r.getMessage() for r in caplog.records if r.name == "deid_node.audit.writer"]
    assert messages == ["after audit commit: cannot remove spool file 0001"]
