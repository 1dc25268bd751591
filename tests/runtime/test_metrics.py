"""GET /health and GET /metrics of a real node, with dcmtk's storescu as the sender."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import CTImageStorage

from deid_node.config import Config
from deid_node.errors import ConfigError
from deid_node.runtime.metrics import pixel_frames, rejection_kind
from deid_node.runtime.node import Node
from deid_node.testing.loopback import free_port
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, write_files
from tests.support.dcmtk import STORESCU
from tests.support.node import audit_associations, audit_objects, node_table
from tests.support.scu import NODE_AE, associate
from tests.support.waiting import wait_for

IDLE = 60.0

SOURCES = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]

[metrics]
host = "127.0.0.1"
port = 0
"""


def _get(address: tuple[str, int], path: str) -> tuple[int, str]:
    url = f"http://{address[0]}:{address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _storescu(address: tuple[str, int], calling_ae: str, files: list[Path]) -> int:
    host, port = address
    done = subprocess.run(
        [str(STORESCU), "-aet", calling_ae, "-aec", NODE_AE, host, str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    return done.returncode


@pytest.mark.dcmtk
def test_metrics_count_what_the_audit_records(
    dcmtk: None,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    cfg = write_config(node_table() + SOURCES)
    node = start_node(cfg)
    tokens = PhiTokens()
    datasets = ct_series(12, patient=SyntheticPatient.make(tokens, seed=3), rows=16, cols=16)
    files = write_files(datasets, tmp_path / "send")
    assert _storescu(node.address, "CT_SCANNER", files) == 0
    assert _storescu(node.address, "CT_SCANNER", files[:4]) == 0  # duplicates
    assert _storescu(node.address, "STRANGER", files[:1]) != 0  # rejected association
    assert node.wait_idle(IDLE)

    status, page = _get(node.metrics_address, "/metrics")
    assert status == 200
    samples = _samples(page)
    rows = audit_objects(cfg)
    by_status = Counter(str(r["status"]) for r in rows)
    assert by_status == {"stored": 12, "duplicate": 4}
    source = (("calling_ae", "CT_SCANNER"), ("profile", "research"))
    for name in ("stored", "duplicate"):
        key = ("deid_objects_total", tuple(sorted((*source, ("status", name)))))
        assert samples[key] == by_status[name]
    assert samples[("deid_objects_received_total", source)] == len(rows)
    associations = audit_associations(cfg)
    accepted = sum(1 for a in associations if a["outcome"] != "rejected")
    assert samples[("deid_associations_accepted_total", (("calling_ae", "CT_SCANNER"),))] == (
        accepted
    )
    rejected = (("reason", "calling_ae_unknown"),)
    assert samples[("deid_associations_rejected_total", rejected)] == 1
    assert samples[("deid_association_duration_seconds_count", ())] == accepted
    assert samples[("deid_object_processing_seconds_count", (("profile", "research"),))] == 16
    assert samples[("deid_audit_write_seconds_count", ())] == 16
    assert samples[("deid_spool_objects", ())] == 0
    assert samples[("deid_work_queued", ())] == 0
    # No PHI and no UID anywhere on the page: labels are configuration.
    for ds in datasets:
        for value in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.PatientID, str(ds.PatientName)):
            assert str(value) not in page
    assert "STRANGER" not in page
    assert _get(node.metrics_address, "/health") == (200, "ok\n")


def test_health_is_503_while_the_node_drains(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + SOURCES)
    node = start_node(cfg)
    address = node.metrics_address
    assert _get(address, "/health") == (200, "ok\n")
    assoc = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert assoc.is_established
    stopping = threading.Thread(target=node.stop, kwargs={"timeout": 60})
    stopping.start()
    try:
        # The open association holds the stop: the node drains, and says so.
        wait_for(lambda: _get(address, "/health")[0] == 503, IDLE, "/health to turn 503")
        status, text = _get(address, "/health")
        assert (status, text) == (503, "draining: not accepting new associations\n")
        assert _get(address, "/metrics")[0] == 200  # still scraped while draining
    finally:
        assoc.release()
        stopping.join(IDLE)
    assert not stopping.is_alive()
    with pytest.raises(OSError):  # stopped with the node
        _get(address, "/health")


def test_health_is_503_while_the_spool_cannot_be_written(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + SOURCES)
    node = start_node(cfg)
    incoming = cfg.node.spool / "incoming"
    # chmod does not stop root (CI): a file where the folder was stops everyone.
    shutil.rmtree(incoming)
    incoming.write_bytes(b"")
    status, text = _get(node.metrics_address, "/health")
    assert status == 503
    assert text.startswith("spool not writable: ")
    assert text.count("\n") == 1
    incoming.unlink()
    incoming.mkdir(mode=0o700)
    assert _get(node.metrics_address, "/health") == (200, "ok\n")
    assert _get(node.metrics_address, "/other")[0] == 404


def test_no_metrics_table_serves_nothing(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + SOURCES.split("[metrics]")[0])
    assert cfg.metrics is None
    node = start_node(cfg)
    with pytest.raises(RuntimeError, match=r"no \[metrics\] table"):
        _ = node.metrics_address


def test_metrics_keys_are_checked(write_config: Callable[[str], Config]) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port: expected an integer from 0 to 65535"):
        write_config(node_table() + SOURCES.replace("port = 0", "port = 70000"))
    with pytest.raises(ConfigError, match=r"metrics"):
        write_config(node_table() + SOURCES + "path = '/x'\n")


def test_labels_name_kinds_not_words() -> None:
    assert rejection_kind("calling AE title 'X' is not a configured source") == (
        "calling_ae_unknown"
    )
    assert rejection_kind("called AE title 'Y' is not this node's") == "called_ae"
    assert rejection_kind("too many associations (max_associations = 8)") == "max_associations"
    assert rejection_kind("anything else, with a name in it") == "other"
    assert pixel_frames(None) == (0, 0)
    assert pixel_frames("checked: no text in 3 frames (2 distinct; looked at ...)") == (3, 0)
    assert pixel_frames("cleaned: 2 regions (2 by detector) in 1 of 4 frames; looked") == (4, 1)
    assert pixel_frames("bits outside BitsStored cleared") == (0, 0)


def test_health_is_503_while_the_audit_database_cannot_be_written(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    """Objects are still acknowledged (they wait in spool/), but the node says it is sick."""
    cfg = write_config(node_table() + SOURCES)
    node = start_node(cfg, audit_stall_seconds=0.5)
    address = node.metrics_address
    dataset = ct_series(1, patient=SyntheticPatient.make(PhiTokens(), seed=9), rows=8, cols=8)[0]
    lock = sqlite3.connect(cfg.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the node's writer cannot commit
        assoc = associate(node.address, "CT_SCANNER", [CTImageStorage])
        assert int(assoc.send_c_store(dataset).Status) == 0
        assoc.release()
        wait_for(lambda: _get(address, "/health")[0] == 503, IDLE, "/health to turn 503")
        assert _get(address, "/health")[1].startswith("audit database not writable: ")
    finally:
        lock.rollback()
        lock.close()
    assert node.wait_idle(IDLE)
    assert _get(address, "/health") == (200, "ok\n")
    assert [r["status"] for r in audit_objects(cfg)] == ["stored"]


def test_forward_jobs_are_counted_per_destination(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    """Nothing listens at the destination: the jobs wait, and /metrics shows them."""
    forwarding = SOURCES.replace(
        "[profiles.research]\n", '[profiles.research]\nforward_to = ["pacs"]\n'
    ) + (
        '\n[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f"port = {free_port()}\ntimeout = 5\n"
    )
    cfg = write_config(node_table() + forwarding)
    node = start_node(cfg)
    datasets = ct_series(3, patient=SyntheticPatient.make(PhiTokens(), seed=4), rows=8, cols=8)
    assoc = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0, 0, 0]
    assoc.release()
    assert node.wait_idle(IDLE)
    samples = _samples(_get(node.metrics_address, "/metrics")[1])
    jobs = {
        dict(labels)["state"]: value
        for (name, labels), value in samples.items()
        if name == "deid_forward_jobs" and dict(labels)["destination"] == "pacs"
    }
    assert set(jobs) == {"pending", "in_flight", "sent", "failed"}
    assert sum(jobs.values()) == 3
    assert jobs["sent"] == 0
