"""Quarantine list / retry / purge on a real audit database and real files."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deid_node.audit.db import open_audit
from deid_node.audit.records import Filters, ObjectRecord
from deid_node.config import load_config
from deid_node.ops.quarantine import QuarantineError, list_quarantine, purge, retry
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, us_multiframe, write_files

KEY = b"\x33" * 32


def _config(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "deid.toml"
    path.write_text(
        f'[node]\ndata_dir = "var"\n[profiles.us]\nburned_in_annotation = "{policy}"\n',
        encoding="utf-8",
    )
    return path


def _quarantine_one(tmp_path: Path, days_old: float = 0) -> tuple[Path, int]:
    """Put a burned-in ultrasound object in quarantine, as the node would."""
    cfg = load_config(_config(tmp_path, "quarantine"))
    tokens = PhiTokens()
    [src] = write_files([us_multiframe(SyntheticPatient.make(tokens), burned_in="YES")], tmp_path)
    qdir = cfg.node.quarantine
    qdir.mkdir(parents=True, exist_ok=True)
    held = qdir / f"{src.stem}-{days_old}.dcm"
    shutil.copy(src, held)
    with open_audit(cfg.database_url) as db:
        [object_id] = db.record_objects(
            [
                (
                    ObjectRecord(
                        received_at=datetime.now(UTC) - timedelta(days=days_old),
                        processed_at=datetime.now(UTC),
                        association_id="a1",
                        calling_ae="US_CART",
                        called_ae="DEID_NODE",
                        peer_address="127.0.0.1",
                        profile="us",
                        sop_class_uid=None,
                        transfer_syntax_uid=None,
                        size_bytes=held.stat().st_size,
                        status="quarantined",
                        reason="burned-in annotation: BurnedInAnnotation is YES",
                        pseudo_patient_id=None,
                        pseudo_study_uid=None,
                        pseudo_series_uid=None,
                        pseudo_sop_uid=None,
                        output_path=None,
                        quarantine_path=str(held),
                    ),
                    None,
                )
            ]
        )
    return held, object_id


def test_retry_after_profile_fix(tmp_path: Path) -> None:
    held, object_id = _quarantine_one(tmp_path)
    cfg = load_config(_config(tmp_path, "quarantine"))
    with open_audit(cfg.database_url) as db:
        assert [e.id for e in list_quarantine(db)] == [object_id]
        [(_, again)] = retry(cfg, db, KEY, [object_id])
        assert again.status.value == "quarantined" and held.exists()  # policy unchanged
    fixed = load_config(_config(tmp_path, "allow"))
    with open_audit(fixed.database_url) as db:
        [(_, outcome)] = retry(fixed, db, KEY, [object_id])
        assert outcome.status.value == "stored"
        row = db.get_object(object_id)
        assert row is not None and row["status"] == "stored"
        assert "retried from quarantine" in str(row["reason"])
        assert row["quarantine_path"] is None and Path(str(row["output_path"])).exists()
        assert not held.exists() and list_quarantine(db) == []
        assert [r["id"] for r in db.iter_objects(Filters(status="stored"))] == [object_id]


def test_purge_by_id_and_age(tmp_path: Path) -> None:
    old, old_id = _quarantine_one(tmp_path, days_old=40)
    new, new_id = _quarantine_one(tmp_path, days_old=0)
    cfg = load_config(_config(tmp_path, "quarantine"))
    with open_audit(cfg.database_url) as db:
        with pytest.raises(QuarantineError, match="say which"):
            purge(db)
        gone = purge(db, older_than_days=30)
        assert [e.id for e in gone] == [old_id] and not old.exists() and new.exists()
        assert "purged" in str((db.get_object(old_id) or {})["reason"])
        with pytest.raises(QuarantineError, match=f"no quarantined object with id {old_id}"):
            purge(db, [old_id])
        purge(db, [new_id])
        assert not new.exists() and list_quarantine(db) == []
