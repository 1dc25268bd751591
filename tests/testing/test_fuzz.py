"""The fuzzer in deid_node/testing/fuzz/: generator, raw sender, a run of scripts/fuzz.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from deid_node.testing.fuzz.draft import STORAGE_CLASSES, TRANSFER_SYNTAXES, Draft
from deid_node.testing.fuzz.encoding import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARSET,
    element,
    kw,
    split_elements,
    text,
    uid_value,
)
from deid_node.testing.fuzz.generator import KINDS, Generator, object_uid
from deid_node.testing.fuzz.node import deid_node_command
from deid_node.testing.fuzz.phi import PhiScanner, decoded_text
from deid_node.testing.fuzz.sender import Sender, echo, install_raw_sender
from deid_node.testing.fuzz.target import Target
from tests.support.paths import REPO

FUZZ = REPO / "scripts" / "fuzz.py"


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator(seed=5, count=len(KINDS) * 12)


def test_generation_is_deterministic_and_cycles_every_kind(gen: Generator) -> None:
    again = Generator(seed=5, count=gen.count)
    objects = [gen.build(oid) for oid in range(gen.count)]
    assert [o.body for o in objects] == [again.build(o.oid).body for o in objects]
    assert Counter(o.kind for o in objects) == {k: 12 for k in KINDS}
    other_seed = Generator(seed=6, count=gen.count)
    assert any(o.body != other_seed.build(o.oid).body for o in objects)


def test_every_mutation_changes_the_valid_encoding(gen: Generator) -> None:
    for oid in range(gen.count):
        obj = gen.build(oid)
        base = next(b for b in gen.pool if b.name == obj.base)
        explicit = obj.transfer_syntax == ExplicitVRLittleEndian
        valid = Draft(base, obj.sop_instance, explicit=explicit).body()
        if obj.kind == "sop_class_mismatch" and obj.variant.startswith("context:"):
            assert obj.sop_class != base.sop_class  # same bytes, wrong context
        else:
            assert obj.body != valid, (obj.kind, obj.variant)


def test_deep_nesting_reaches_depth_200(gen: Generator) -> None:
    depths = [
        int(gen.build(oid).variant.split(":")[1])
        for oid in range(gen.count)
        if gen.kind_of(oid) == "deep_nesting"
    ]
    assert depths and min(depths) >= 200


def test_split_elements_round_trips_every_base(gen: Generator) -> None:
    for base in gen.pool:
        for explicit, elems in ((True, base.explicit), (False, base.implicit)):
            body = b"".join(b for _, b in elems)
            assert split_elements(body, explicit) == list(elems)
            tags = [t for t, _ in elems]
            assert tags == sorted(tags)


def test_phi_scanner_finds_tokens_dates_and_uids(gen: Generator) -> None:
    uid = object_uid(5, 3)
    scanner = PhiScanner(gen.tokens, {uid})
    base = gen.pool[0]
    date = next(v for v in gen.tokens.values("date") if len(v) == 8)
    blob = b"x" + uid.encode() + b"\0 " + base.patient_id.encode("utf-16-le") + b" " + date.encode()
    assert scanner.find(blob) == {uid, base.patient_id, date}
    # A date inside a longer digit run (a pseudonymous 2.25 UID) is not a hit.
    assert scanner.find(b"2.25.1" + date.encode() + b"7") == set()
    assert scanner.find(uid.encode() + b"1") == set()  # another object's UID prefix


def test_decoded_scan_finds_an_identifier_split_by_iso2022_escapes(
    gen: Generator, tmp_path: Path
) -> None:
    pid = gen.pool[0].patient_id.encode()
    split = pid[:4] + b"\x1b$B\x1b(B" + pid[4:]  # decodes to the ID, bytes do not hold it
    body = b"".join(
        element(tag, vr, value, explicit=True)
        for tag, vr, value in [
            (SPECIFIC_CHARSET, "CS", text("\\ISO 2022 IR 87")),
            (SOP_CLASS_UID, "UI", uid_value(CTImageStorage)),
            (SOP_INSTANCE_UID, "UI", uid_value("2.25.1")),
            (kw("Manufacturer"), "LO", text(b"ACME " + split)),
        ]
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID("2.25.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta)
    path = tmp_path / "split.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + body)
    scanner = PhiScanner(gen.tokens, set())
    assert scanner.find(path.read_bytes()) == set()
    decoded = decoded_text(path)
    assert decoded is not None and scanner.find(decoded) == {pid.decode()}


@pytest.mark.slow
def test_raw_sender_puts_the_exact_bytes_on_the_wire(
    gen: Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare pynetdicom SCP receives every generated body byte for byte."""
    from pynetdicom import AE, _config, evt

    # A node started earlier in this process switched receipt to files (process-wide).
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)

    received: dict[str, tuple[bytes, str]] = {}
    lock = threading.Lock()

    def handle_store(event: Any) -> int:
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = (
                event.request.DataSet.getvalue(),
                str(event.context.abstract_syntax),
            )
        return 0xC000

    scp = AE(ae_title="STUB")
    for sop_class in STORAGE_CLASSES:
        scp.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    scp.add_supported_context("1.2.840.10008.1.1")
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    assert server is not None
    try:
        install_raw_sender()
        port = server.server_address[1]
        target = Target("127.0.0.1", port, "STUB", "FUZZER")
        schedule = list(range(gen.count))
        sender = Sender(
            gen,
            target,
            schedule,
            associations=2,
            per_association=40,
            request_timeout=10,
            deadline=time.monotonic() + 60,
            workdir=tmp_path,
            progress=False,
        )
        sender.run()
        assert echo("127.0.0.1", port, "STUB", "FUZZER")
    finally:
        server.shutdown()
    assert {r.status for r in sender.results.values()} == {"0xC000"}
    for oid in schedule:
        obj = gen.build(oid)
        assert received[obj.sop_instance] == (obj.body, obj.sop_class), (obj.kind, obj.variant)
    assert sender.associations_opened >= 2


class _LateReactorSender(Sender):
    """A Sender whose associations replay, every time, the interleaving a loaded machine
    produces now and then: the requestor's reactor thread passes its pause checkpoint just
    before send_c_store() pauses it (so the sender believes it paused), and is scheduled
    again only once the C-STORE-RSP is queued, ahead of the sender's waiting thread."""

    def _associate(self, ae: Any) -> Any | None:
        assoc = super()._associate(ae)
        if assoc is not None:
            _replay_late_reactor(assoc)
        return assoc


def _replay_late_reactor(assoc: Any) -> None:
    checkpoint, messages, dimse = assoc._reactor_checkpoint, assoc.dimse.msg_queue, assoc.dimse
    held = threading.Event()  # the reactor is past its checkpoint, not yet at its poll
    polled = threading.Event()  # the reactor polled while a response was queued
    once = threading.Event()

    class LateCheckpoint:
        def wait(self, timeout: float | None = None) -> bool:
            flag = checkpoint.wait(timeout)
            if threading.current_thread() is assoc and not once.is_set():
                held.set()
                end = time.monotonic() + 5  # descheduled until the response is queued
                while messages.empty() and time.monotonic() < end:
                    time.sleep(0.001)
                once.set()
            return flag

        def clear(self) -> None:
            if not once.is_set():  # send_c_store() pauses the reactor just too late
                held.wait(5)
            checkpoint.clear()

        def __getattr__(self, name: str) -> Any:
            return getattr(checkpoint, name)

    blocking_get = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if block:  # the sender's thread wakes after the reactor polled
            polled.wait(5)
        queued = not messages.empty()
        got = blocking_get(block)
        if not block and queued:
            polled.set()
        return got

    assoc._reactor_checkpoint = LateCheckpoint()
    dimse.get_msg = get_msg


def test_a_response_is_never_taken_by_the_senders_reactor(
    gen: Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's requestor reactor may poll the DIMSE queue after send_c_store() paused
    it: the fuzzer's associations must leave every response to the sender (else the
    object counts as no-response and every_object_accounted fails one run in several)."""
    from pynetdicom import AE, _config, evt

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    scp = AE(ae_title="STUB")
    for sop_class in STORAGE_CLASSES:
        scp.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xC210)]
    )
    assert server is not None
    try:
        install_raw_sender()
        target = Target("127.0.0.1", server.server_address[1], "STUB", "FUZZER")
        sender = _LateReactorSender(
            gen,
            target,
            [0, 1],
            associations=1,
            per_association=1,
            request_timeout=3,
            deadline=time.monotonic() + 60,
            workdir=tmp_path,
            progress=False,
        )
        sender.run()
    finally:
        server.shutdown()
    assert [r.status for r in sender.results.values()] == ["0xC210", "0xC210"]


def _serve_unavailable() -> str | None:
    """Why `deid-node serve` cannot run here, or None if it can."""
    cmd = [*deid_node_command(), "serve", "--help"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`deid-node serve --help` failed: {exc}"
    if proc.returncode != 0:
        return "`deid-node serve` is not available (serve --help exited non-zero)"
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fuzz_300_objects_against_a_real_node(tmp_path: Path) -> None:
    reason = _serve_unavailable()
    if reason:
        pytest.skip(reason)
    report_path = tmp_path / "json"
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "--count",
            "300",
            "--associations",
            "2",
            "--max-seconds",
            "150",
            "--request-timeout",
            "15",
            "--drain-stall",
            "30",
            "--stop-grace",
            "15",
            "--quiet",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert report_path.exists(), proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    summary = proc.stdout + proc.stderr
    assert report["final"]["echo"], summary
    assert report["final"]["store"]["status"] == "0x0000", summary
    assert report["exceptions"]["tracebacks"] == 0, summary
    assert report["exceptions"]["status_0xC211"] == 0, summary
    assert report["output"]["leaked_files"] == [], summary
    assert report["output"]["from_malformed"] == 0, summary
    failed = [k for k, v in report["invariants"].items() if not v["ok"]]
    assert proc.returncode == 0 and not failed, summary
