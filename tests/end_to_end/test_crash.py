"""The audit after a crash, and offline rows beside the node's: real nodes, real kills.

A crash between writing an object's output and committing its row leaves the spool entry,
which is processed again; that redo finds its own output. Each acknowledged object must
still get exactly one ``stored`` row, a real second send a ``duplicate`` one, and the
associations the crash cut must be closed. Offline runs writing into the node's audit
database must not disturb what the console shows of the node's studies.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from typer.testing import CliRunner

from deid_node.cli.app import app
from deid_node.config import Config, load_config
from deid_node.deid.pipeline import process_file
from deid_node.deid.profiles import compile_profile
from deid_node.deid.pseudonym import pseudo_uid
from deid_node.deid.secret import load_secret
from deid_node.intake.spool import Spool
from deid_node.object_status import Status
from deid_node.runtime.node import Node
from deid_node.testing.loopback import free_port
from deid_node.testing.synthetic import PhiTokens, phi_everywhere, write_files
from deid_node.web.app import create_app
from tests.support.datasets import small_ct, with_new_sop_uid
from tests.support.node import (
    IDLE,
    ONE_SOURCE,
    audit_associations,
    audit_objects,
    console_user,
    expected_output,
    group_alive,
    kill_group,
    node_table,
    output_sops,
    publish_in_spool,
    serve,
    spool_files,
)
from tests.support.scu import associate, echo, store
from tests.support.waiting import wait_for


def _statuses(cfg: Config) -> Counter[tuple[str, str]]:
    """(pseudo SOP Instance UID, status) -> rows, of the objects that have output."""
    rows = audit_objects(cfg)
    return Counter((str(r["pseudo_sop_uid"]), str(r["status"])) for r in rows if r["output_path"])


def _assert_once(cfg: Config, sent: Counter[str]) -> None:
    """Each object sent n times: one stored row and n - 1 duplicate rows, nothing else."""
    expected: Counter[tuple[str, str]] = Counter()
    for sop, n in sent.items():
        expected[(sop, "stored")] = 1
        if n > 1:
            expected[(sop, "duplicate")] = n - 1
    assert _statuses(cfg) == expected


def test_a_redo_at_start_records_stored_once_and_a_second_send_duplicate(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    datasets = small_ct(4)
    spool = Spool(cfg.node.spool, cfg.node.quarantine, max_bytes=10**9, max_object_bytes=10**8)
    spool.prepare()
    items = [publish_in_spool(spool, p) for p in write_files(datasets, tmp_path / "in")]
    # What kill -9 leaves when it comes after a worker wrote the output of the first three
    # and before their rows were committed: output there, spool entries there, no rows.
    key = load_secret(cfg.node.secret_path)
    profile = compile_profile(cfg.profiles["research"])
    for item in items[:3]:
        assert process_file(item.path, profile, key, cfg.node.output).status is Status.STORED
    # The fourth one's row will be committed; a copy of its entry plays the spool file a
    # kill -9 left between that commit and the file's removal.
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in (items[3].path, items[3].sidecar):
        shutil.copy2(path, kept / path.name)

    node = Node(cfg, port=0)
    node.start()  # recovery: the four are processed before serving
    assert node.stop(timeout=IDLE)
    pseudo = sorted(expected_output(cfg, "research", datasets))
    _assert_once(cfg, Counter(pseudo))
    assert len({r["receipt_id"] for r in audit_objects(cfg)}) == 4  # one row per spool entry

    for name in ("dcm", "json"):
        shutil.copy2(kept / f"{items[3].stem}.{name}", cfg.node.spool / f"{items[3].stem}.{name}")
    node = start_node(cfg)  # redoes the fourth: its row is there, nothing is added
    assert spool_files(cfg) == []
    assert store(node.address, datasets[:1], "CT_SCANNER") == [0]  # a real second send
    assert node.wait_idle(IDLE)
    first = expected_output(cfg, "research", datasets[:1]).pop()
    _assert_once(cfg, Counter(pseudo) + Counter([first]))
    assert len(audit_objects(cfg)) == 5


def _lock_audit(cfg: Config) -> sqlite3.Connection:
    """Hold the audit database's write lock: the node writes outputs, commits no row."""
    path = cfg.database_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.slow
def test_kill_9_of_the_supervisor_after_outputs_before_rows_then_restart(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "deid-node.toml"
    config.write_text(node_table(port=port, workers=2) + ONE_SOURCE, encoding="utf-8")
    cfg = load_config(config)
    address = ("127.0.0.1", port)
    log = tmp_path / "node.log"
    datasets = small_ct(12, seed=5)
    proc = serve(config, log)
    lock = None
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == 0, 30, "the node to answer C-ECHO")
        assoc = associate(address, "CT_SCANNER", [CTImageStorage])
        assert assoc.is_established
        assert int(assoc.send_c_store(datasets[0]).Status) == 0
        wait_for(lambda: len(audit_objects(cfg)) == 1, IDLE, "the first object's row")
        cut = [a for a in audit_associations(cfg) if a["outcome"] is None]
        assert len(cut) == 1
        lock = _lock_audit(cfg)
        # The rest, the first one again (its row is committed: a real second send) and
        # the second one twice (both sends wait for their rows: one stored, one duplicate).
        sends = [*datasets[1:], datasets[0], datasets[1]]
        assert [int(assoc.send_c_store(ds).Status) for ds in sends] == [0] * len(sends)
        wait_for(
            lambda: len(output_sops(cfg, "research")) == len(datasets),
            IDLE,
            "every output to be written",
        )
        wait_for(
            lambda: len([p for p in spool_files(cfg) if p.suffix == ".dcm"]) == len(sends),
            IDLE,
            "the processed entries to wait for their rows",
        )
        proc.kill()  # kill -9 of the supervisor, mid-association
        proc.wait(10)
        wait_for(lambda: not group_alive(proc.pid), 30, "the old node's processes to exit")
        assoc.abort()
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        kill_group(proc)
    assert len(audit_objects(cfg)) == 1  # nothing else reached the audit before the kill

    proc = serve(config, log)
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == 0, 60, "the restarted node")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_for(lambda: not group_alive(proc.pid), 30, "the workers to exit")
    finally:
        kill_group(proc)

    key = cfg.node.secret_path.read_bytes()
    sent = Counter(
        pseudo_uid(key, "research", str(ds.SOPInstanceUID)) for ds in [datasets[0], *sends]
    )
    _assert_once(cfg, sent)
    assert spool_files(cfg) == []
    rows = {a["id"]: a for a in audit_associations(cfg)}
    assert [a for a in rows.values() if a["outcome"] is None] == []  # none left open
    interrupted = rows[cut[0]["id"]]
    assert interrupted["outcome"] == "interrupted"
    assert interrupted["objects"] == 1 + len(sends)
    assert "Traceback" not in log.read_text()


def _worker_pids(node: Node) -> set[int]:
    pool = node.scheduler.pool  # the test kills what the node runs; nothing is replaced or faked
    processes = getattr(pool, "_processes", None) or {}
    # The pool's management thread replaces workers while we look: copy before iterating
    # (dict.copy is atomic under the GIL; iterating a live dict is not).
    return {p.pid for p in processes.copy().values() if p.pid and p.is_alive()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" not in status.read_text()


@pytest.mark.slow
def test_kill_9_of_workers_mid_stream_records_each_object_once(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table(workers=2) + ONE_SOURCE)
    node = start_node(cfg)
    # Objects full of identifiers, slower to de-identify than to receive: both workers are
    # busy when one is killed, and the pool's break fails the other's call in flight too.
    template = phi_everywhere(PhiTokens())
    batches = [[with_new_sop_uid(template) for _ in range(30)] for _ in range(2)]
    assocs = [associate(node.address, "CT_SCANNER", [CTImageStorage]) for _ in batches]
    acked: list[list[Dataset]] = [[] for _ in batches]

    def send(i: int) -> None:
        acked[i].extend(ds for ds in batches[i] if assocs[i].send_c_store(ds).Status == 0)
        assocs[i].release()

    senders = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in senders:
        t.start()
    seen: set[int] = set()

    def kill_one() -> None:
        pids = _worker_pids(node)
        seen.update(pids)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in _worker_pids(node), IDLE, "a new pool")

    # Three kills mid-stream (MAX_WORKER_CRASHES): the objects waiting in the pool's queue
    # through all three are not the ones that crash it, and must not be quarantined.
    for goal in (6, 20, 34):
        wait_for(
            lambda: len(output_sops(cfg)) >= goal and len(_worker_pids(node)) == 2,  # noqa: B023
            IDLE,
            f"{goal} outputs and a full pool",
        )
        kill_one()
    for t in senders:
        t.join(IDLE)
    assert node.wait_idle(IDLE)
    # Killed while idle, a worker may hold the task queue's lock: the other one then waits
    # on it for good, and its pool with it, unless the node ends them.
    assert len(_worker_pids(node)) == 2  # the stream's pool: both started, both idle now
    kill_one()
    extra = [with_new_sop_uid(template) for _ in range(2)]
    assert store(node.address, extra, "CT_SCANNER") == [0, 0]
    assert node.wait_idle(IDLE)
    old = seen - _worker_pids(node)
    wait_for(lambda: not any(_alive(pid) for pid in old), IDLE, "the old pools' workers to end")
    acknowledged = [ds for batch in acked for ds in batch] + extra
    assert len(acknowledged) == 62
    expected = expected_output(cfg, "research", acknowledged)
    assert sorted(output_sops(cfg)) == sorted(expected)
    _assert_once(cfg, Counter(expected))
    assert spool_files(cfg) == []


def test_kill_9_of_a_receiving_process_closes_its_associations_as_interrupted(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table().replace("workers", "receivers = 1\nworkers") + ONE_SOURCE)
    node = start_node(cfg)
    datasets = small_ct(3, seed=9)
    assoc = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * 3
    [receiver] = [p for p in multiprocessing.active_children() if p.name == "deid-receiver-0"]
    os.kill(receiver.pid or 0, signal.SIGKILL)

    def closed() -> bool:
        return [(a["outcome"], a["objects"]) for a in audit_associations(cfg)] == [
            ("interrupted", 3)
        ]

    wait_for(closed, IDLE, "the cut association to be closed")
    assoc.abort()
    assert store(node.address, small_ct(1, seed=10), "CT_SCANNER") == [0]  # a new one serves
    assert node.wait_idle(IDLE)
    _assert_once(cfg, Counter(expected_output(cfg, "research", [*datasets, *small_ct(1, seed=10)])))
    assert [a["outcome"] for a in audit_associations(cfg)] == ["interrupted", "released"]


def test_an_offline_run_from_elsewhere_leaves_the_nodes_studies_viewable(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)  # research keeps linkage
    node = start_node(cfg)
    datasets = small_ct(3, seed=8)
    assert store(node.address, datasets, "CT_SCANNER") == [0] * 3
    assert node.wait_idle(IDLE)
    files = write_files(datasets, tmp_path / "in")
    # The same objects offline, with the node's config, from another working folder and
    # into a relative output folder: same pseudonyms, newer rows, output elsewhere.
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["deidentify", *map(str, files), "-o", "deid", "-p", "research", "-c", str(cfg.path)]
    result = CliRunner().invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)

    token = console_user(cfg, "alice", "correct horse battery staple")
    bearer = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        studies = client.get("/api/studies", headers=bearer)
        assert studies.status_code == 200
        [study] = studies.json()
        assert study["modalities"] == ["CT"] and study["instances"] == 3
        series = client.get(f"/api/studies/{study['pseudo_study_uid']}/series", headers=bearer)
        assert series.status_code == 200, series.text
        assert [(s["modality"], s["instances"]) for s in series.json()] == [("CT", 3)]

    rows = audit_objects(cfg)
    offline = [r for r in rows if r["origin"] == "offline"]
    assert len(offline) == 3 and {r["origin"] for r in rows} == {"node", "offline"}
    for row in offline:
        path = Path(str(row["output_path"]))
        assert path.is_absolute() and path.is_file()
        assert path.is_relative_to(elsewhere / "deid")
