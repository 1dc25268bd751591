"""The node end to end: real associations on 127.0.0.1, real spool, workers and SQLite audit."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import _config
from typer.testing import CliRunner

from deid_node.cli.app import app
from deid_node.config import Config, load_config
from deid_node.dicom.status import (
    DIAG_CALLED_AE_NOT_RECOGNISED,
    DIAG_CALLING_AE_NOT_RECOGNISED,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
)
from deid_node.intake.receiver import UnreadableObject, check_header
from deid_node.intake.spool import Spool
from deid_node.runtime.node import Node
from deid_node.testing.loopback import free_port
from deid_node.testing.synthetic import (
    PhiTokens,
    SyntheticPatient,
    ct_series,
    phi_everywhere,
    us_multiframe,
    write_bad_files,
    write_files,
)
from tests.support.datasets import small_ct, with_new_sop_uid
from tests.support.dcmtk import ECHOSCU, STORESCU, run_dcmtk
from tests.support.files import files_under
from tests.support.node import (
    IDLE,
    ONE_SOURCE,
    audit_associations,
    audit_objects,
    expected_output,
    group_alive,
    kill_group,
    node_table,
    output_sops,
    publish_in_spool,
    serve,
    spool_files,
)
from tests.support.scu import NODE_AE, associate, echo, store
from tests.support.waiting import wait_for

# --------------------------------------------------------------------------------------------
# Storing, echo, audit, logs


def test_pynetdicom_store_and_echo_are_spooled_processed_and_audited(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    tokens = PhiTokens()
    datasets = small_ct(5, tokens=tokens)
    caplog.set_level(logging.INFO)

    assert store(node.address, datasets, "CT_SCANNER") == [0] * 5
    assert echo(node.address, "CT_SCANNER") == 0
    assert node.wait_idle(IDLE)

    assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", datasets)
    assert spool_files(cfg) == []
    for folder in (cfg.node.spool, cfg.node.quarantine):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    rows = audit_objects(cfg)
    assert [r["status"] for r in rows] == ["stored"] * 5
    assert {r["pseudo_sop_uid"] for r in rows} == expected_output(cfg, "research", datasets)
    assert {r["calling_ae"] for r in rows} == {"CT_SCANNER"}
    assert all(Path(str(r["output_path"])).is_file() for r in rows)
    store_assoc = next(a for a in audit_associations(cfg) if a["objects"] == 5)
    assert store_assoc["outcome"] == "released"
    assert {r["association_id"] for r in rows} == {store_assoc["id"]}

    # One INFO line per association, no original identifier in any log line.
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("deid_node")]
    assert len([ln for ln in lines if str(store_assoc["id"])[:8] in ln]) == 1
    assert tokens.find_in("\n".join(lines)) == []
    assert logging.getLogger("pynetdicom").getEffectiveLevel() >= logging.WARNING


def test_a_long_association_logs_its_progress(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg, progress_seconds=0)  # a line after every object, not every 30 s
    tokens = PhiTokens()
    caplog.set_level(logging.INFO)
    assert store(node.address, small_ct(3, tokens=tokens), "CT_SCANNER") == [0] * 3
    assert node.wait_idle(IDLE)
    lines = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    assert [ln.split(": ", 1)[1].rsplit(", ", 1)[0] for ln in lines] == [
        f"{n} object(s) so far, {n} stored in spool, 0 refused" for n in (1, 2, 3)
    ]
    assert tokens.find_in("\n".join(lines)) == []


def test_output_has_no_planted_identifier(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    tokens = PhiTokens()
    datasets = small_ct(3, tokens=tokens)
    assert store(node.address, datasets, "CT_SCANNER") == [0] * 3
    assert node.wait_idle(IDLE)
    outputs = files_under(cfg.node.output, "*.dcm")
    assert len(outputs) == 3
    for path in outputs:
        assert tokens.find_in(path.read_bytes()) == []
        assert dcmread(path).PatientIdentityRemoved == "YES"


def test_two_sources_get_their_own_profiles(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(
        node_table()
        + """
[[sources]]
ae_title = "CT_SCANNER"
profile = "basic"

[[sources]]
ae_title = "RESEARCH_PACS"
profile = "longitudinal"

[profiles.basic]

[profiles.longitudinal]
options = ["retain-longitudinal-modified-dates"]
"""
    )
    node = start_node(cfg)
    datasets = small_ct(3)
    assert store(node.address, datasets, "CT_SCANNER") == [0] * 3
    assert store(node.address, datasets, "RESEARCH_PACS") == [0] * 3
    assert node.wait_idle(IDLE)

    by_profile = {
        p: [dcmread(f) for f in files_under(cfg.node.output / p, "*.dcm")]
        for p in ("basic", "longitudinal")
    }
    assert {len(v) for v in by_profile.values()} == {3}
    basic, longitudinal = by_profile["basic"], by_profile["longitudinal"]
    # Unlinkable pseudonyms for the same patient and objects.
    assert {ds.PatientID for ds in basic}.isdisjoint({ds.PatientID for ds in longitudinal})
    assert {ds.SOPInstanceUID for ds in basic}.isdisjoint(
        {ds.SOPInstanceUID for ds in longitudinal}
    )
    original_date = str(datasets[0].StudyDate)
    assert {str(ds.get("StudyDate", "")) for ds in basic} == {""}
    shifted = {str(ds.StudyDate) for ds in longitudinal}
    assert len(shifted) == 1 and shifted != {original_date}
    assert len(next(iter(shifted))) == 8 and next(iter(shifted)).isdigit()
    rows = audit_objects(cfg)
    assert Counter((r["calling_ae"], r["profile"]) for r in rows) == {
        ("CT_SCANNER", "basic"): 3,
        ("RESEARCH_PACS", "longitudinal"): 3,
    }


# --------------------------------------------------------------------------------------------
# Association policy


POLICY = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[[sources]]
ae_title = "REMOTE_PACS"
profile = "research"
hosts = ["10.0.0.0/8"]

[profiles.research]
"""


def test_unknown_caller_wrong_called_ae_and_wrong_host_are_rejected_and_audited(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = write_config(node_table() + POLICY)
    node = start_node(cfg)
    caplog.set_level(logging.INFO)
    attempts = [
        ("STRANGER", NODE_AE, DIAG_CALLING_AE_NOT_RECOGNISED, "not a configured source"),
        ("CT_SCANNER", "OTHER_NODE", DIAG_CALLED_AE_NOT_RECOGNISED, "is not this node's"),
        ("REMOTE_PACS", NODE_AE, DIAG_CALLING_AE_NOT_RECOGNISED, "not allowed from 127.0.0.1"),
    ]
    for calling, called, diagnostic, _ in attempts:
        assoc = associate(node.address, calling, [CTImageStorage], called_ae=called)
        assert assoc.is_rejected, (calling, called)
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, diagnostic)
    assert echo(node.address, "CT_SCANNER") == 0  # still serving the right caller
    assert node.wait_idle(IDLE)

    rejected = [a for a in audit_associations(cfg) if a["outcome"] == "rejected"]
    assert [(a["calling_ae"], a["called_ae"]) for a in rejected] == [
        (calling, called) for calling, called, _, _ in attempts
    ]
    for row, (_, _, _, reason) in zip(rejected, attempts, strict=True):
        assert reason in str(row["reason"])
        assert row["peer_address"] == "127.0.0.1"
    log_lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(log_lines) == 3
    assert audit_objects(cfg) == []


def test_unknown_callers_get_the_unknown_sources_profile(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(
        node_table()
        + POLICY
        + """
[profiles.guests]

[unknown_sources]
action = "guests"
"""
    )
    node = start_node(cfg)
    datasets = small_ct(2)
    assert store(node.address, datasets, "STRANGER") == [0, 0]
    # A configured title from the wrong host stays rejected even so.
    assert associate(node.address, "REMOTE_PACS", [CTImageStorage]).is_rejected
    assert node.wait_idle(IDLE)
    assert set(output_sops(cfg, "guests")) == expected_output(cfg, "guests", datasets)
    assert {r["profile"] for r in audit_objects(cfg)} == {"guests"}


def test_associations_over_max_associations_are_rejected_and_audited(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(
        node_table().replace("max_associations = 8", "max_associations = 1") + ONE_SOURCE
    )
    node = start_node(cfg)
    first = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert first.is_established
    try:
        second = associate(node.address, "CT_SCANNER", [CTImageStorage])
        assert second.is_rejected
        rj = second.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient
        assert int(first.send_c_echo().Status) == 0
    finally:
        first.release()
    assert node.wait_idle(IDLE)
    rejected = [a for a in audit_associations(cfg) if a["outcome"] == "rejected"]
    assert len(rejected) == 1 and "max_associations = 1" in str(rejected[0]["reason"])


# --------------------------------------------------------------------------------------------
# Load


def test_four_concurrent_associations_of_fifty_objects(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    series = [small_ct(50, seed=s) for s in range(4)]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            results[i] = store(node.address, series[i], "CT_SCANNER")
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IDLE)
    assert not errors
    assert [results[i] for i in range(4)] == [[0] * 50] * 4
    assert node.wait_idle(IDLE)

    everything = [ds for s in series for ds in s]
    rows = audit_objects(cfg)
    assert len(rows) == 200
    assert Counter(r["status"] for r in rows) == {"stored": 200}
    assert {r["pseudo_sop_uid"] for r in rows} == expected_output(cfg, "research", everything)
    assert sorted(Counter(r["association_id"] for r in rows).values()) == [50] * 4
    assert len(output_sops(cfg)) == 200
    assocs = [a for a in audit_associations(cfg) if a["objects"]]
    assert [(a["objects"], a["outcome"]) for a in assocs] == [(50, "released")] * 4
    assert spool_files(cfg) == []


# --------------------------------------------------------------------------------------------
# Bad objects over the wire


def _file_with_body(folder: Path, name: str, body: bytes, sop_instance: str | None = None) -> Path:
    """A Part-10 file: valid file meta (CT Image Storage), then `body` as the data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{name}.dcm"
    ds = Dataset()
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as fh:
        fh.write(body)
    return path


def test_garbage_and_truncated_data_sets_fail_are_audited_and_the_node_serves_on(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    bad = write_bad_files(tmp_path / "bad")
    garbage = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    mr = small_ct(1, seed=9)[0]
    mr.SOPClassUID = MRImageStorage  # the data set says MR, the command (file meta) CT
    [mr_path] = write_files([mr], tmp_path / "mr")
    data = mr_path.read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # after the group 2 elements
    mismatch = _file_with_body(tmp_path, "mismatch", data[meta_end:], str(mr.SOPInstanceUID))
    cases = {
        "garbage": (_file_with_body(tmp_path, "garbage", garbage), STATUS_CANNOT_UNDERSTAND),
        "truncated": (bad["truncated"], STATUS_CANNOT_UNDERSTAND),
        "truncated_pixels": (bad["truncated_pixels"], STATUS_CANNOT_UNDERSTAND),
        "bad_length": (bad["bad_length"], STATUS_CANNOT_UNDERSTAND),
    }
    # Sent byte for byte as stored in the files (pynetdicom would otherwise re-encode them).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    good = small_ct(1, seed=5)
    [good_path] = write_files(good, tmp_path / "good")
    assoc = associate(
        node.address, "CT_SCANNER", [CTImageStorage], transfer_syntaxes=[ExplicitVRLittleEndian]
    )
    assert assoc.is_established
    try:
        statuses = {name: assoc.send_c_store(path) for name, (path, _) in cases.items()}
        mismatch_status = assoc.send_c_store(mismatch)
        good_status = assoc.send_c_store(good_path)
    finally:
        assoc.release()

    for name, (_, expected) in cases.items():
        assert statuses[name].Status == expected, name
        assert "ErrorComment" in statuses[name]
    assert mismatch_status.Status == STATUS_DATASET_MISMATCH
    assert good_status.Status == 0
    assert echo(node.address, "CT_SCANNER") == 0
    assert node.wait_idle(IDLE)

    rows = audit_objects(cfg)
    refused = [r for r in rows if r["status"] == "rejected"]
    assert len(refused) == len(cases) + 1
    assert all(str(r["reason"]).startswith("refused with 0x") for r in refused)
    assert [r["pseudo_sop_uid"] for r in rows if r["status"] == "stored"] == list(
        expected_output(cfg, "research", good)
    )
    assert spool_files(cfg) == []
    assert files_under(cfg.node.quarantine) == []


def test_an_unknown_sop_class_gets_a_status_and_an_audit_row(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    unknown = "1.2.826.0.1.3680043.10.1437.99.7"  # no dictionary knows it
    odd = small_ct(1, seed=11)[0]
    odd.SOPClassUID = unknown
    odd.file_meta.MediaStorageSOPClassUID = unknown
    good = small_ct(1, seed=12)
    assoc = associate(node.address, "CT_SCANNER", [unknown, CTImageStorage])
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert unknown in accepted  # so the sender gets a status, not a missing context
        odd_status = assoc.send_c_store(odd)
        good_status = assoc.send_c_store(good[0])
    finally:
        assoc.release()
    assert odd_status.Status == 0x0122
    assert "storage SOP class" in str(odd_status.ErrorComment)
    assert good_status.Status == 0
    assert node.wait_idle(IDLE)
    rows = audit_objects(cfg)
    [refused] = [r for r in rows if r["status"] == "rejected"]
    assert refused["sop_class_uid"] == unknown
    assert "0x0122" in str(refused["reason"])
    assert [r["pseudo_sop_uid"] for r in rows if r["status"] == "stored"] == list(
        expected_output(cfg, "research", good)
    )
    # A known non-storage service we do not offer is still rejected at negotiation.
    find = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
    assoc = associate(node.address, "CT_SCANNER", [find])
    try:
        assert find not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    finally:
        assoc.release()


_SEND_FILE = """
import sys
from pynetdicom import AE, _config, build_context
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
_config.STORE_SEND_CHUNKED_DATASET = True
ae = AE(ae_title="CT_SCANNER")
cx = build_context(CTImageStorage, [ExplicitVRLittleEndian])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), [cx], ae_title="DEID_NODE")
print(int(assoc.send_c_store(sys.argv[2]).Status))
assoc.release()
"""


def test_large_object_is_received_in_chunks_not_held_in_memory(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    big = small_ct(1, seed=6)[0]
    big.Rows = big.Columns = 4096
    big.PixelData = bytes(4096 * 4096 * 2)  # 32 MiB
    [path] = write_files([big], tmp_path / "big")
    del big
    size = path.stat().st_size
    tracemalloc.start()  # this process is the node; the sender runs in another one
    try:
        sent = subprocess.run(
            [sys.executable, "-c", _SEND_FILE, str(node.address[1]), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent.stdout.strip() == "0", sent.stderr
    assert peak < size // 4, f"the node peaked at {peak} bytes for a {size}-byte object"
    assert node.wait_idle(IDLE)
    [row] = audit_objects(cfg)
    assert row["status"] == "stored"
    assert abs(int(str(row["size_bytes"])) - size) < 1024  # our file meta, the same data set


def test_header_check_names_what_is_wrong_without_values(tmp_path: Path) -> None:
    tokens = PhiTokens()
    bad = write_bad_files(tmp_path, tokens=tokens)
    for name in ("truncated", "truncated_pixels", "bad_length", "wrong_vr", "garbage", "empty"):
        with pytest.raises(Exception) as info:
            check_header(bad[name])
        assert tokens.find_in(str(info.value)) == [], name
    [good] = write_files(small_ct(1), tmp_path / "good")
    assert check_header(good).sop_class_uid == CTImageStorage


def test_header_check_does_not_trust_a_forged_length(tmp_path: Path) -> None:
    # An UN element declaring 4 GiB, followed by 100 bytes: a read of the declared
    # length would allocate it all before finding the end of the file.
    forged = b"\x09\x00\x10\x10UN\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + bytes(100)
    path = _file_with_body(tmp_path, "forged", forged)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableObject, match="truncated"):
            check_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024


def test_object_over_max_object_bytes_is_refused_with_out_of_resources(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(
        node_table().replace("[node]", "[node]\nmax_object_bytes = 4096") + ONE_SOURCE
    )
    node = start_node(cfg)
    big = ct_series(1, patient=SyntheticPatient.make(PhiTokens()), rows=64, cols=64)
    small = small_ct(1, seed=4)
    assert store(node.address, big + small, "CT_SCANNER") == [STATUS_OUT_OF_RESOURCES, 0]
    assert node.wait_idle(IDLE)
    rows = audit_objects(cfg)
    assert [r["status"] for r in rows].count("rejected") == 1
    assert "max_object_bytes" in str(next(r for r in rows if r["status"] == "rejected")["reason"])
    assert files_under(cfg.node.spool) == []


# A read-only spool/ fails the same way as "incoming is a file" (mkstemp raises), but
# cannot be made for root, who runs CI: chmod does not stop root.
@pytest.mark.parametrize("obstruction", ["spool removed", "incoming is a file"])
def test_an_unwritable_spool_answers_out_of_resources_and_recovers(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
    obstruction: str,
) -> None:
    """Whatever happens to spool/, a sender gets 0xA700 (never an abort) and no traceback."""
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    incoming = cfg.node.spool / "incoming"
    datasets = small_ct(3, seed=5)
    assoc = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(datasets[0]).Status)]
        wait_for(lambda: not spool_files(cfg), IDLE, "the first object to leave spool/")
        if obstruction == "spool removed":
            shutil.rmtree(cfg.node.spool)  # the node makes it again
        else:
            shutil.rmtree(incoming)
            incoming.write_bytes(b"")
        statuses.append(int(assoc.send_c_store(datasets[1]).Status))
        if incoming.is_file():  # clear the obstruction: the next object goes through
            incoming.unlink()
            incoming.mkdir(mode=0o700)
        statuses.append(int(assoc.send_c_store(datasets[2]).Status))
        assert assoc.is_established
    finally:
        assoc.release()
    refused = obstruction != "spool removed"
    assert statuses == [0, STATUS_OUT_OF_RESOURCES if refused else 0, 0]
    assert node.wait_idle(IDLE)
    assert stat.S_IMODE(cfg.node.spool.stat().st_mode) == 0o700
    rows = audit_objects(cfg)
    assert sorted(str(r["status"]) for r in rows) == ["rejected"] * refused + ["stored"] * (
        3 - refused
    )
    for row in rows:
        if row["status"] == "rejected":
            assert str(row["reason"]).startswith("refused with 0xA700: cannot write to spool (")
    stored = [ds for ds, status in zip(datasets, statuses, strict=True) if status == 0]
    assert set(output_sops(cfg)) == expected_output(cfg, "research", stored)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_spool_budget_and_object_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "q", max_bytes=1000, max_object_bytes=600)
    spool.prepare()
    owner = object()
    first = spool.open_incoming(owner)
    first.write(b"x" * 500)
    second = spool.open_incoming(owner)
    second.write(b"y" * 400)
    second.write(b"y" * 200)  # would take the spool to 1100 bytes
    assert first.failure is None
    assert second.failure is not None and "spool full" in second.failure
    third = spool.open_incoming(owner)
    third.write(b"z" * 700)
    assert third.failure is not None and "max_object_bytes" in third.failure
    assert spool.used_bytes == 500  # failed files gave their bytes back
    assert spool.discard_owner(owner) == 3
    assert spool.used_bytes == 0
    assert files_under(spool.incoming_dir) == []


# --------------------------------------------------------------------------------------------
# Quarantine, recovery, crash


def test_quarantined_object_moves_to_quarantine_with_reason(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(
        node_table()
        + """
[[sources]]
ae_title = "US_CART"
profile = "us"

[profiles.us]
burned_in_annotation = "quarantine"
"""
    )
    node = start_node(cfg)
    us = us_multiframe(SyntheticPatient.make(PhiTokens()), burned_in="YES")
    assert store(node.address, [us], "US_CART") == [0]  # acknowledged: it is durable
    assert node.wait_idle(IDLE)
    [row] = audit_objects(cfg)
    assert row["status"] == "quarantined" and "burned" in str(row["reason"]).lower()
    held = Path(str(row["quarantine_path"]))
    assert held.is_file() and held.parent == cfg.node.quarantine
    assert dcmread(held).SOPInstanceUID == us.SOPInstanceUID  # the original, kept aside
    assert json.loads(held.with_suffix(".json").read_text())["reason"] == row["reason"]
    assert output_sops(cfg) == [] and spool_files(cfg) == []


def test_start_processes_what_a_crash_left_in_spool_before_serving(
    write_config: Callable[[str], Config], tmp_path: Path
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    datasets = small_ct(4)
    spool = Spool(cfg.node.spool, cfg.node.quarantine, max_bytes=10**9, max_object_bytes=10**8)
    spool.prepare()
    for path in write_files(datasets, tmp_path / "in"):
        publish_in_spool(spool, path)
    # Debris of a crash: a half-received file, a temp sidecar, a sidecar whose object
    # was never published. None of them was acknowledged.
    (spool.incoming_dir / "rx-half.part").write_bytes(b"partial")
    (cfg.node.spool / ".tmp-abc.part").write_bytes(b"{}")
    (cfg.node.spool / "00000000000000000001-orphan.json").write_text("{}")

    node = Node(cfg, port=0)
    node.start()
    try:
        # start() returns only once the spool is processed: nothing to wait for.
        assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", datasets)
        assert spool_files(cfg) == []
        rows = audit_objects(cfg)
        assert [r["association_id"] for r in rows] == ["before-the-crash"] * 4
        assert echo(node.address, "CT_SCANNER") == 0
    finally:
        assert node.stop(timeout=30)


def test_stop_drains_the_spool(write_config: Callable[[str], Config], tmp_path: Path) -> None:
    cfg = write_config(node_table(workers=1) + ONE_SOURCE)
    node = Node(cfg, port=0)
    node.start()
    datasets = small_ct(20)
    assert store(node.address, datasets, "CT_SCANNER") == [0] * 20
    assert node.stop(timeout=IDLE)  # no wait_idle: stop itself must drain
    assert spool_files(cfg) == []
    assert len(audit_objects(cfg, status="stored")) == 20
    assert set(output_sops(cfg)) == expected_output(cfg, "research", datasets)


def test_stop_lets_open_associations_finish_but_accepts_no_new_one(
    write_config: Callable[[str], Config], tmp_path: Path
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = Node(cfg, port=0)
    node.start()
    address = node.address
    datasets = small_ct(6)
    assoc = associate(address, "CT_SCANNER", [CTImageStorage])
    assert int(assoc.send_c_store(datasets[0]).Status) == 0
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(node.stop(timeout=IDLE)))
    stopper.start()
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == -1, IDLE, "the node to refuse associations")
        # The association opened before the stop is still served.
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets[1:]] == [0] * 5
        assert stopper.is_alive()  # waiting for this association
    finally:
        assoc.release()
    stopper.join(IDLE)
    assert result == [True]
    assert set(output_sops(cfg)) == expected_output(cfg, "research", datasets)
    assert spool_files(cfg) == []


def test_fsync_durability_stores_the_same(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table().replace("[node]", '[node]\ndurability = "fsync"') + ONE_SOURCE)
    node = start_node(cfg)
    datasets = small_ct(3)
    assert store(node.address, datasets, "CT_SCANNER") == [0] * 3
    assert node.wait_idle(IDLE)
    assert set(output_sops(cfg)) == expected_output(cfg, "research", datasets)
    assert spool_files(cfg) == []


def test_serve_on_a_taken_port_is_one_error_line(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    running = start_node(cfg)
    config = tmp_path / "second.toml"
    config.write_text(
        node_table(port=running.address[1]).replace('"var"', '"var2"') + ONE_SOURCE,
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: node.port: cannot listen on 127.0.0.1:")
    assert "Traceback" not in result.output
    assert echo(running.address, "CT_SCANNER") == 0


@pytest.mark.slow
def test_kill_9_after_acknowledgement_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "deid-node.toml"
    config.write_text(node_table(port=port, workers=1) + ONE_SOURCE, encoding="utf-8")
    cfg = load_config(config)
    address = ("127.0.0.1", port)
    log = tmp_path / "node.log"
    proc = serve(config, log)
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == 0, 30, "the node to answer C-ECHO")
        # Objects full of identifiers, slower to de-identify than to receive, on three
        # associations at once for one worker: a backlog waits in spool/ at the kill.
        template = phi_everywhere(PhiTokens())
        batches = [[with_new_sop_uid(template) for _ in range(15)] for _ in range(3)]
        assocs = [associate(address, "CT_SCANNER", [CTImageStorage]) for _ in batches]
        acked: list[list[Dataset]] = [[] for _ in batches]

        def send(i: int) -> None:
            acked[i].extend(ds for ds in batches[i] if assocs[i].send_c_store(ds).Status == 0)

        senders = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
        for t in senders:
            t.start()
        for t in senders:
            t.join(IDLE)
        left = len([p for p in spool_files(cfg) if p.suffix == ".dcm"])
        proc.kill()  # kill -9, right after the last acknowledgement
        proc.wait(10)
        # Its workers notice and exit; nothing of the old node may write on.
        wait_for(lambda: not group_alive(proc.pid), 30, "the old node's workers to exit")
    finally:
        kill_group(proc)
    acknowledged = [ds for batch in acked for ds in batch]
    assert len(acknowledged) == 45

    proc = serve(config, log)
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == 0, 60, "the restarted node")
        # Recovery ran before the AE served: the spool is already drained.
        assert [p for p in spool_files(cfg) if p.suffix == ".dcm"] == []
        os.killpg(proc.pid, signal.SIGTERM)  # as systemd does: the whole group
        assert proc.wait(30) == 0
        wait_for(lambda: not group_alive(proc.pid), 30, "the workers to exit")
    finally:
        kill_group(proc)

    expected = expected_output(cfg, "research", acknowledged)
    written = output_sops(cfg, "research")
    assert sorted(written) == sorted(expected), f"{left} object(s) were in spool at the kill"
    assert len(written) == len(set(written))  # exactly once
    assert spool_files(cfg) == []
    rows = audit_objects(cfg)
    audited = {r["pseudo_sop_uid"] for r in rows if r["status"] in ("stored", "duplicate")}
    assert audited == expected
    assert "Traceback" not in log.read_text()


# --------------------------------------------------------------------------------------------
# dcmtk as the peer


@pytest.mark.dcmtk
def test_dcmtk_storescu_and_echoscu(
    dcmtk: None,
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    node = start_node(cfg)
    host, port = node.address
    datasets = small_ct(10, seed=11)
    files = write_files(datasets, tmp_path / "send")

    echoed = run_dcmtk(ECHOSCU, "-aet", "CT_SCANNER", "-aec", NODE_AE, host, str(port))
    assert echoed.returncode == 0, echoed.stderr
    sent = run_dcmtk(
        STORESCU, "-aet", "CT_SCANNER", "-aec", NODE_AE, host, str(port), *map(str, files)
    )
    assert sent.returncode == 0, sent.stderr
    refused = run_dcmtk(ECHOSCU, "-aet", "STRANGER", "-aec", NODE_AE, host, str(port))
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    assert node.wait_idle(IDLE)

    assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", datasets)
    assert Counter(r["status"] for r in audit_objects(cfg)) == {"stored": 10}
    outcomes = Counter((a["calling_ae"], a["outcome"]) for a in audit_associations(cfg))
    assert outcomes[("STRANGER", "rejected")] == 1
    assert outcomes[("CT_SCANNER", "released")] == 2


def test_a_port_probe_does_not_hold_the_stop(
    write_config: Callable[[str], Config], caplog: pytest.LogCaptureFixture
) -> None:
    """A connection that never asked for an association (a monitoring probe) holds
    nothing acknowledged: the stop does not wait for pynetdicom's ACSE timeout on it."""
    import socket

    caplog.set_level(logging.INFO)
    cfg = write_config(node_table() + ONE_SOURCE)
    node = Node(cfg, port=0, drain_timeout=1.0)  # acse_timeout is 10 s in node_table
    node.start()
    try:
        with socket.create_connection(node.address, timeout=5):
            pass  # connect and hang up, as a probe does
        assert store(node.address, small_ct(1, seed=40), "CT_SCANNER") == [0]
        assert node.wait_idle(IDLE)
    finally:
        assert node.stop(timeout=IDLE)
    warnings = [r.getMessage() for r in caplog.records if "aborting associations" in r.getMessage()]
    assert not warnings
