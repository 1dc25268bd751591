"""Atomic output writes: a re-sent object is a duplicate exactly once, even at the same moment."""

from __future__ import annotations

import threading
from pathlib import Path

from deid_node.durable import write_atomic


def test_write_atomic_says_whether_the_file_existed(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.dcm"
    assert write_atomic(target, [b"first"]) is False
    assert write_atomic(target, [b"second"]) is True
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["b.dcm"]  # no temp file left


def test_of_simultaneous_writers_exactly_one_finds_the_file_new(tmp_path: Path) -> None:
    target = tmp_path / "same.dcm"
    writers = 8
    barrier = threading.Barrier(writers)
    existed: list[bool] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        barrier.wait()
        found = write_atomic(target, [b"x" * 100_000, str(i).encode()])
        with lock:
            existed.append(found)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(existed) == [False] + [True] * (writers - 1)
    assert [p.name for p in tmp_path.iterdir()] == ["same.dcm"]
