"""One object, three ways into the audit: the node, an offline run, a quarantine retry.

Each builds its rows with deid_node.ops.records, so they agree on everything the outcome
decides; they differ only in ids, times and where the object came from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters
from deid_node.config import Config, load_config
from deid_node.deid.secret import load_secret
from deid_node.ops.linkage import OfflineLinkage
from deid_node.ops.offline import deidentify_paths
from deid_node.ops.quarantine import retry
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series, write_files
from tests.support.node import node_table
from tests.support.scu import associate

IDLE = 60.0
SECRET = "5a" * 32
# Where an object came from and when: each way records its own.
ORIGIN_COLUMNS = frozenset(
    {
        "id",
        "received_at",
        "processed_at",
        "association_id",
        "calling_ae",
        "called_ae",
        "peer_address",
        "origin",
        "receipt_id",
        "node",
    }
)


def _config(folder: Path, policy: str) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "deid-node.toml"
    path.write_text(
        node_table(workers=1)
        + '[[sources]]\nae_title = "CT_SCANNER"\nprofile = "research"\n'
        + "[profiles.research]\nrecord_linkage = true\n"
        + f'burned_in_annotation = "{policy}"\n',
        encoding="utf-8",
    )
    return load_config(path)


def _received(cfg: Config, ds: Dataset) -> None:
    """Send `ds` to a node in the transfer syntax of its file, as an offline run reads it."""
    with Node(cfg, port=0) as node:
        syntax = [str(ds.file_meta.TransferSyntaxUID)]
        assoc = associate(node.address, "CT_SCANNER", [ds.SOPClassUID], transfer_syntaxes=syntax)
        assert assoc.is_established
        try:
            assert assoc.send_c_store(ds).Status == 0
        finally:
            assoc.release()
        assert node.wait_idle(IDLE)


def _rows(cfg: Config, output: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The one object row (its output path made relative) and its linkage row."""
    with open_audit(cfg.database_url) as db:
        [row] = db.iter_objects(Filters())
        [link] = db.iter_linkage(Filters())
    assert row["output_path"] is not None
    row = {**row, "output_path": Path(str(row["output_path"])).relative_to(output).as_posix()}
    return row, {k: v for k, v in link.items() if k not in ORIGIN_COLUMNS | {"object_id"}}


def test_node_offline_run_and_quarantine_retry_record_an_object_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEID_NODE_SECRET", SECRET)
    patient = SyntheticPatient.make(PhiTokens(), seed=23)
    [ds] = ct_series(1, patient=patient, rows=16, cols=16, seed=23)
    ds.BurnedInAnnotation = "YES"  # quarantined under "quarantine", stored under "allow"
    [source] = write_files([ds], tmp_path / "in")

    node_cfg = _config(tmp_path / "node", "allow")
    _received(node_cfg, ds)

    offline_cfg = _config(tmp_path / "offline", "allow")
    offline_out = tmp_path / "offline" / "out"
    key = load_secret(offline_cfg.node.secret_path)
    with OfflineLinkage(open_audit(offline_cfg.database_url), "research") as linkage:
        summary = deidentify_paths(
            [source], offline_cfg.profiles["research"], key, offline_out, record=linkage.add
        )
    assert summary.failed == 0

    held_cfg = _config(tmp_path / "retry", "quarantine")
    _received(held_cfg, ds)
    fixed_cfg = _config(tmp_path / "retry", "allow")
    with open_audit(fixed_cfg.database_url) as db:
        [(entry, outcome)] = retry(fixed_cfg, db, key)
    assert outcome.status.value == "stored"

    node_row, node_link = _rows(node_cfg, node_cfg.node.output)
    offline_row, offline_link = _rows(offline_cfg, offline_out)
    retry_row, retry_link = _rows(fixed_cfg, fixed_cfg.node.output)
    assert retry_row["reason"] == f"retried from quarantine ({entry.reason})"
    assert (node_row["origin"], offline_row["origin"]) == ("node", "offline")

    def decided(row: dict[str, object], *also: str) -> dict[str, object]:
        return {k: v for k, v in row.items() if k not in ORIGIN_COLUMNS | set(also)}

    assert node_row["status"] == "stored" and node_row["pseudo_sop_uid"]
    # What was received: the node counts the bytes it was sent, an offline run the file's.
    assert decided(offline_row, "size_bytes") == decided(node_row, "size_bytes")
    # The retry keeps what the node received, and notes where the object came from.
    assert decided(retry_row, "reason") == decided(node_row, "reason")
    assert node_link == offline_link == retry_link
