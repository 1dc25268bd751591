"""Audit database tests: real SQLite files under tmp_path, no mocks."""

from __future__ import annotations

import csv
import dataclasses
import io
import sqlite3
import stat
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, text

from deid_node.audit.db import AuditDB, open_audit
from deid_node.audit.export import write_csv
from deid_node.audit.migrations import MIGRATIONS, migrate
from deid_node.audit.records import (
    STATUSES,
    STUDY_COLUMNS,
    AssociationFilters,
    Filters,
    LinkageRecord,
    ObjectRecord,
    StudySummary,
    format_time,
    parse_time,
)
from deid_node.audit.schema import LINKAGE_COLUMNS, OBJECT_COLUMNS, Base
from deid_node.audit.sql_engine import SQLITE_BUSY_TIMEOUT_MS, create_audit_engine
from deid_node.errors import AuditError
from deid_node.object_status import Origin, Status

T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
NEXT = len(MIGRATIONS) + 1  # the version of a test's own extra migration step
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def make_record(**changes: object) -> ObjectRecord:
    """An object record with made-up pseudonymous values; keyword arguments replace fields."""
    base = ObjectRecord(
        received_at=T0,
        processed_at=T0 + timedelta(seconds=1, microseconds=250),
        association_id="5f0c6a3e9b2d4c1e8a7f6b5c4d3e2f1a",
        calling_ae="CT_SCANNER",
        called_ae="DEID_NODE",
        peer_address="127.0.0.1",
        profile="research",
        sop_class_uid=CT_IMAGE_STORAGE,
        transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        size_bytes=526_848,
        status="stored",
        reason=None,
        pseudo_patient_id="RES7f3a",
        pseudo_study_uid="2.25.1001",
        pseudo_series_uid="2.25.2001",
        pseudo_sop_uid="2.25.3001",
        output_path="output/research/RES7f3a/2.25.1001/2.25.2001/2.25.3001.dcm",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make_linkage(**changes: object) -> LinkageRecord:
    """A linkage record with obviously fake original identifiers."""
    base = LinkageRecord(
        profile="research",
        original_patient_id="FAKE-PID-1",
        original_patient_name="FAKE^PATIENT",
        original_accession_number="FAKE-ACC-1",
        original_study_uid="1.2.3.4.1",
        original_series_uid="1.2.3.4.2",
        original_sop_uid="1.2.3.4.3",
        pseudo_patient_id="RES7f3a",
        pseudo_study_uid="2.25.1001",
        pseudo_sop_uid="2.25.3001",
        date_shift_days=-1234,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def as_row(record: ObjectRecord, object_id: int) -> dict[str, object]:
    """What get_object / iter_objects should return for a recorded ObjectRecord."""
    return {"id": object_id, **dataclasses.asdict(record)}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # A folder that does not exist yet: open_audit must create it.
    return f"sqlite:///{tmp_path / 'var' / 'audit.db'}"


@pytest.fixture
def db(db_url: str) -> Iterator[AuditDB]:
    audit = open_audit(db_url)
    yield audit
    audit.close()


# -- round trip -------------------------------------------------------------------------------


def test_record_objects_round_trip(db: AuditDB) -> None:
    first = make_record()
    second = make_record(
        received_at=T0 + HOUR,
        processed_at=None,
        association_id=None,
        sop_class_uid=None,
        transfer_syntax_uid=None,
        status="quarantined",
        reason="BurnedInAnnotation is YES",
        pseudo_patient_id=None,
        pseudo_study_uid=None,
        pseudo_series_uid=None,
        pseudo_sop_uid=None,
        output_path=None,
        quarantine_path="quarantine/0001.dcm",
    )
    ids = db.record_objects([(first, None), (second, None)])

    assert len(ids) == 2 and ids[0] < ids[1]
    assert db.get_object(ids[0]) == as_row(first, ids[0])
    assert db.get_object(ids[1]) == as_row(second, ids[1])
    assert db.get_object(ids[1] + 1) is None
    assert list(db.iter_objects(Filters())) == [as_row(first, ids[0]), as_row(second, ids[1])]


def test_times_are_stored_in_utc(db: AuditDB) -> None:
    plus_two = timezone(timedelta(hours=2))
    (object_id,) = db.record_objects([(make_record(received_at=T0.astimezone(plus_two)), None)])
    row = db.get_object(object_id)
    assert row is not None
    assert row["received_at"] == T0
    assert row["received_at"].tzinfo == UTC  # type: ignore[attr-defined]


def test_linkage_is_written_only_when_given(db: AuditDB) -> None:
    linked = make_record()
    unlinked = make_record(profile="public", pseudo_sop_uid="2.25.3002")
    linked_id, _ = db.record_objects([(linked, make_linkage()), (unlinked, None)])

    assert list(db.iter_linkage(Filters())) == [
        {
            "object_id": linked_id,
            "received_at": T0,
            "calling_ae": "CT_SCANNER",
            "profile": "research",
            "original_patient_id": "FAKE-PID-1",
            "original_patient_name": "FAKE^PATIENT",
            "original_study_uid": "1.2.3.4.1",
            "original_series_uid": "1.2.3.4.2",
            "original_sop_uid": "1.2.3.4.3",
            "pseudo_patient_id": "RES7f3a",
            "pseudo_study_uid": "2.25.1001",
            "pseudo_series_uid": "2.25.2001",
            "pseudo_sop_uid": "2.25.3001",
            "original_accession_number": "FAKE-ACC-1",
            "date_shift_days": -1234,
        }
    ]
    assert list(db.iter_linkage(Filters(profile="public"))) == []


def test_record_objects_is_one_transaction(db: AuditDB) -> None:
    good = make_record()
    broken = make_record(calling_ae=None)  # NOT NULL column: the database refuses it
    with pytest.raises(AuditError) as info:
        db.record_objects([(good, make_linkage()), (broken, make_linkage())])
    assert list(db.iter_objects(Filters())) == []
    assert list(db.iter_linkage(Filters())) == []
    message = str(info.value)
    assert "\n" not in message
    assert "FAKE" not in message  # never the parameters (original identifiers)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"status": "lost"}, "invalid object status 'lost': expected one of stored, quarantined"),
        ({"received_at": datetime(2026, 11, 22, 5, 0)}, "received_at must be a timezone-aware"),
        ({"processed_at": datetime(2026, 11, 22, 5, 0)}, "processed_at must be a timezone-aware"),
    ],
)
def test_record_objects_rejects_invalid_records(
    db: AuditDB, changes: dict[str, object], expected: str
) -> None:
    with pytest.raises(AuditError, match=expected):
        db.record_objects([(make_record(), None), (make_record(**changes), None)])
    assert list(db.iter_objects(Filters())) == []


def test_record_objects_accepts_status_enum(db: AuditDB) -> None:
    (object_id,) = db.record_objects([(make_record(status=Status.DUPLICATE), None)])
    row = db.get_object(object_id)
    assert row is not None and row["status"] == "duplicate"
    assert type(row["status"]) is str


def test_record_objects_with_nothing_returns_no_ids(db: AuditDB) -> None:
    assert db.record_objects([]) == []


# -- filters ----------------------------------------------------------------------------------

# Inserted in this order, so ids do not follow received_at.
FILTER_ROWS = {
    "e": make_record(received_at=T0 + 4 * HOUR, calling_ae="US", profile="trial",
                     pseudo_study_uid="2.25.3"),
    "c": make_record(received_at=T0 + 2 * HOUR, calling_ae="MR", status="duplicate",
                     pseudo_study_uid="2.25.2"),
    "a": make_record(received_at=T0, calling_ae="CT", pseudo_study_uid="2.25.1"),
    "d": make_record(received_at=T0 + 3 * HOUR, calling_ae="MR", profile="trial",
                     status="rejected", pseudo_study_uid=None),
    "b": make_record(received_at=T0 + HOUR, calling_ae="CT", status="quarantined",
                     pseudo_study_uid="2.25.1"),
}  # fmt: skip
PLUS_TWO = timezone(timedelta(hours=2))


@pytest.fixture
def filter_db(db: AuditDB) -> tuple[AuditDB, dict[int, str]]:
    ids = db.record_objects([(record, None) for record in FILTER_ROWS.values()])
    return db, dict(zip(ids, FILTER_ROWS, strict=True))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), "ecadb"),
        (Filters(since=T0 + HOUR), "ecdb"),  # since is inclusive
        (Filters(until=T0 + 2 * HOUR), "ab"),  # until is exclusive
        (Filters(since=T0 + HOUR, until=T0 + 3 * HOUR), "cb"),
        (Filters(since=(T0 + HOUR).astimezone(PLUS_TWO)), "ecdb"),
        (Filters(since=T0 + HOUR + timedelta(microseconds=1)), "ecd"),
        (Filters(calling_ae="MR"), "cd"),
        (Filters(calling_ae="NOBODY"), ""),
        (Filters(profile="trial"), "ed"),
        (Filters(status="stored"), "ea"),
        (Filters(status="quarantined"), "b"),
        (Filters(status="duplicate"), "c"),
        (Filters(status="rejected"), "d"),
        (Filters(study="2.25.1"), "ab"),
        (Filters(study="2.25.3"), "e"),
        (Filters(calling_ae="CT", status="stored"), "a"),
        (Filters(profile="research", since=T0 + HOUR, status="quarantined"), "b"),
    ],
)
def test_filters_select_exactly_the_matching_rows(
    filter_db: tuple[AuditDB, dict[int, str]], filters: Filters, expected: str
) -> None:
    db, names = filter_db
    rows = list(db.iter_objects(filters))
    assert "".join(names[row["id"]] for row in rows) == expected  # type: ignore[index]


def test_iter_objects_limit_keeps_id_order(filter_db: tuple[AuditDB, dict[int, str]]) -> None:
    db, names = filter_db
    assert [names[r["id"]] for r in db.iter_objects(Filters(), limit=2)] == ["e", "c"]  # type: ignore[index]
    assert [names[r["id"]] for r in db.iter_objects(Filters(calling_ae="MR"), limit=1)] == ["c"]  # type: ignore[index]


def test_linkage_filters_use_the_object_columns(db: AuditDB) -> None:
    early = make_record(received_at=T0, calling_ae="CT", pseudo_study_uid="2.25.1")
    late = make_record(received_at=T0 + HOUR, calling_ae="MR", pseudo_study_uid="2.25.2")
    early_id, late_id = db.record_objects([(early, make_linkage()), (late, make_linkage())])

    def linked(filters: Filters) -> list[object]:
        return [row["object_id"] for row in db.iter_linkage(filters)]

    assert linked(Filters()) == [early_id, late_id]
    assert linked(Filters(since=T0 + HOUR)) == [late_id]
    assert linked(Filters(until=T0 + HOUR)) == [early_id]
    assert linked(Filters(calling_ae="CT")) == [early_id]
    assert linked(Filters(study="2.25.2")) == [late_id]
    assert linked(Filters(status="quarantined")) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"status": "STORED"},
            "invalid status filter 'STORED': expected one of stored, quarantined, rejected, "
            "duplicate",
        ),
        ({"since": datetime(2026, 11, 22)}, "filter 'since' is a naive datetime"),
        ({"until": datetime(2026, 11, 22)}, "filter 'until' is a naive datetime"),
        (
            {"since": T0, "until": T0},
            "invalid time range: since 2026-11-22T05:00:00.000000Z is not before until "
            "2026-11-22T05:00:00.000000Z",
        ),
    ],
)
def test_invalid_filters_raise(arguments: dict[str, object], expected: str) -> None:
    with pytest.raises(AuditError) as info:
        Filters(**arguments)  # type: ignore[arg-type]
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("limit", [0, -1])
def test_invalid_limit_raises_before_iteration(db: AuditDB, limit: int) -> None:
    with pytest.raises(AuditError, match=f"invalid limit {limit}: expected a positive integer"):
        db.iter_objects(Filters(), limit=limit)
    with pytest.raises(AuditError, match="invalid limit"):
        db.study_summaries(Filters(), limit=limit)


# -- study summaries --------------------------------------------------------------------------


def test_study_summaries_count_each_status(db: AuditDB) -> None:
    s1 = {"pseudo_study_uid": "2.25.1", "pseudo_patient_id": "RES1"}
    db.record_objects(
        [
            (make_record(received_at=T0 + HOUR, **s1), None),
            (make_record(received_at=T0, **s1), None),
            (make_record(received_at=T0 + 2 * HOUR, status="duplicate", **s1), None),
            (make_record(received_at=T0 + 3 * HOUR, status="quarantined", **s1), None),
            # Same study from another sender: a line of its own.
            (make_record(received_at=T0 + 5 * HOUR, calling_ae="MR", **s1), None),
            (
                make_record(
                    received_at=T0 + 4 * HOUR,
                    status="rejected",
                    pseudo_study_uid="2.25.2",
                    pseudo_patient_id=None,
                ),
                None,
            ),
            (
                make_record(
                    received_at=T0 + 6 * HOUR,
                    status="stored",
                    profile="trial",
                    pseudo_study_uid="2.25.2",
                    pseudo_patient_id="TRI9",
                ),
                None,
            ),
        ]
    )
    summaries = db.study_summaries(Filters())
    assert summaries == [  # newest first, by the last object received
        StudySummary(
            "2.25.2", "TRI9", "CT_SCANNER", "trial", T0 + 6 * HOUR, T0 + 6 * HOUR, 1, 1, 0, 0, 0
        ),
        StudySummary(
            "2.25.1", "RES1", "MR", "research", T0 + 5 * HOUR, T0 + 5 * HOUR, 1, 1, 0, 0, 0
        ),
        StudySummary(
            "2.25.2", None, "CT_SCANNER", "research", T0 + 4 * HOUR, T0 + 4 * HOUR, 1, 0, 0, 0, 1
        ),
        StudySummary("2.25.1", "RES1", "CT_SCANNER", "research", T0, T0 + 3 * HOUR, 4, 2, 1, 1, 0),
    ]
    assert list(STUDY_COLUMNS) == [f.name for f in dataclasses.fields(StudySummary)]

    assert db.study_summaries(Filters(status="quarantined")) == [
        StudySummary(
            "2.25.1", "RES1", "CT_SCANNER", "research", T0 + 3 * HOUR, T0 + 3 * HOUR, 1, 0, 1, 0, 0
        )
    ]
    assert db.study_summaries(Filters(), limit=1) == summaries[:1]
    assert db.study_summaries(Filters(since=T0 + 7 * HOUR)) == []


def test_study_summaries_group_objects_without_a_study_per_association(db: AuditDB) -> None:
    rejected = make_record(status="rejected", pseudo_study_uid=None, pseudo_patient_id=None)
    other = dataclasses.replace(
        rejected, association_id="other", status="quarantined", received_at=T0 + 2 * HOUR
    )
    db.record_objects(
        [
            (rejected, None),
            (dataclasses.replace(rejected, received_at=T0 + HOUR), None),
            (other, None),
            (make_record(association_id="other", received_at=T0 + 2 * HOUR), None),
        ]
    )
    assert db.study_summaries(Filters()) == [
        StudySummary(
            "2.25.1001",
            "RES7f3a",
            "CT_SCANNER",
            "research",
            T0 + 2 * HOUR,
            T0 + 2 * HOUR,
            1,
            1,
            0,
            0,
            0,
        ),
        StudySummary(
            None, None, "CT_SCANNER", "research", T0 + 2 * HOUR, T0 + 2 * HOUR, 1, 0, 1, 0, 0,
            "other",
        ),
        StudySummary(
            None, None, "CT_SCANNER", "research", T0, T0 + HOUR, 2, 0, 0, 0, 2,
            rejected.association_id,
        ),
    ]  # fmt: skip


def test_iter_objects_newest_first(filter_db: tuple[AuditDB, dict[int, str]]) -> None:
    db, names = filter_db
    newest = [names[r["id"]] for r in db.iter_objects(Filters(), newest_first=True)]  # type: ignore[index]
    assert newest == list("edcba")  # by receipt, not by id
    assert [names[r["id"]] for r in db.iter_objects(Filters(), 1, newest_first=True)] == ["e"]  # type: ignore[index]


# -- associations -----------------------------------------------------------------------------


def test_associations_newest_first_with_filters(db: AuditDB) -> None:
    db.record_association_start("a1", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE")
    db.record_association_end("a1", T0 + HOUR, 3, "released")
    db.record_rejected_association(
        "a2", T0 + 2 * HOUR, "10.0.0.9", "STRANGER", "DEID_NODE", "not a configured source"
    )
    db.record_association_start("a3", T0 + 3 * HOUR, "127.0.0.1", "CT_SCANNER", "DEID_NODE")

    def ids(**filters: object) -> list[object]:
        return [r["id"] for r in db.iter_associations(AssociationFilters(**filters))]  # type: ignore[arg-type]

    assert ids() == ["a3", "a2", "a1"]
    assert ids(outcome="rejected") == ["a2"]
    assert ids(outcome="open") == ["a3"]
    assert ids(outcome="released") == ["a1"]
    assert ids(calling_ae="CT_SCANNER") == ["a3", "a1"]
    assert ids(since=T0 + HOUR) == ["a3", "a2"]
    assert ids(until=T0 + 2 * HOUR) == ["a1"]
    assert [r["id"] for r in db.iter_associations(AssociationFilters(), limit=1)] == ["a3"]
    row = next(iter(db.iter_associations(AssociationFilters(outcome="rejected"))))
    assert row["reason"] == "not a configured source" and row["started_at"] == T0 + 2 * HOUR
    with pytest.raises(AuditError, match="invalid outcome filter 'gone': expected one of"):
        AssociationFilters(outcome="gone")


# -- CSV --------------------------------------------------------------------------------------


def test_csv_reads_back_as_recorded(db: AuditDB, tmp_path: Path) -> None:
    records = [
        make_record(),
        make_record(
            received_at=T0 + HOUR,
            processed_at=None,
            association_id=None,
            status="quarantined",
            reason='pixel data "unreadable", frame 2\r\nsecond line',
            output_path=None,
            quarantine_path="quarantine/dir with space/0002.dcm",
        ),
    ]
    ids = db.record_objects([(record, None) for record in records])
    path = tmp_path / "objects.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        assert write_csv(db.iter_objects(Filters()), OBJECT_COLUMNS, out) == 2

    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == OBJECT_COLUMNS
        rows = list(reader)

    def text_of(value: object) -> str:
        if value is None:
            return ""
        return format_time(value) if isinstance(value, datetime) else str(value)

    expected = [
        {key: text_of(value) for key, value in as_row(record, object_id).items()}
        for record, object_id in zip(records, ids, strict=True)
    ]
    assert rows == expected
    assert rows[0]["received_at"] == "2026-11-22T05:00:00.000000Z"
    assert rows[0]["processed_at"] == "2026-11-22T05:00:01.000250Z"
    assert all(row["received_at"].endswith("Z") for row in rows)
    raw = path.read_bytes()
    assert raw.startswith(b"id,received_at,processed_at,")
    assert raw.count(b"\r\n") == 4  # header, two rows, and the one inside the quoted reason
    assert raw.endswith(b"\r\n")


def test_csv_of_linkage_and_summaries(db: AuditDB) -> None:
    db.record_objects([(make_record(), make_linkage())])
    out = io.StringIO(newline="")
    assert write_csv(db.iter_linkage(Filters()), LINKAGE_COLUMNS, out) == 1
    lines = out.getvalue().split("\r\n")
    assert lines[0] == ",".join(LINKAGE_COLUMNS)
    assert lines[1].startswith("1,2026-11-22T05:00:00.000000Z,CT_SCANNER,research,FAKE-PID-1,")
    assert lines[1].endswith(",2.25.3001,FAKE-ACC-1,-1234")

    out = io.StringIO(newline="")
    summaries = [dataclasses.asdict(s) for s in db.study_summaries(Filters())]
    assert write_csv(summaries, STUDY_COLUMNS, out) == 1
    assert out.getvalue().split("\r\n")[1] == (
        "2.25.1001,RES7f3a,CT_SCANNER,research,"
        "2026-11-22T05:00:00.000000Z,2026-11-22T05:00:00.000000Z,1,1,0,0,0,,"
    )


def test_linkage_csv_of_unshifted_dates_has_an_empty_shift(db: AuditDB) -> None:
    db.record_objects([(make_record(), make_linkage(date_shift_days=None))])
    out = io.StringIO(newline="")
    write_csv(db.iter_linkage(Filters()), LINKAGE_COLUMNS, out)
    assert out.getvalue().split("\r\n")[1].endswith(",FAKE-ACC-1,")


def test_write_csv_formats_values() -> None:
    out = io.StringIO(newline="")
    rows: list[dict[str, object]] = [
        {"a": None, "b": datetime(2026, 11, 22, 7, 0, tzinfo=PLUS_TWO), "c": 3},
        {"a": Status.STORED, "b": "x,y", "extra": "ignored"},
    ]
    assert write_csv(rows, ("a", "b", "c"), out) == 2
    assert out.getvalue() == 'a,b,c\r\n,2026-11-22T05:00:00.000000Z,3\r\nstored,"x,y",\r\n'


def test_write_csv_of_nothing_writes_the_header() -> None:
    out = io.StringIO(newline="")
    assert write_csv([], OBJECT_COLUMNS, out) == 0
    assert out.getvalue() == ",".join(OBJECT_COLUMNS) + "\r\n"


# -- streaming --------------------------------------------------------------------------------


def test_streams_twenty_thousand_rows(db: AuditDB) -> None:
    count = 20_000
    base = make_record()
    db.record_objects(
        [(dataclasses.replace(base, pseudo_sop_uid=f"2.25.{i}"), None) for i in range(count)]
    )

    tracemalloc.start()
    try:
        seen = 0
        previous = 0
        for row in db.iter_objects(Filters()):
            assert isinstance(row["id"], int) and row["id"] > previous
            assert row["pseudo_sop_uid"] == f"2.25.{seen}"
            previous = row["id"]
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    # Every row held at once takes about 27 MB; a stream holds one batch.
    assert peak < 8_000_000


def test_a_reader_does_not_block_a_writer(db: AuditDB) -> None:
    db.record_objects([(make_record(), None) for _ in range(3)])
    stream = db.iter_objects(Filters())
    first = next(stream)
    # WAL: a write commits while the read transaction above is still open.
    (new_id,) = db.record_objects([(make_record(status="duplicate"), None)])
    rest = list(stream)
    assert [first["id"], *(row["id"] for row in rest)] == [1, 2, 3]  # the reader's snapshot
    assert db.get_object(new_id) is not None


def test_two_handles_on_one_file(db_url: str, db: AuditDB) -> None:
    with open_audit(db_url) as other:
        (a,) = db.record_objects([(make_record(), None)])
        (b,) = other.record_objects([(make_record(), None)])
        assert [row["id"] for row in other.iter_objects(Filters())] == [a, b]


def _run_together(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run work(i) in count threads released at once; return what they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_nodes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    # Each migration transaction reads the version, then writes: without taking the write
    # lock up front, all but one would fail with "database is locked". The switch to WAL
    # fails the same way, now and then, unless retried: hence several fresh databases.
    for attempt in range(20):
        url = f"sqlite:///{tmp_path / str(attempt) / 'audit.db'}"
        assert _run_together(8, lambda i: open_audit(url).close()) == []  # noqa: B023
        with open_audit(url) as db:
            assert list(db.iter_objects(Filters())) == []


def test_threads_write_at_once(db: AuditDB) -> None:
    def work(i: int) -> None:
        for n in range(25):
            db.record_objects([(make_record(pseudo_sop_uid=f"2.25.{i}.{n}"), None)])

    assert _run_together(6, work) == []
    rows = list(db.iter_objects(Filters()))
    assert sorted(str(row["pseudo_sop_uid"]) for row in rows) == sorted(
        f"2.25.{i}.{n}" for i in range(6) for n in range(25)
    )


# -- associations, quarantine -----------------------------------------------------------------


def test_association_rows(db: AuditDB) -> None:
    db.record_association_start("assoc1", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE", "n1")
    started = db.get_association("assoc1")
    assert started == {
        "id": "assoc1",
        "started_at": T0,
        "ended_at": None,
        "peer_address": "127.0.0.1",
        "calling_ae": "CT_SCANNER",
        "called_ae": "DEID_NODE",
        "objects": 0,
        "outcome": None,
        "reason": None,
        "node": "n1",
    }
    db.record_association_end("assoc1", T0 + HOUR, 12, "aborted", "peer aborted")
    assert db.get_association("assoc1") == {
        **started,
        "ended_at": T0 + HOUR,
        "objects": 12,
        "outcome": "aborted",
        "reason": "peer aborted",
    }

    db.record_rejected_association(
        "assoc2", T0, "10.0.0.9", "UNKNOWN", "DEID_NODE", "calling AE title not recognised"
    )
    assert db.get_association("assoc2") == {
        "id": "assoc2",
        "started_at": T0,
        "ended_at": T0,
        "peer_address": "10.0.0.9",
        "calling_ae": "UNKNOWN",
        "called_ae": "DEID_NODE",
        "objects": 0,
        "outcome": "rejected",
        "reason": "calling AE title not recognised",
        "node": None,
    }
    assert db.get_association("assoc3") is None


def test_close_interrupted_closes_this_nodes_open_associations_with_their_counts(
    db: AuditDB,
) -> None:
    db.record_association_start("cut", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE", "n1")
    db.record_association_start("legacy", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE")
    db.record_association_start("empty", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE", "n1")
    db.record_association_start("other", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE", "n2")
    db.record_association_start("done", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE", "n1")
    db.record_association_end("done", T0 + HOUR, 3, "released")
    rows = [
        make_record(association_id="cut", received_at=T0 + i * HOUR, pseudo_sop_uid=f"2.25.{i}")
        for i in range(1, 4)
    ]
    rows.append(make_record(association_id="cut", status="rejected", received_at=T0))
    rows.append(make_record(association_id="legacy", received_at=T0 + HOUR))
    rows.append(make_record(association_id="other", received_at=T0 + HOUR))
    db.record_objects([(r, None) for r in rows])

    assert db.close_interrupted("n1") == 3
    cut = db.get_association("cut")
    assert cut is not None
    assert (cut["outcome"], cut["objects"], cut["ended_at"]) == ("interrupted", 4, T0 + 3 * HOUR)
    assert "crash" in str(cut["reason"])
    legacy, empty = db.get_association("legacy"), db.get_association("empty")
    assert legacy is not None and empty is not None
    assert (legacy["outcome"], legacy["objects"]) == ("interrupted", 1)
    assert (empty["outcome"], empty["objects"], empty["ended_at"]) == ("interrupted", 0, T0)
    other, done = db.get_association("other"), db.get_association("done")
    assert other is not None and other["outcome"] is None  # another node's, still running
    assert done is not None and (done["outcome"], done["objects"]) == ("released", 3)
    assert db.close_interrupted("n1") == 0
    found = db.iter_associations(AssociationFilters(outcome="interrupted"))
    assert sorted(str(a["id"]) for a in found) == ["cut", "empty", "legacy"]


def test_a_redo_after_a_crash_is_recorded_once_and_stored_once(db: AuditDB) -> None:
    def obj(n: int, status: str = "duplicate", receipt: str | None = None) -> ObjectRecord:
        return make_record(
            status=status,
            pseudo_sop_uid=f"2.25.{n}",
            output_path=f"/out/{n}.dcm",
            receipt_id=receipt or f"r{n}",
        )

    # Sent once, output written, row lost: the redo finds its own file ("duplicate").
    [lost] = db.record_objects([(obj(1), make_linkage())], redone=[True])
    # Sent twice: the first row is there, the second send's redo stays a duplicate.
    db.record_objects([(obj(2, "stored"), None)])
    db.record_objects([(obj(2, receipt="r2-again"), None)], redone=[True])
    # Row committed, spool file left: the redo finds its receipt and adds nothing.
    [first] = db.record_objects([(obj(3, "stored"), make_linkage())])
    assert db.record_objects([(obj(3), make_linkage())], redone=[True]) == [first]
    # Two redone receipts of one object in one batch: one stored, one duplicate.
    db.record_objects(
        [(obj(4, receipt="r4a"), None), (obj(4, receipt="r4b"), None)], [], redone=[True, True]
    )
    # Not a redo: a duplicate is what the pipeline says.
    db.record_objects([(obj(5), None)])
    # An offline row of the same output does not count as the node's stored row.
    db.record_objects(
        [(dataclasses.replace(obj(6, "stored"), origin=Origin.OFFLINE, receipt_id=None), None)]
    )
    db.record_objects([(obj(6), None)], redone=[True])

    rows = list(db.iter_objects(Filters()))
    by_sop = [(r["pseudo_sop_uid"], r["status"], r["origin"]) for r in rows]
    assert by_sop == [
        ("2.25.1", "stored", "node"),
        ("2.25.2", "stored", "node"),
        ("2.25.2", "duplicate", "node"),
        ("2.25.3", "stored", "node"),
        ("2.25.4", "stored", "node"),
        ("2.25.4", "duplicate", "node"),
        ("2.25.5", "duplicate", "node"),
        ("2.25.6", "stored", "offline"),
        ("2.25.6", "stored", "node"),
    ]
    assert rows[0]["id"] == lost and rows[0]["receipt_id"] == "r1"
    assert [r["object_id"] for r in db.iter_linkage(Filters())] == [lost, first]


def test_the_console_lists_only_the_nodes_output(db: AuditDB) -> None:
    node = make_record(output_path="/var/output/a.dcm")
    offline = make_record(
        output_path="/elsewhere/a.dcm", origin=Origin.OFFLINE, received_at=T0 + HOUR
    )
    db.record_objects([(node, None), (offline, None)])
    assert [i["output_path"] for i in db.stored_instances(study="2.25.1001")] == [
        "/var/output/a.dcm"
    ]
    only = make_record(
        pseudo_study_uid="2.25.9", output_path="/elsewhere/b.dcm", origin=Origin.OFFLINE
    )
    db.record_objects([(only, None)])
    assert [s["pseudo_study_uid"] for s in db.stored_studies()] == ["2.25.1001"]


def test_version_8_marks_the_rows_of_earlier_offline_runs(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        assert migrate(engine, MIGRATIONS[:6]) == 6
        with engine.begin() as conn:
            for id_, marker, assoc in ((1, "CT_SCANNER", "a1"), (2, "(offline)", None)):
                conn.execute(
                    text(
                        "INSERT INTO objects (id, received_at, association_id, calling_ae, "
                        "called_ae, peer_address, profile, size_bytes, status) VALUES "
                        "(:id, '2026-11-22T05:00:00.000000Z', :assoc, :m, :m, :m, 'research', "
                        "1, 'stored')"
                    ),
                    {"id": id_, "m": marker, "assoc": assoc},
                )
            conn.execute(
                text(
                    "INSERT INTO associations (id, started_at, peer_address, calling_ae, "
                    "called_ae, objects) VALUES ('a1', '2026-11-22T05:00:00.000000Z', "
                    "'127.0.0.1', 'CT_SCANNER', 'DEID_NODE', 0)"
                )
            )
        assert migrate(engine) == len(MIGRATIONS)
        db = AuditDB(engine)
        assert [(r["id"], r["origin"]) for r in db.iter_objects(Filters())] == [
            (1, "node"),
            (2, "offline"),
        ]
        assert db.close_interrupted("n1") == 1  # opened before version 8: no node named
    finally:
        engine.dispose()


def test_association_errors(db: AuditDB) -> None:
    with pytest.raises(AuditError, match="no association 'nope' in the audit database"):
        db.record_association_end("nope", T0, 0, "completed")
    db.record_association_start("assoc1", T0, "127.0.0.1", "CT_SCANNER", "DEID_NODE")
    # Again (a retry after a cut connection whose commit went through): still one row.
    db.record_association_start("assoc1", T0 + HOUR, "127.0.0.1", "CT_SCANNER", "DEID_NODE")
    assert [a["started_at"] for a in db.iter_associations(AssociationFilters())] == [T0]
    with pytest.raises(AuditError, match="started_at must be a timezone-aware"):
        db.record_association_start("assoc2", datetime(2026, 11, 22), "h", "A", "B")


def test_quarantine_retry_updates_the_row(db: AuditDB) -> None:
    stored, held = db.record_objects(
        [
            (make_record(), None),
            (
                make_record(
                    received_at=T0 + HOUR,
                    status="quarantined",
                    reason="BurnedInAnnotation is YES",
                    output_path=None,
                    quarantine_path="quarantine/0002.dcm",
                ),
                None,
            ),
        ]
    )
    assert db.quarantined() == [
        {
            "id": held,
            "received_at": T0 + HOUR,
            "calling_ae": "CT_SCANNER",
            "profile": "research",
            "reason": "BurnedInAnnotation is YES",
            "quarantine_path": "quarantine/0002.dcm",
        }
    ]

    db.update_object(
        held,
        status="stored",
        processed_at=T0 + 2 * HOUR,
        quarantine_path=None,
        output_path="output/x.dcm",
    )
    assert db.quarantined() == []
    row = db.get_object(held)
    assert row is not None
    assert (row["status"], row["processed_at"], row["quarantine_path"], row["output_path"]) == (
        "stored",
        T0 + 2 * HOUR,
        None,
        "output/x.dcm",
    )
    assert db.get_object(stored) == as_row(make_record(), stored)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"id": 5}, "cannot update object column 'id'"),
        ({"colour": "red"}, "cannot update object column 'colour': expected one of received_at"),
        ({"status": "gone"}, "invalid object status 'gone'"),
        ({"processed_at": "2026-11-22"}, "processed_at must be a timezone-aware datetime"),
    ],
)
def test_update_object_rejects_bad_changes(
    db: AuditDB, changes: dict[str, object], expected: str
) -> None:
    (object_id,) = db.record_objects([(make_record(), None)])
    with pytest.raises(AuditError, match=expected):
        db.update_object(object_id, **changes)
    assert db.get_object(object_id) == as_row(make_record(), object_id)


def test_update_object_of_an_unknown_id(db: AuditDB) -> None:
    with pytest.raises(AuditError, match="no object with audit id 42"):
        db.update_object(42, status="stored")


def test_update_object_adds_linkage_in_the_same_transaction(db: AuditDB) -> None:
    (object_id,) = db.record_objects([(make_record(status="quarantined"), None)])
    db.update_object(object_id, status="stored", linkage=make_linkage())
    [row] = db.iter_linkage(Filters())
    assert row["object_id"] == object_id
    assert row["original_sop_uid"] == make_linkage().original_sop_uid
    with pytest.raises(AuditError, match="no object with audit id 42"):
        db.update_object(42, status="stored", linkage=make_linkage())
    with pytest.raises(AuditError, match="no object with audit id 43"):
        db.update_object(43, linkage=make_linkage())
    assert len(list(db.iter_linkage(Filters()))) == 1  # nothing written for unknown ids


# -- migrations -------------------------------------------------------------------------------


def test_open_audit_twice_keeps_rows(db_url: str) -> None:
    with open_audit(db_url) as first:
        ids = first.record_objects([(make_record(), make_linkage())])
    with open_audit(db_url) as again:
        assert [row["id"] for row in again.iter_objects(Filters())] == ids
        assert len(list(again.iter_linkage(Filters()))) == 1


def test_migrations_build_the_current_schema(db_url: str, db: AuditDB) -> None:
    engine = create_audit_engine(db_url)
    try:
        inspector = inspect(engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name: c.nullable for c in table.columns}, table.name
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            assert indexes == {i.name for i in table.indexes}, table.name
        assert set(inspector.get_table_names()) == set(Base.metadata.tables)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version FROM schema_version")) == len(MIGRATIONS)
    finally:
        engine.dispose()


def test_upgrade_keeps_existing_rows(db_url: str) -> None:
    with open_audit(db_url) as old:
        records = [make_record(), make_record(status="duplicate", received_at=T0 + HOUR)]
        ids = old.record_objects([(records[0], make_linkage()), (records[1], None)])

    applied: list[int] = []

    def add_note(conn: Connection) -> None:
        applied.append(2)
        conn.execute(text("ALTER TABLE objects ADD COLUMN note VARCHAR(64)"))

    steps = [*MIGRATIONS, (NEXT, add_note)]
    engine = create_audit_engine(db_url)
    try:
        assert migrate(engine, steps) == NEXT
        assert migrate(engine, steps) == NEXT  # already there: the step is not run again
        assert applied == [2]
        assert "note" in {c["name"] for c in inspect(engine).get_columns("objects")}
        upgraded = AuditDB(engine)
        assert [row["id"] for row in upgraded.iter_objects(Filters())] == ids
        # The rows survive; columns this version does not know about are not read.
        assert upgraded.get_object(ids[0]) == as_row(records[0], ids[0])
        assert [row["object_id"] for row in upgraded.iter_linkage(Filters())] == [ids[0]]
    finally:
        engine.dispose()


def test_a_version_1_database_upgrades_and_keeps_its_linkage(db_url: str) -> None:
    # Built by the frozen v1 step itself, with rows written as version 1 wrote them.
    engine = create_audit_engine(db_url)
    try:
        assert migrate(engine, MIGRATIONS[:1]) == 1
        with engine.begin() as conn:
            record = dataclasses.asdict(make_record(processed_at=None))
            for later in ("pixels", "receipt_id", "origin", "node"):  # versions 3, 8 and 9
                del record[later]
            record["received_at"] = format_time(T0)
            conn.execute(Base.metadata.tables["objects"].insert().values(id=7, **record))
            v2 = ("original_accession_number", "date_shift_days")
            old = {k: v for k, v in dataclasses.asdict(make_linkage()).items() if k not in v2}
            names, params = ", ".join(old), ", ".join(f":{k}" for k in old)
            conn.execute(
                text(f"INSERT INTO linkage (object_id, {names}) VALUES (7, {params})"), old
            )
        assert "date_shift_days" not in {c["name"] for c in inspect(engine).get_columns("linkage")}
    finally:
        engine.dispose()
    with open_audit(db_url) as db:
        [row] = db.iter_linkage(Filters())
        assert row["object_id"] == 7 and row["original_sop_uid"] == "1.2.3.4.3"
        assert row["original_patient_id"] == "FAKE-PID-1"
        assert row["original_accession_number"] is None and row["date_shift_days"] is None
        [new_id] = db.record_objects([(make_record(), make_linkage())])
        rows = list(db.iter_linkage(Filters()))
    assert [(r["object_id"], r["date_shift_days"]) for r in rows] == [(7, None), (new_id, -1234)]


def test_a_version_6_user_gets_a_session_nonce_at_the_first_login(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        assert migrate(engine, MIGRATIONS[:6]) == 6
        with engine.begin() as conn:  # a user as version 6 wrote it: no nonce column yet
            conn.execute(
                text(
                    "INSERT INTO users (name, password_hash, created_at) "
                    "VALUES ('ana', 'not a hash', '2026-12-01T00:00:00Z')"
                )
            )
    finally:
        engine.dispose()
    with open_audit(db_url) as db:  # migrates to the current version
        [user] = db.users.list()
        assert db.users.session_user("ana", "") is None  # no session is valid before a login
        nonce = db.users.session_nonce(user)
        assert db.users.session_nonce(user) == nonce  # a second login does not end the first
        assert db.users.session_user("ana", nonce) == user
        db.users.end_sessions("ana")
        assert db.users.session_user("ana", nonce) is None
        assert db.users.session_nonce(user) != nonce


def test_upgrade_of_an_older_hand_made_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    # An older objects table without quarantine_path, stamped version 1, with a row in it.
    with sqlite3.connect(path) as conn:
        newer = ("quarantine_path", "pixels", "receipt_id", "origin", "node")
        older = [c for c in OBJECT_COLUMNS if c not in newer]
        conn.execute(f"CREATE TABLE objects (id INTEGER PRIMARY KEY, {', '.join(older[1:])})")
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            f"INSERT INTO objects VALUES ({', '.join('?' * len(older))})",
            (7, "2026-11-22T05:00:00.000000Z", None, None, "CT_SCANNER", "DEID_NODE",
             "127.0.0.1", "research", None, None, 10, "stored", None, "RES1", "2.25.1",
             "2.25.2", "2.25.3", "output/a.dcm"),
        )  # fmt: skip
    conn.close()

    def add_quarantine_path(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE objects ADD COLUMN quarantine_path VARCHAR"))
        conn.execute(text("ALTER TABLE objects ADD COLUMN pixels VARCHAR"))
        conn.execute(text("ALTER TABLE objects ADD COLUMN receipt_id VARCHAR"))
        conn.execute(text("ALTER TABLE objects ADD COLUMN origin VARCHAR DEFAULT 'node'"))
        conn.execute(text("ALTER TABLE objects ADD COLUMN node VARCHAR"))

    def must_not_run(conn: Connection) -> None:
        raise AssertionError("version 1 is already applied")

    engine = create_audit_engine(f"sqlite:///{path}")
    try:
        assert migrate(engine, [(1, must_not_run), (2, add_quarantine_path)]) == 2
        row = AuditDB(engine).get_object(7)
    finally:
        engine.dispose()
    assert row is not None
    assert row["quarantine_path"] is None
    assert row["received_at"] == T0
    assert row["pseudo_sop_uid"] == "2.25.3"


def test_a_failing_step_leaves_nothing_behind(db_url: str) -> None:
    with open_audit(db_url) as db:
        db.record_objects([(make_record(), None)])

    def half_done(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE extra (id INTEGER PRIMARY KEY)"))
        conn.execute(text("ALTER TABLE objects ADD COLUMN note VARCHAR(64)"))
        raise RuntimeError("step failed half way")

    engine = create_audit_engine(db_url)
    try:
        with pytest.raises(RuntimeError, match="half way"):
            migrate(engine, [*MIGRATIONS, (NEXT, half_done)])
        inspector = inspect(engine)
        assert "extra" not in inspector.get_table_names()  # DDL rolled back with the step
        assert "note" not in {c["name"] for c in inspector.get_columns("objects")}
        assert migrate(engine) == len(MIGRATIONS)
    finally:
        engine.dispose()


def test_a_newer_database_is_refused(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        migrate(engine, [*MIGRATIONS, (NEXT, lambda conn: None)])
    finally:
        engine.dispose()
    with pytest.raises(AuditError) as info:
        open_audit(db_url)
    assert str(info.value) == (
        f"audit database schema version {NEXT} is newer than this deid-node supports "
        f"({len(MIGRATIONS)}): upgrade deid-node"
    )


def test_migration_versions_must_be_consecutive(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        listed = ", ".join(str(v) for v in [*range(1, NEXT), NEXT + 1])
        with pytest.raises(ValueError, match=f"got \\[{listed}\\]"):
            migrate(engine, [*MIGRATIONS, (NEXT + 1, lambda conn: None)])
    finally:
        engine.dispose()


# -- SQLite file, URLs ------------------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path, db_url: str, db: AuditDB) -> None:
    path = tmp_path / "var" / "audit.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

    engine = create_audit_engine(db_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert timeout == SQLITE_BUSY_TIMEOUT_MS
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.touch()
    path.chmod(0o640)
    open_audit(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_in_memory_database(tmp_path: Path) -> None:
    with open_audit("sqlite://") as db:
        (object_id,) = db.record_objects([(make_record(), None)])
        assert db.get_object(object_id) == as_row(make_record(), object_id)
    assert list(tmp_path.iterdir()) == []


def _file_in_the_way(tmp_path: Path) -> str:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    return f"sqlite:///{blocker / 'audit.db'}"


def _folder_as_database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}"


def _not_a_database(tmp_path: Path) -> str:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes. " * 100)
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (lambda tmp: "not a url", "invalid audit database url: expected an SQLAlchemy URL"),
        (lambda tmp: "", "invalid audit database url"),
        (lambda tmp: "nosuchdb://host/db", "unsupported audit database url scheme 'nosuchdb'"),
        (
            lambda tmp: f"sqlite+nosuchdriver:///{tmp / 'x.db'}",
            "unsupported audit database url scheme 'sqlite\\+nosuchdriver'",
        ),
        (_file_in_the_way, "cannot create the audit database folder .*: a file is in the way"),
        (_folder_as_database, "audit database .* is a folder: point \\[database\\] url at a file"),
        (_not_a_database, "audit database could not be opened: file is not a database; check"),
    ],
)
def test_bad_urls_raise_one_line(tmp_path: Path, make_url: object, expected: str) -> None:
    url = make_url(tmp_path)  # type: ignore[operator]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(AuditError, match=expected) as info:
        open_audit(url)
    assert "\n" not in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created on the way


# -- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text_value", "expected"),
    [
        ("2026-11-22", T0 - 5 * HOUR),
        ("2026-11-22T05:00:00", T0),
        ("2026-11-22T05:00", T0),
        ("2026-11-22T05:00:00Z", T0),
        (" 2026-11-22T05:00:00Z ", T0),
        ("2026-11-22T07:00:00+02:00", T0),
        ("2026-11-22T00:00:00-05:00", T0),
        ("2026-11-22T05:00:00.5Z", T0 + timedelta(milliseconds=500)),
    ],
)
def test_parse_time_accepts(text_value: str, expected: datetime) -> None:
    parsed = parse_time(text_value)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "text_value", ["xyz", "", "2026-13-01", "22/11/2026", "2026-11-22T25:00", "yesterday"]
)
def test_parse_time_rejects(text_value: str) -> None:
    with pytest.raises(AuditError) as info:
        parse_time(text_value)
    assert str(info.value) == (
        f"invalid time {text_value!r}: expected ISO 8601 such as 2026-11-22 or 2026-11-22T05:00:00Z"
    )


def test_parse_time_message_for_xyz() -> None:
    with pytest.raises(AuditError) as info:
        parse_time("xyz")
    assert str(info.value) == (
        "invalid time 'xyz': expected ISO 8601 such as 2026-11-22 or 2026-11-22T05:00:00Z"
    )


def test_format_time() -> None:
    assert format_time(datetime(2026, 11, 22, 7, 1, 2, 123456, tzinfo=PLUS_TWO)) == (
        "2026-11-22T05:01:02.123456Z"
    )
    assert format_time(T0) == "2026-11-22T05:00:00.000000Z"
    with pytest.raises(AuditError, match="naive datetime"):
        format_time(datetime(2026, 11, 22))


def test_statuses() -> None:
    assert STATUSES == ("stored", "quarantined", "rejected", "duplicate")


def test_skipped_is_never_audited(db: AuditDB) -> None:
    # One Status for the pipeline and the audit: SKIPPED (offline, not DICOM) is not stored.
    expected = "invalid .* 'skipped': expected one of stored, quarantined, rejected, duplicate$"
    with pytest.raises(AuditError, match=expected):
        db.record_objects([(make_record(status=Status.SKIPPED), None)])
    (object_id,) = db.record_objects([(make_record(), None)])
    with pytest.raises(AuditError, match=expected):
        db.update_object(object_id, status=Status.SKIPPED)
    with pytest.raises(AuditError, match=expected):
        Filters(status="skipped")
    assert [row["status"] for row in db.iter_objects(Filters())] == ["stored"]


def test_statuses_and_workers_need_no_sqlalchemy() -> None:
    # Worker processes import the pipeline, and with it Status: they must stay light. A
    # header-only worker holds no pixel library either (pydicom would import them).
    script = (
        "import sys, deid_node.runtime.worker_boot, deid_node.audit.records\n"
        "import deid_node.deid.pipeline, pydicom.pixels\n"
        "held = [m for m, mod in sys.modules.items() if mod is not None]\n"
        "print('sqlalchemy' in held, any(m.split('.')[0] in"
        " ('numpy', 'PIL', 'gdcm', 'pylibjpeg', 'jpeg_ls', 'openjpeg') for m in held))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["False", "False"], proc.stdout + proc.stderr
