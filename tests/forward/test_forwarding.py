"""Forwarding through the durable outbox to real pynetdicom destinations on loopback."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters
from deid_node.cli.app import app
from deid_node.config import Config
from deid_node.errors import ConfigError
from deid_node.runtime.node import Node
from deid_node.testing.loopback import deid_node_command, free_port, listening
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.dcmtk import STORESCU, run_dcmtk
from tests.support.destinations import DEST_AE, Destination
from tests.support.files import files_under
from tests.support.node import node_table
from tests.support.pki import Pki
from tests.support.scu import associate, store
from tests.support.waiting import wait_for

runner = CliRunner()


def forward_config(
    dest_port: int,
    *,
    port: int = 0,
    keep_output: bool = True,
    destination: str = "",
    retries: int = 2,
) -> str:
    return (
        node_table(port)
        + f"""
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
options = ["retain-longitudinal-modified-dates"]
forward_to = ["pacs"]
keep_output = {str(keep_output).lower()}

[[destinations]]
name = "pacs"
ae_title = "{DEST_AE}"
host = "127.0.0.1"
port = {dest_port}
idle_release = 0.5
timeout = 10
{destination}

[destinations.retry]
delay = 0.1
max_delay = 0.5
max_retries = {retries}
"""
    )


def cts(n: int, seed: int) -> list[Dataset]:
    return ct_series(n, patient=SyntheticPatient.make(PhiTokens(), seed), seed=seed)


def jobs(cfg: Config) -> list[dict[str, object]]:
    with open_audit(cfg.database_url) as db:
        return list(db.outbox.iter_jobs(Filters()))


def output_uids(cfg: Config) -> set[str]:
    return {p.stem for p in files_under(cfg.node.output, "*.dcm")}


def test_every_stored_object_reaches_the_destination_once(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    dest = Destination()
    cfg = write_config(forward_config(dest.start()))
    try:
        node = start_node(cfg)
        datasets = cts(6, seed=1)
        assert store(node.address, datasets, "CT_SCANNER") == [0] * 6
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert set(dest.received) == output_uids(cfg) and len(dest.received) == 6
        assert set(dest.received.values()) == {1}
        assert not {str(ds.SOPInstanceUID) for ds in datasets} & set(dest.received)
        rows = jobs(cfg)
        assert [(r["destination"], r["state"], r["attempts"]) for r in rows] == [
            ("pacs", "sent", 1)
        ] * 6
        assert all(r["sent_at"] is not None and r["last_error"] is None for r in rows)
        # The same object again: a duplicate, not forwarded a second time.
        assert store(node.address, datasets[:1], "CT_SCANNER") == [0]
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert len(jobs(cfg)) == 6 and set(dest.received.values()) == {1}
    finally:
        dest.stop()


def test_a_destination_down_at_first_gets_everything_once_it_is_up(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    port = free_port()
    cfg = write_config(forward_config(port))
    node = start_node(cfg)
    assert store(node.address, cts(4, seed=2), "CT_SCANNER") == [0] * 4
    assert node.wait_idle(60)

    def retried() -> bool:
        rows = jobs(cfg)
        return len(rows) == 4 and all(int(str(r["attempts"])) >= 1 for r in rows)

    wait_for(retried, 30, "failed attempts on the unreachable destination")
    rows = jobs(cfg)
    assert {r["state"] for r in rows} <= {"pending", "in_flight"}  # never failed: it is down
    assert all("cannot associate" in str(r["last_error"]) for r in rows if r["last_error"])
    dest = Destination()
    try:
        dest.start(port)
        assert node.wait_forwarded(60)
        assert dest.total() == 4
        assert {r["state"] for r in jobs(cfg)} == {"sent"}
    finally:
        dest.stop()


def test_a_refused_sop_class_fails_with_its_reason_and_the_rest_arrives(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    dest = Destination(sop_classes=["1.2.840.10008.5.1.4.1.1.2"])  # CT only
    cfg = write_config(forward_config(dest.start()))
    try:
        node = start_node(cfg)
        datasets = cts(4, seed=3)
        mr = datasets[3]
        mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
        mr.Modality = "MR"
        assert store(node.address, datasets, "CT_SCANNER") == [0] * 4
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert dest.total() == 3
        rows = {str(r["state"]): r for r in jobs(cfg)}
        failed = rows["failed"]
        assert failed["last_error"] == "the destination refused SOP class MR Image Storage"
        assert failed["attempts"] == 2  # max_retries
        assert sum(r["state"] == "sent" for r in jobs(cfg)) == 3
    finally:
        dest.stop()


def test_out_of_resources_is_retried_and_cannot_understand_fails(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    seen: set[str] = set()

    def status(ds: Dataset) -> int:
        if int(ds.InstanceNumber) % 2:
            return 0xC000
        first = str(ds.SOPInstanceUID) not in seen
        seen.add(str(ds.SOPInstanceUID))
        return 0xA700 if first else 0x0000

    dest = Destination(status=status)
    cfg = write_config(forward_config(dest.start(), retries=3))
    try:
        node = start_node(cfg)
        assert store(node.address, cts(4, seed=4), "CT_SCANNER") == [0] * 4
        assert node.wait_idle(60) and node.wait_forwarded(60)
        rows = jobs(cfg)
        sent = [r for r in rows if r["state"] == "sent"]
        failed = [r for r in rows if r["state"] == "failed"]
        assert len(sent) == 2 and all(r["attempts"] == 2 for r in sent)
        assert len(failed) == 2 and all(r["attempts"] == 3 for r in failed)
        assert {r["last_error"] for r in failed} == {"C-STORE status 0xC000 (cannot understand)"}
        assert dest.total() == 2
    finally:
        dest.stop()


def test_compressed_objects_go_uncompressed_to_a_destination_that_wants_it(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    dest = Destination(syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    cfg = write_config(forward_config(dest.start()))
    try:
        node = start_node(cfg)
        datasets = cts(2, seed=5)
        for ds in datasets:
            ds.compress(RLELossless)
        assoc = associate(
            node.address, "CT_SCANNER", [CTImageStorage], transfer_syntaxes=[RLELossless]
        )
        assert assoc.is_established
        try:
            assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0, 0]
        finally:
            assoc.release()
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert dest.total() == 2
        assert set(dest.syntax_seen.values()) <= {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
        kept = [p for p in files_under(cfg.node.output, "*.dcm")]
        assert len(kept) == 2  # the output itself stays as it arrived
    finally:
        dest.stop()


def test_keep_output_false_deletes_each_file_once_forwarded(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    dest = Destination()
    cfg = write_config(forward_config(dest.start(), keep_output=False))
    try:
        node = start_node(cfg)
        assert store(node.address, cts(3, seed=6), "CT_SCANNER") == [0] * 3
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert dest.total() == 3
        wait_for(lambda: not files_under(cfg.node.output, "*.dcm"), 10, "forwarded files deleted")
    finally:
        dest.stop()


def test_forwarding_over_tls(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    pki: Pki,
) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.verify_mode = ssl.CERT_REQUIRED
    dest = Destination(tls=server)
    tls = f"""
[destinations.tls]
ca_bundle = "{pki.ca_cert}"
certificate = "{pki.client_cert}"
key = "{pki.client_key}"
server_name = "localhost"
"""
    cfg = write_config(forward_config(dest.start(), destination=tls))
    try:
        node = start_node(cfg)
        assert store(node.address, cts(2, seed=7), "CT_SCANNER") == [0, 0]
        assert node.wait_idle(60) and node.wait_forwarded(60)
        assert dest.total() == 2
    finally:
        dest.stop()


@pytest.mark.slow
def test_kill_9_while_forwarding_then_restart_delivers_everything(tmp_path: Path) -> None:
    if not STORESCU.exists():
        pytest.skip(f"{STORESCU} not found: install dcmtk")
    pause = threading.Event()

    def slow(ds: Dataset) -> int:
        pause.wait(0.05)  # a destination slower than the node, so the kill finds work
        return 0x0000

    dest = Destination(status=slow)
    config = tmp_path / "deid-node.toml"
    config.write_text(forward_config(dest.start(), port=free_port()), encoding="utf-8")
    from deid_node.config import load_config

    cfg = load_config(config)
    files = []
    for i, ds in enumerate(cts(30, seed=8)):
        path = tmp_path / "in" / f"{i}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: listening(cfg.node.port), 60, "the node to listen")
        return proc

    proc = serve()
    try:
        sent = run_dcmtk(
            STORESCU, "-aet", "CT_SCANNER", "-aec", "DEID_NODE", "127.0.0.1", str(cfg.node.port),
            *files,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: dest.total() >= 3, 60, "forwarding to start")
        proc.kill()  # kill -9 of the node itself; its processes follow it
        proc.wait(30)
        proc = serve()
        wait_for(lambda: dest.total() == 30, 120, "every object at the destination")
        with open_audit(cfg.database_url) as db:
            [counts] = db.outbox.counts()
        assert (counts.sent, counts.failed, counts.pending, counts.in_flight) == (30, 0, 0, 0)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        dest.stop()


def test_forward_commands_status_retry_and_purge(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    dest = Destination(status=lambda ds: 0xC001)
    cfg = write_config(forward_config(dest.start(), retries=1))
    config = str(tmp_path / "deid-node.toml")
    try:
        node = start_node(cfg)
        assert store(node.address, cts(2, seed=9), "CT_SCANNER") == [0, 0]
        assert node.wait_idle(60) and node.wait_forwarded(60)
        shown = runner.invoke(app, ["forward", "status", "--json", "-c", config])
        assert shown.exit_code == 0, shown.output
        [entry] = json.loads(shown.output)
        assert (entry["destination"], entry["failed"], entry["sent"]) == ("pacs", 2, 0)
        table = runner.invoke(app, ["forward", "status", "-c", config])
        assert "pacs" in table.output and "failed" in table.output
        listed = runner.invoke(app, ["audit", "--forwards", "--json", "-c", config])
        assert {r["last_error"] for r in json.loads(listed.output)} == {
            "C-STORE status 0xC001 (cannot understand)"
        }
        for form in (["audit", "forwards"], ["audit", "--forwards"]):  # the flag form: scripts
            again = runner.invoke(app, [*form, "--json", "-c", config])
            assert (again.exit_code, again.output) == (0, listed.output)
            table = runner.invoke(app, [*form, "--calling-ae", "CT_SCANNER", "-c", config])
            assert table.exit_code == 0 and table.output.count("0xC001") == 2
        dest.status = lambda ds: 0x0000
        retried = runner.invoke(app, ["forward", "retry", "--failed", "-c", config])
        assert retried.exit_code == 0 and "2 job(s)" in retried.output
        assert node.wait_forwarded(60)
        assert dest.total() == 2
        exported = runner.invoke(app, ["export-csv", "--forwards", "-c", config])
        assert exported.output.splitlines()[0].startswith("object_id,received_at,")
        assert exported.output.count(",sent,") == 2
        purged = runner.invoke(app, ["forward", "purge", "-c", config])
        assert purged.exit_code == 0 and "0 failed job(s)" in purged.output
        unknown = runner.invoke(app, ["forward", "retry", "--destination", "nope", "-c", config])
        assert unknown.exit_code == 1 and "unknown destination 'nope'" in unknown.output
    finally:
        dest.stop()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('forward_to = ["pacs"]', "unknown destination 'pacs'; configured destinations: none"),
        ("keep_output = false", "keep_output: false deletes output once forwarded"),
    ],
)
def test_forwarding_config_errors_name_the_key(
    write_config: Callable[[str], Config], change: str, message: str
) -> None:
    text = node_table() + f"[profiles.research]\n{change}\n"
    with pytest.raises(ConfigError) as caught:
        write_config(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_retry_settings_are_checked(write_config: Callable[[str], Config]) -> None:
    text = forward_config(104).replace("max_delay = 0.5", "max_delay = 0.01")
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.retry\.max_delay: must be at"):
        write_config(text)


def test_check_config_lists_destinations_and_refuses_a_missing_certificate(
    tmp_path: Path,
) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text(forward_config(4242), encoding="utf-8")
    ok = runner.invoke(app, ["check-config", "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    assert f"forward -> pacs: {DEST_AE} at 127.0.0.1:4242 (from research)" in ok.output
    tls = '[destinations.tls]\nca_bundle = "missing-ca.pem"\n'
    config.write_text(forward_config(4242, destination=tls), encoding="utf-8")
    bad = runner.invoke(app, ["check-config", "-c", str(config)])
    assert bad.exit_code == 1
    assert "Error: destination 'pacs', tls: cannot load the certificates or key" in bad.output
