"""The receiving processes: what they import, the limits they share, signals, a crash."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from deid_node.config import Config
from deid_node.intake.capacity import Budget, Slots, shared_budget_cells, shared_slot_counts
from deid_node.intake.spool import Spool
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens
from tests.support.datasets import small_ct
from tests.support.node import (
    IDLE,
    ONE_SOURCE,
    audit_associations,
    audit_objects,
    expected_output,
    node_table,
    output_sops,
    publish_in_spool,
)
from tests.support.scu import associate, echo, store
from tests.support.waiting import wait_for

IMPORT_CHECK = """
import pickle, sys
import deid_node.intake.boot  # the entry: imports no pydicom before the prologue has run
assert "pydicom" not in sys.modules and "pynetdicom" not in sys.modules
from deid_node.child_process import keep_pixels_out
keep_pixels_out()  # as boot.run's prologue (start_child) does first
import deid_node.intake.process
pickle.loads(sys.stdin.buffer.read())  # the Config, as the process receives it
loaded = [m for m, mod in sys.modules.items() if mod is not None]
pixels = ("numpy", "PIL", "gdcm", "pylibjpeg", "jpeg_ls", "openjpeg", "tesserocr")
packages = [m for m in loaded if m.startswith("deid_node.") and hasattr(sys.modules[m], "__path__")]
print(" ".join(sorted(m for m in loaded if m.startswith("deid_node") or m in pixels)))
print(" ".join(sorted(packages)))
"""
# The receiving process's packages; top-level modules (config, clock, errors, ...) too.
RECEIVING_PACKAGES = ("deid_node.intake", "deid_node.net", "deid_node.dicom", "deid_node.config")


def test_the_receiving_process_imports_only_intake_net_and_dicom(
    write_config: Callable[[str], Config],
) -> None:
    cfg = write_config(node_table() + ONE_SOURCE)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        input=pickle.dumps(cfg),
        capture_output=True,
        check=True,
    )
    lines = done.stdout.decode().splitlines()
    modules, packages = lines[0].split(), lines[1].split()
    assert "deid_node.intake.process" in modules
    assert "deid_node.net.pynetdicom_compat" in modules
    for library in ("numpy", "PIL", "gdcm", "pylibjpeg", "jpeg_ls", "openjpeg", "tesserocr"):
        assert library not in modules  # pydicom runs without them here
    outside = [
        m
        for m in modules
        if m.startswith("deid_node.")
        and not m.startswith(tuple(p + "." for p in RECEIVING_PACKAGES))
        and (m in packages or m.count(".") > 1)
        and m not in RECEIVING_PACKAGES
    ]
    assert outside == []  # no audit/, deid/, runtime/, forward/, pixels/, cli/, ...


def _take_two(counts: object, cells: object, results: object) -> None:
    slots = Slots(2, counts, 1)  # type: ignore[arg-type]
    budget = Budget(100, cells, 1)  # type: ignore[arg-type]
    results.put((slots.take(0.0), slots.take(0.0), budget.reserve(60)))  # type: ignore[attr-defined]


def test_slots_and_spool_budget_hold_across_processes() -> None:
    counts = shared_slot_counts(2)
    cells = shared_budget_cells(2)
    ours = Slots(2, counts, 0)
    budget = Budget(100, cells, 0)
    assert ours.take(0.0)
    assert budget.reserve(50)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    other = ctx.Process(target=_take_two, args=(counts, cells, results))
    other.start()
    other.join(30)
    # The other process got the one slot left, not two; the budget had 50 bytes, not 60.
    assert results.get(timeout=5) == (True, False, False)
    assert not ours.take(0.0)
    ours.free()
    assert ours.take(0.0)
    budget.commit(50)  # published: no longer in flight in process 0
    budget.clear(0)  # process 0 died: its in-flight bytes (none now) come back
    assert budget.used == 50
    assert budget.reserve(10)
    budget.clear(0)
    assert budget.used == 50
    budget.release_published(50)
    assert budget.used == 0


def _receivers() -> list[BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("deid-receiver-")]


def test_one_receiving_process_works(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table().replace("workers", "receivers = 1\nworkers") + ONE_SOURCE)
    assert cfg.node.receiver_count == 1
    node = start_node(cfg)
    assert len(_receivers()) == 1
    assert store(node.address, small_ct(3, tokens=PhiTokens()), "CT_SCANNER") == [0] * 3
    assert node.wait_idle(IDLE)


@pytest.mark.slow
def test_max_associations_holds_across_receiving_processes(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    table = node_table().replace("max_associations = 8", "max_associations = 2")
    cfg = write_config(table.replace("workers", "receivers = 3\nworkers") + ONE_SOURCE)
    node = start_node(cfg)
    assert len(_receivers()) == 3
    held = [associate(node.address, "CT_SCANNER", [CTImageStorage]) for _ in range(2)]
    assert all(a.is_established for a in held)
    for _ in range(3):  # whichever process accepts it, the limit is the node's
        extra = associate(node.address, "CT_SCANNER", [CTImageStorage])
        assert extra.is_rejected
    held[0].release()
    again = associate(node.address, "CT_SCANNER", [CTImageStorage])
    assert again.is_established
    again.release()
    held[1].release()
    assert node.wait_idle(IDLE)
    rows = audit_associations(cfg)
    assert sum(r["outcome"] == "rejected" for r in rows) == 3
    assert sum(r["outcome"] == "released" for r in rows) == 3


def test_receiving_processes_ignore_sigterm_and_one_that_dies_is_replaced(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(node_table().replace("workers", "receivers = 2\nworkers") + ONE_SOURCE)
    node = start_node(cfg)
    first, second = _receivers()
    os.kill(first.pid or 0, signal.SIGTERM)  # as a signal to the whole process group would
    os.kill(second.pid or 0, signal.SIGKILL)
    second.join(10)
    assert first.is_alive()
    wait_for(
        lambda: len([p for p in _receivers() if p.pid != second.pid]) == 2,
        30,
        "a new receiving process",
    )
    for _ in range(4):
        assert echo(node.address, "CT_SCANNER") == 0
    assert store(node.address, small_ct(2, tokens=PhiTokens()), "CT_SCANNER") == [0] * 2
    assert node.wait_idle(IDLE)


def test_what_a_dead_receiving_process_acknowledged_but_never_reported_is_processed(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> None:
    cfg = write_config(node_table().replace("workers", "receivers = 2\nworkers") + ONE_SOURCE)
    node = start_node(cfg)
    [ds] = small_ct(1, seed=5, tokens=PhiTokens())
    sent = tmp_path / "one.dcm"
    ds.save_as(sent, enforce_file_format=True)
    # As receiving process 1 would have left it, had it died between publishing an object
    # (and acknowledging it) and reporting it.
    spool = Spool(
        cfg.node.spool, cfg.node.quarantine, max_bytes=10**9, max_object_bytes=10**8, tag="r1-"
    )
    publish_in_spool(spool, sent)
    cut_off = spool.open_incoming(owner=None)  # and one it was still receiving
    cut_off.write(b"\0" * 1000)
    cut_off.flush()
    [victim] = [p for p in _receivers() if p.name == "deid-receiver-1"]
    os.kill(victim.pid or 0, signal.SIGKILL)
    wait_for(lambda: len(output_sops(cfg, "research")) == 1, IDLE, "the orphan's output")
    assert node.wait_idle(IDLE)
    assert set(output_sops(cfg, "research")) == expected_output(cfg, "research", [ds])
    assert [r["status"] for r in audit_objects(cfg)] == ["stored"]
    assert not cut_off.path.exists()  # never acknowledged: gone, and its bytes freed
    assert node.spool.used_bytes == 0
