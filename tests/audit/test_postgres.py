"""PostgreSQL as the audit database: a real server (Debian's, started by
deid_node/testing/postgres.py), a real node, dcmtk as the sender; migrations racing at
start; a server restart under load."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from deid_node.audit.db import open_audit
from deid_node.audit.migrations import MIGRATION_LOCK, MIGRATIONS
from deid_node.audit.records import Filters
from deid_node.audit.sql_engine import create_audit_engine, is_transient
from deid_node.config import Config
from deid_node.errors import AuditUnavailable
from deid_node.runtime.node import Node
from deid_node.testing.postgres import PostgresServer
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.dcmtk import STORESCU
from tests.support.files import files_under
from tests.support.node import audit_associations, audit_objects, node_table
from tests.support.scu import NODE_AE, associate, store
from tests.support.waiting import wait_for

SOURCES = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
options = ["retain-longitudinal-modified-dates"]
"""


def pg_config(url: str, name: str = "gw-1") -> str:
    table = node_table().replace("[node]\n", f'[node]\nname = "{name}"\n')
    return table + f'\n[database]\nurl = "{url}"\n' + SOURCES


def test_the_schema_on_postgres_is_the_current_one(postgres_url: str) -> None:
    with open_audit(postgres_url) as db:
        db.record_association_start("a1", datetime.now(UTC), "127.0.0.1", "CT", "DEID", "n1")
        db.record_association_start("a1", datetime.now(UTC), "127.0.0.1", "CT", "DEID", "n1")
        assert db.close_interrupted("n1") == 1  # recorded once, retried or not
    engine = create_audit_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version FROM schema_version")) == len(MIGRATIONS)
    finally:
        engine.dispose()


def test_a_refused_connection_is_transient_and_named_so(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("postgres").replace(str(postgres_server.port), "1")
    with pytest.raises(AuditUnavailable, match="could not be opened"):
        open_audit(url)
    engine = create_audit_engine(postgres_server.create_database())
    try:
        with pytest.raises(Exception) as caught, engine.connect() as conn:
            conn.execute(text("SELECT 1/0"))
        assert not is_transient(caught.value)  # a bug is not retried for ever
    finally:
        engine.dispose()


RACER = """
import sys
from deid_node.audit.db import open_audit
sys.stdin.readline()  # every racer started: go
open_audit(sys.argv[1]).close()
"""


def test_nodes_starting_together_migrate_once(postgres_url: str) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, postgres_url],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for racer in racers:  # all are importing and waiting by now or soon: release them
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    assert [r.returncode for r in racers] == [0, 0, 0, 0], errors
    engine = create_audit_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM schema_version")).all() == [
                (len(MIGRATIONS),)
            ]
    finally:
        engine.dispose()


def test_a_migration_waits_for_the_one_under_way(postgres_url: str) -> None:
    holder = create_audit_engine(postgres_url)
    opened: list[object] = []
    try:
        with holder.connect() as conn:
            conn.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            conn.commit()
            opener = threading.Thread(target=lambda: opened.append(open_audit(postgres_url)))
            opener.start()
            opener.join(1.0)
            assert opened == []  # never done while another node migrates (correct or not)
            conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            conn.commit()
        opener.join(60)
        assert len(opened) == 1
    finally:
        for db in opened:
            db.close()  # type: ignore[attr-defined]
        holder.dispose()


@pytest.mark.dcmtk
def test_the_node_on_postgres_stores_what_storescu_sends(
    dcmtk: None,
    postgres_url: str,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    cfg = write_config(pg_config(postgres_url))
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), seed=11)
    files = []
    for i, ds in enumerate(ct_series(5, patient=patient, rows=16, cols=16, seed=3)):
        path = tmp_path / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    host, port = node.address
    sent = subprocess.run(
        [str(STORESCU), "-aet", "CT_SCANNER", "-aec", NODE_AE, host, str(port), *files],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    assert node.wait_idle(60)
    rows = audit_objects(cfg)
    assert [r["status"] for r in rows] == ["stored"] * 5
    assert {r["node"] for r in rows} == {"gw-1"}
    assert len({r["pseudo_sop_uid"] for r in rows}) == 5
    assert len({r["pseudo_study_uid"] for r in rows}) == 1
    outputs = files_under(cfg.node.output, "*.dcm")
    assert sorted(str(p.name) for p in outputs) == sorted(
        f"{r['pseudo_sop_uid']}.dcm" for r in rows
    )
    [assoc] = audit_associations(cfg)
    assert (assoc["outcome"], assoc["objects"], assoc["node"]) == ("released", 5, "gw-1")


def test_a_postgres_restart_under_load_loses_nothing(
    postgres_server: PostgresServer,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
) -> None:
    cfg = write_config(pg_config(postgres_server.create_database()))
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), seed=12)
    slices = ct_series(40, patient=patient, rows=16, cols=16, seed=4)
    acknowledged: list[int] = []
    down = threading.Event()
    up = threading.Event()

    def send() -> None:
        assoc = associate(node.address, "CT_SCANNER", [str(slices[0].SOPClassUID)])
        assert assoc.is_established
        try:
            for i, ds in enumerate(slices):
                if i == 25:
                    up.wait(120)  # the rest once the server is back
                acknowledged.append(int(assoc.send_c_store(ds).Status))
        finally:
            assoc.release()

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: len(acknowledged) >= 10, 60, "10 objects acknowledged")
    postgres_server.stop()
    down.set()
    # Acknowledgements never wait for the database: these arrive while it is down.
    wait_for(lambda: len(acknowledged) >= 25, 60, "objects acknowledged while the server is down")
    waiting = len(list(cfg.node.spool.rglob("*.dcm")))
    postgres_server.start()
    up.set()
    sender.join(120)
    assert acknowledged == [0] * 40
    assert waiting > 0  # objects waited in spool/ for their rows
    wait_for(lambda: node.wait_idle(1), 120, "the node to record everything")
    rows = audit_objects(cfg)
    assert Counter(r["status"] for r in rows) == {"stored": 40}
    assert len({r["pseudo_sop_uid"] for r in rows}) == 40  # each once
    assert len(files_under(cfg.node.output, "*.dcm")) == 40
    assert files_under(cfg.node.spool, "*.dcm") == []
    with open_audit(cfg.database_url) as db:
        assert db.status_counts() == {"stored": 40, "quarantined": 0, "rejected": 0, "duplicate": 0}
        assert [s.objects for s in db.study_summaries(Filters())] == [40]
    wait_for(
        lambda: [a["outcome"] for a in audit_associations(cfg)] == ["released"],
        60,
        "the association's end recorded after the restart",
    )


def test_a_node_starting_while_the_server_is_down_waits_for_it(
    postgres_server: PostgresServer,
    write_config: Callable[[str], Config],
) -> None:
    cfg = write_config(pg_config(postgres_server.create_database()))
    node = Node(cfg, port=0)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            node.start()
        except BaseException as exc:
            failed.append(exc)

    postgres_server.stop()
    starter = threading.Thread(target=start)
    try:
        starter.start()
        starter.join(1.5)
        assert starter.is_alive() and not failed  # still waiting: not failed, not serving
    finally:
        postgres_server.start()
    starter.join(120)
    assert failed == []
    try:
        patient = SyntheticPatient.make(PhiTokens(), seed=13)
        slices = ct_series(2, patient=patient, rows=8, cols=8)
        assert store(node.address, slices, "CT_SCANNER") == [0, 0]
        assert node.wait_idle(60)
        assert [r["status"] for r in audit_objects(cfg)] == ["stored", "stored"]
    finally:
        node.stop(timeout=30)
