"""State the receiving processes share: the spool budget and the association slots.

Created by the supervisor before the receiving processes start (multiprocessing shared
memory with its lock), handed to each one, so ``spool_max_bytes`` and
``max_associations`` hold across all of them. Without a shared cell (one process, the
offline tools, tests of the spool alone) a plain counter under a thread lock does the same.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from typing import Final

# A request at the limit looks for a freed slot this often. The slot of an association in
# another process frees there: no condition variable reaches across, and polling only runs
# at the limit.
SLOT_POLL_SECONDS: Final = 0.02


class Budget:
    """A byte budget: reserve, release, set; shared across processes if given a cell."""

    def __init__(self, limit: int, cell: Synchronized[int] | None = None) -> None:
        """`limit` bytes; `cell` a shared ``Value('q')`` or None for this process only."""
        self.limit = limit
        self._cell = cell
        self._local = 0
        self._lock = threading.Lock() if cell is None else cell.get_lock()

    @property
    def used(self) -> int:
        """Bytes taken."""
        with self._lock:
            return self._get()

    def reserve(self, n: int) -> bool:
        """Take n bytes; False if that would exceed the limit."""
        with self._lock:
            used = self._get()
            if used + n > self.limit:
                return False
            self._set(used + n)
            return True

    def release(self, n: int) -> None:
        """Give back n bytes."""
        with self._lock:
            self._set(max(0, self._get() - n))

    def set(self, n: int) -> None:
        """Say how many bytes are taken (after recovery counted them)."""
        with self._lock:
            self._set(n)

    def _get(self) -> int:
        return self._local if self._cell is None else int(self._cell.value)

    def _set(self, n: int) -> None:
        if self._cell is None:
            self._local = n
        else:
            self._cell.value = n


class Slots:
    """Association slots under one limit, counted per receiving process.

    One count per process (not one total) so that the supervisor can give back the slots
    of a receiving process that died, and each process only ever changes its own count.
    """

    def __init__(self, limit: int, counts: SynchronizedArray[int] | None, index: int) -> None:
        """`counts` a shared ``Array('i', n)`` (None: this process only), ours at `index`."""
        self.limit = limit
        self._counts = counts
        self._index = index
        self._local = 0
        self._lock = threading.Lock() if counts is None else counts.get_lock()

    def _total(self) -> int:
        return self._local if self._counts is None else sum(self._counts[:])

    def _add(self, n: int) -> None:
        if self._counts is None:
            self._local = max(0, self._local + n)
        else:
            self._counts[self._index] = max(0, self._counts[self._index] + n)

    def take(self, wait: float) -> bool:
        """Take a slot, waiting up to `wait` seconds for one to free; False if none did."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if self._total() < self.limit:
                    self._add(1)
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(SLOT_POLL_SECONDS, left))

    def free(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._add(-1)


def shared_budget_cell() -> Synchronized[int]:
    """A shared byte count for :class:`Budget` (before the processes start)."""
    return multiprocessing.get_context("spawn").Value("q", 0)


def shared_slot_counts(processes: int) -> SynchronizedArray[int]:
    """Shared per-process association counts for :class:`Slots`."""
    return multiprocessing.get_context("spawn").Array("i", processes)


def clear_slots(counts: SynchronizedArray[int], index: int) -> None:
    """Give back every slot of a receiving process that is gone."""
    with counts.get_lock():
        counts[index] = 0
