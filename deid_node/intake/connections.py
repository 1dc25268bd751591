"""Connections accepted but not yet associated: bounded, and given a short time to speak.

A TCP connection costs a receiving process two threads before the peer has said who it
is. Until its A-ASSOCIATE-RQ has arrived, a connection is *pending*: at most
``per_peer`` from one address (one more is closed as soon as it is accepted) and ``total``
in all (one more closes the oldest) are (per receiving process), and a pending one is
closed ``timeout`` seconds after it was accepted (``node.request_timeout``; the TLS
handshake counts). A real sender spends milliseconds pending, so neither limit nor
timeout touches it; ``max_associations`` bounds what comes after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from deid_node.intake.policy import printable

log = logging.getLogger(__name__)

# Drops are logged as they start, then summed up at most this often: a flood of
# connections must not become a flood of log lines.
LOG_EVERY_SECONDS: Final = 10.0
# The total bound, as a multiple of max_associations (the per-address bound is that).
TOTAL_PER_ASSOCIATION: Final = 4


@dataclass
class _Pending:
    peer: str
    deadline: float


class PendingConnections:
    """Bookkeeping of pending connections; thread-safe. Keys are the accepted sockets."""

    def __init__(
        self,
        timeout: float,
        per_peer: int,
        total: int,
        *,
        closed: Callable[[Any], bool] = lambda key: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`timeout` seconds to associate; at most `per_peer` per address, `total` in all.

        `closed(key)` says whether a pending connection has closed meanwhile (it then
        counts no more, and is not reported as dropped).
        """
        self.timeout = timeout
        self.per_peer = per_peer
        self.total = total
        self._closed = closed
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[Hashable, _Pending] = {}
        self._dropped: Counter[str] = Counter()  # why -> connections, since the last log line
        self._peers: set[str] = set()
        self._logged_at: float | None = None

    @classmethod
    def for_associations(cls, timeout: float, max_associations: int) -> PendingConnections:
        """The node's bounds on sockets: `max_associations` per address, four times that
        in all."""
        return cls(
            timeout,
            max_associations,
            TOTAL_PER_ASSOCIATION * max_associations,
            closed=lambda sock: sock.fileno() == -1,
        )

    def __len__(self) -> int:
        """Connections pending now."""
        with self._lock:
            return len(self._pending)

    def admit(self, key: Hashable, peer: str) -> tuple[bool, list[Hashable]]:
        """Count a connection just accepted from `peer`: whether it may stay (False: close
        it), and the pending connections to close to make room for it.

        One address over its bound loses its newest connection. When all are taken, the
        oldest pending connection goes instead: a sender that spoke at once is pending no
        more, so a flood from many addresses pushes out only its own connections.
        """
        with self._lock:
            self._forget_closed()
            same = sum(1 for p in self._pending.values() if p.peer == peer)
            if same >= self.per_peer:
                self._note_drop(peer, f"over the limit of {self.per_peer} pending per address")
                return False, []
            evicted: list[Hashable] = []
            while len(self._pending) >= self.total:
                oldest = min(self._pending, key=lambda k: self._pending[k].deadline)
                gone = self._pending.pop(oldest)
                self._note_drop(gone.peer, f"oldest over the limit of {self.total} pending in all")
                evicted.append(oldest)
            self._pending[key] = _Pending(peer, self._clock() + self.timeout)
            return True, evicted

    def associated(self, key: Hashable) -> None:
        """The connection's A-ASSOCIATE-RQ arrived: it is pending no more."""
        with self._lock:
            self._pending.pop(key, None)

    def expired(self) -> list[Hashable]:
        """Pending connections past their time (counted no more): the caller closes them."""
        now = self._clock()
        with self._lock:
            self._forget_closed()
            late = [k for k, p in self._pending.items() if p.deadline <= now]
            for key in late:
                peer = self._pending.pop(key).peer
                self._note_drop(peer, f"no A-ASSOCIATE-RQ within {self.timeout:g} s")
            self._log_drops(now)
        return late

    def _forget_closed(self) -> None:
        # Call with the lock held.
        for key in [k for k in self._pending if self._closed(k)]:
            del self._pending[key]

    def _note_drop(self, peer: str, why: str) -> None:
        # Call with the lock held.
        self._dropped[why] += 1
        self._peers.add(peer)
        if self._logged_at is None:  # the first of a series is told at once
            self._log_drops(self._clock())

    def _log_drops(self, now: float) -> None:
        # Call with the lock held.
        if not self._dropped:
            if self._logged_at is not None and now - self._logged_at >= LOG_EVERY_SECONDS:
                self._logged_at = None  # quiet for a while: the next drop is told at once
            return
        if self._logged_at is not None and now - self._logged_at < LOG_EVERY_SECONDS:
            return
        peers = sorted(self._peers)
        where = ", ".join(printable(p, 64) for p in peers[:3])
        if len(peers) > 3:
            where += f" and {len(peers) - 3} more"
        reasons = "; ".join(f"{n} {why}" for why, n in self._dropped.items())
        total = self._dropped.total()
        log.warning(
            "closed %d connection(s) before an association, from %s: %s", total, where, reasons
        )
        self._dropped.clear()
        self._peers.clear()
        self._logged_at = now
