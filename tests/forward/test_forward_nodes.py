"""Forwarding from several nodes over one PostgreSQL database: each job sent exactly once
whichever node's forwarder takes it; per-node output stays with its node; a dead node's
claims go back to the queue after the lease."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from deid_node.audit.db import AuditDB, open_audit
from deid_node.audit.records import Filters, Forwarding, ObjectRecord
from deid_node.clock import now
from deid_node.config import Config, load_config
from deid_node.forward.forwarder import Forwarder
from deid_node.forward.process import node_owner
from deid_node.object_status import Status
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.destinations import DEST_AE, Destination
from tests.support.node import node_table
from tests.support.waiting import wait_for

T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def node_config(folder: Path, name: str, url: str, dest_port: int, *, shared: bool) -> Config:
    folder.mkdir()
    table = node_table().replace(
        "[node]\n", f'[node]\nname = "{name}"\noutput_shared = {str(shared).lower()}\n'
    )
    text = (
        table
        + f"""
[database]
url = "{url}"

[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
forward_to = ["pacs"]

[[destinations]]
name = "pacs"
ae_title = "{DEST_AE}"
host = "127.0.0.1"
port = {dest_port}
max_associations = 2
idle_release = 0.5
timeout = 10

[destinations.retry]
delay = 0.1
max_delay = 0.5
"""
    )
    (folder / "deid-node.toml").write_text(text, encoding="utf-8")
    return load_config(folder / "deid-node.toml")


def record_jobs(
    db: AuditDB, folder: Path, node: str, datasets: list[Dataset], *, shared: bool
) -> None:
    """Object rows written by `node` (files in `folder`), each with its forward job."""
    folder.mkdir(parents=True, exist_ok=True)
    items, forwards = [], []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        record = ObjectRecord(
            received_at=T0,
            processed_at=T0,
            association_id=None,
            calling_ae="CT_SCANNER",
            called_ae="DEID_NODE",
            peer_address="127.0.0.1",
            profile="research",
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            size_bytes=path.stat().st_size,
            status=Status.STORED,
            reason=None,
            pseudo_patient_id="RES1",
            pseudo_study_uid=str(ds.StudyInstanceUID),
            pseudo_series_uid=str(ds.SeriesInstanceUID),
            pseudo_sop_uid=str(ds.SOPInstanceUID),
            output_path=str(path),
            node=node,
        )
        items.append((record, None))
        forwards.append(Forwarding(("pacs",), True, shared))
    db.record_objects(items, forwards)


def series(n: int, seed: int) -> list[Dataset]:
    patient = SyntheticPatient.make(PhiTokens(), seed=seed)
    return ct_series(n, patient=patient, rows=16, cols=16, seed=seed)


@pytest.fixture
def dest() -> Iterator[Destination]:
    destination = Destination()
    ports[id(destination)] = destination.start()
    yield destination
    destination.stop()


ports: dict[int, int] = {}


def states(db: AuditDB) -> dict[str, str]:
    return {str(j["pseudo_sop_uid"]): str(j["state"]) for j in db.outbox.iter_jobs(Filters())}


def start_forwarder(stack: ExitStack, cfg: Config, lease_seconds: float = 600.0) -> Forwarder:
    db = stack.enter_context(open_audit(cfg.database_url))  # an engine of its own
    forwarder = Forwarder(cfg, db, node_owner(cfg), lease_seconds)
    forwarder.start()
    stack.callback(forwarder.stop)
    return forwarder


def test_two_forwarders_send_every_job_exactly_once(
    postgres_url: str, tmp_path: Path, dest: Destination
) -> None:
    port = ports[id(dest)]
    cfgs = [
        node_config(tmp_path / name, name, postgres_url, port, shared=True)
        for name in ("gw-1", "gw-2")
    ]
    one, two = series(40, seed=21), series(40, seed=22)
    with open_audit(postgres_url) as db, ExitStack() as stack:
        record_jobs(db, tmp_path / "output", "gw-1", one, shared=True)
        record_jobs(db, tmp_path / "output", "gw-2", two, shared=True)
        for cfg in cfgs:
            start_forwarder(stack, cfg).wake()
        wait_for(lambda: set(states(db).values()) == {"sent"}, 120, "every job sent")
        jobs = list(db.outbox.iter_jobs(Filters()))
    assert len(jobs) == 80
    assert {j["attempts"] for j in jobs} == {1}
    assert dest.received == {str(ds.SOPInstanceUID): 1 for ds in one + two}


def test_a_node_whose_output_is_its_own_keeps_its_jobs(
    postgres_url: str, tmp_path: Path, dest: Destination
) -> None:
    port = ports[id(dest)]
    gw1, gw2 = (
        node_config(tmp_path / name, name, postgres_url, port, shared=False)
        for name in ("gw-1", "gw-2")
    )
    one, two = series(10, seed=23), series(10, seed=24)
    ones = {str(ds.SOPInstanceUID) for ds in one}
    with open_audit(postgres_url) as db, ExitStack() as stack:
        record_jobs(db, tmp_path / "gw-1" / "output", "gw-1", one, shared=False)
        record_jobs(db, tmp_path / "gw-2" / "output", "gw-2", two, shared=False)
        start_forwarder(stack, gw2).wake()
        wait_for(
            lambda: {s for u, s in states(db).items() if u not in ones} == {"sent"},
            120,
            "gw-2's own jobs sent",
        )
        assert {s for u, s in states(db).items() if u in ones} == {"pending"}
        assert not ones & dest.received.keys()  # gw-2 cannot read gw-1's output
        start_forwarder(stack, gw1).wake()
        wait_for(lambda: set(states(db).values()) == {"sent"}, 120, "gw-1's jobs sent")
    assert dest.received == {str(ds.SOPInstanceUID): 1 for ds in one + two}


def test_the_claims_of_a_node_that_died_go_back_after_the_lease(
    postgres_url: str, tmp_path: Path, dest: Destination
) -> None:
    port = ports[id(dest)]
    cfg = node_config(tmp_path / "gw-2", "gw-2", postgres_url, port, shared=True)
    datasets = series(10, seed=25)
    with open_audit(postgres_url) as db, ExitStack() as stack:
        record_jobs(db, tmp_path / "output", "gw-1", datasets, shared=True)
        # gw-1 claims everything, then dies without sending: nothing would ever be sent.
        taken = db.outbox.for_node("gw-1", True).claim("pacs", "gw-1:/var", now(), 100)
        assert len(taken) == 10
        start_forwarder(stack, cfg, lease_seconds=2.0).wake()
        wait_for(lambda: set(states(db).values()) == {"sent"}, 120, "the lease to run out")
        jobs = list(db.outbox.iter_jobs(Filters()))
    assert {j["attempts"] for j in jobs} == {1}
    assert dest.received == {str(ds.SOPInstanceUID): 1 for ds in datasets}
