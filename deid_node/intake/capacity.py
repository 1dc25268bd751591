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
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any, Final

# A request at the limit looks for a freed slot this often. The slot of an association in
# another process frees there: no condition variable reaches across, and polling only runs
# at the limit.
SLOT_POLL_SECONDS: Final = 0.02


class Budget:
    """The spool's byte budget, shared across processes if given cells.

    Bytes are in flight (reserved by the process receiving them) until published, then
    held by the spool until processed. In-flight bytes are counted per process, so the
    supervisor can give back those of a receiving process that died mid-transfer.
    """

    def __init__(
        self, limit: int, cells: SynchronizedArray[int] | None = None, index: int = 0
    ) -> None:
        """`limit` bytes; `cells` a shared array from :func:`shared_budget_cells` (None:
        this process only), whose in-flight count ``index`` is this process's."""
        self.limit = limit
        self._cells = cells
        self._local = [0, 0]
        self._slot = 1 + index if cells is not None else 1
        self._lock = threading.Lock() if cells is None else cells.get_lock()

    def _values(self) -> Any:
        return self._local if self._cells is None else self._cells

    @property
    def used(self) -> int:
        """Bytes taken: published and in flight."""
        with self._lock:
            return sum(self._values()[:])

    def reserve(self, n: int) -> bool:
        """Take n bytes for an object arriving here; False if that would exceed the limit."""
        with self._lock:
            values = self._values()
            if sum(values[:]) + n > self.limit:
                return False
            values[self._slot] += n
            return True

    def release(self, n: int) -> None:
        """Give back n in-flight bytes (an object that will not be published)."""
        with self._lock:
            values = self._values()
            values[self._slot] = max(0, values[self._slot] - n)

    def commit(self, n: int) -> None:
        """n in-flight bytes are now a published object's."""
        with self._lock:
            values = self._values()
            values[self._slot] = max(0, values[self._slot] - n)
            values[0] += n

    def release_published(self, n: int) -> None:
        """Give back n bytes of a processed object."""
        with self._lock:
            values = self._values()
            values[0] = max(0, values[0] - n)

    def set(self, published: int, in_flight: int = 0) -> None:
        """Say how many bytes are taken (after recovery counted them)."""
        with self._lock:
            values = self._values()
            values[0] = published
            values[self._slot] = in_flight

    def clear(self, index: int) -> None:
        """Give back every in-flight byte of receiving process `index` (it is gone)."""
        with self._lock:
            self._values()[1 + index] = 0


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


def shared_budget_cells(processes: int) -> SynchronizedArray[int]:
    """Shared byte counts for :class:`Budget`: published, then in flight per receiving
    process (0 to processes - 1), then the supervisor's own."""
    return multiprocessing.get_context("spawn").Array("q", processes + 2)


def shared_slot_counts(processes: int) -> SynchronizedArray[int]:
    """Shared per-process association counts for :class:`Slots`."""
    return multiprocessing.get_context("spawn").Array("i", processes)


def clear_slots(counts: SynchronizedArray[int], index: int) -> None:
    """Give back every slot of a receiving process that is gone."""
    with counts.get_lock():
        counts[index] = 0
