"""Library log records reach our logs as one line: no traceback, no dump, no value."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pynetdicom  # noqa: F401 - its loggers exist once it is imported
import pytest
from pynetdicom.dimse_primitives import C_STORE

from deid_node.config import Config
from deid_node.logs import NoValues, protect, quiet_libraries
from deid_node.runtime.node import Node
from deid_node.testing.loopback import deid_node_command, free_port
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from tests.support.datasets import small_ct
from tests.support.node import IDLE, ONE_SOURCE, audit_objects, node_table
from tests.support.scu import echo, store
from tests.support.waiting import wait_for


def test_pynetdicom_records_lose_tracebacks_and_extra_lines() -> None:
    quiet_libraries()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        log = logging.getLogger("pynetdicom.dul")
        try:
            raise ConnectionError("peer went away")
        except ConnectionError:
            log.exception("Connection closed before the entire PDU was received")
        log.error("Dataset dump:\n(0010,0010) PatientName SECRET^NAME")
        logging.getLogger("pynetdicom.assoc").debug("Affected SOP Instance UID 1.2.3")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["Connection closed before the entire PDU was received", "Dataset dump:"]


ODD_UIDS = ("1.2.826.0.1.3680043.10.543.03.77", "1.2.826.0.1.3680043.10.543.7a")  # 03, 7a


def captured(emit: Callable[[], None]) -> list[str]:
    """The lines a protected handler on the root logger writes while `emit` runs."""
    stream = io.StringIO()
    handler = protect(logging.StreamHandler(stream))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        emit()
    finally:
        root.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_library_never_gets_a_value_through_a_protected_handler() -> None:
    quiet_libraries()

    def emit() -> None:
        for uid in ODD_UIDS:  # pynetdicom's own warning, as it decodes a C-STORE-RQ
            C_STORE().AffectedSOPInstanceUID = uid
        other = logging.getLogger("somelib.parser")  # no one listed this library
        other.warning('bad name "DOE^JOHN" in element, id %s', "'PID-4711'")
        other.error("cannot read 1.2.3.4.5.6 or 2.25.1234567 (v2.0.1)\nrest of a dump")

    lines = captured(emit)
    assert lines == [
        "Non-conformant '<withheld>' value '<withheld>'",
        "Non-conformant '<withheld>' value '<withheld>'",
        "bad name '<withheld>' in element, id '<withheld>'",
        "cannot read <withheld> or <withheld> (v2.0.1)",
    ]


def test_our_own_lines_keep_addresses_and_lose_uids() -> None:
    log = logging.getLogger("deid_node.runtime.node")
    lines = captured(
        lambda: log.warning("peer %s sent %s; dcmtk 3.6.7, '%s'", "10.1.2.3", "2.25.99887766", "x")
    )
    assert lines == ["peer 10.1.2.3 sent <withheld>; dcmtk 3.6.7, 'x'"]


def test_the_last_resort_handler_is_protected_too() -> None:
    # Worker processes configure no handler: logging's last resort prints their warnings.
    quiet_libraries()
    assert logging.lastResort is not None
    assert any(isinstance(f, NoValues) for f in logging.lastResort.filters)


def test_non_conformant_uids_sent_to_the_node_never_reach_its_log(tmp_path: Path) -> None:
    """`deid-node serve` as an operator runs it; its stderr is the node's log."""
    port = free_port()
    config = tmp_path / "deid-node.toml"
    config.write_text(node_table(port=port, workers=1) + ONE_SOURCE, encoding="utf-8")
    log = tmp_path / "node.log"
    address = ("127.0.0.1", port)
    patient = SyntheticPatient.make(PhiTokens(), seed=21)
    datasets = ct_series(len(ODD_UIDS), patient=patient, rows=8, cols=8, seed=21)
    for ds, uid in zip(datasets, ODD_UIDS, strict=True):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(lambda: echo(address, "CT_SCANNER") == 0, 60, "the node to answer C-ECHO")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom, on our side, about the same UIDs
            statuses = store(address, datasets, "CT_SCANNER")
        assert len(statuses) == len(ODD_UIDS)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text(encoding="utf-8", errors="replace")
    for uid in ODD_UIDS:
        assert uid not in text
    assert "543.03" not in text and "543.7a" not in text
    assert "Non-conformant '<withheld>' value '<withheld>'" in text  # pynetdicom did speak


def test_an_output_that_cannot_be_written_is_logged_without_its_path(
    write_config: Callable[[str], Config],
    start_node: Callable[..., Node],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the output cannot be written (a full disk, here a file in its place), the log
    names no file: output paths are made of pseudonymous UIDs."""
    caplog.set_level(logging.INFO)
    cfg = write_config(node_table(workers=1) + ONE_SOURCE)
    node = start_node(cfg)
    output, away = cfg.node.output, tmp_path / "output.away"
    output.rename(away)
    output.write_bytes(b"")
    assert store(node.address, small_ct(1, seed=5), "CT_SCANNER") == [0]
    wait_for(lambda: "cannot write output" in caplog.text, IDLE, "the output failure")
    output.unlink()
    away.rename(output)
    assert node.wait_idle(IDLE)
    [row] = audit_objects(cfg)
    assert row["status"] == "stored"
    text = caplog.text
    assert "cannot write output: Not a directory; refusing new objects" in text
    assert str(output) not in text
    for key in ("pseudo_patient_id", "pseudo_study_uid", "pseudo_series_uid", "pseudo_sop_uid"):
        assert str(row[key]) not in text
