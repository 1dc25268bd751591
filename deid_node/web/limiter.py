"""The login limiter: failed logins per peer address and per user name, in memory.

Per address, a window: past LOGIN_FAILURES failures within LOGIN_WINDOW_SECONDS the address
is refused until the oldest of them leaves the window. Per user name, so that rotating
addresses gains nothing, an increasing delay instead of a lock: past LOGIN_FAILURES, each
failure makes the name wait twice as long as the last before the next try (1 s, 2 s, 4 s,
...), at most NAME_DELAY_MAX_SECONDS; a guesser gets one try a minute, and the user waits
at most a minute once they stop. Refused tries are not counted, so hammering extends
nothing. A successful login forgets both.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LOGIN_FAILURES",
    "LOGIN_WINDOW_SECONDS",
    "NAME_DELAY_MAX_SECONDS",
    "LoginLimiter",
    "Refusal",
]

LOGIN_FAILURES: Final = 5  # failed logins free of any wait, per address and per name
LOGIN_WINDOW_SECONDS: Final = 300.0  # failures older than this are forgotten
NAME_DELAY_MAX_SECONDS: Final = 60.0  # the longest one user name waits between tries
_TRACKED: Final = 10_000  # addresses and names remembered at most (the oldest go first)


@dataclass(frozen=True)
class Refusal:
    """Why a login is refused before its password is checked, and for how long."""

    reason: str
    seconds: float


@dataclass
class _Name:
    failures: int
    last: float


class LoginLimiter:
    """Failed logins per address and per user name, in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """No failures yet; `clock` gives seconds (tests pass their own)."""
        self._clock = clock
        self._peers: OrderedDict[str, deque[float]] = OrderedDict()
        self._names: OrderedDict[str, _Name] = OrderedDict()
        self._lock = threading.Lock()

    def refusal(self, peer: str, name: str) -> Refusal | None:
        """Why a try from `peer` for `name` is refused now, or None if it may go ahead."""
        with self._lock:
            now = self._clock()
            times = self._peers.get(peer)
            if times is not None:
                _forget_before(times, now - LOGIN_WINDOW_SECONDS)
                if len(times) >= LOGIN_FAILURES:
                    wait = times[0] + LOGIN_WINDOW_SECONDS - now
                    return Refusal("too many failed logins from this address", wait)
            entry = self._names.get(name)
            if entry is not None and entry.failures >= LOGIN_FAILURES:
                wait = entry.last + _delay(entry.failures) - now
                if wait > 0:
                    return Refusal("too many failed logins for this user", wait)
        return None

    def failed(self, peer: str, name: str) -> None:
        """Count one failed login."""
        with self._lock:
            now = self._clock()
            times = self._peers.pop(peer, None) or deque()
            _forget_before(times, now - LOGIN_WINDOW_SECONDS)
            times.append(now)
            self._peers[peer] = times  # the most recent last
            entry = self._names.pop(name, None)
            if entry is None or now - entry.last > LOGIN_WINDOW_SECONDS:
                entry = _Name(0, now)
            entry.failures, entry.last = entry.failures + 1, now
            self._names[name] = entry
            for tracked in (self._peers, self._names):
                while len(tracked) > _TRACKED:
                    tracked.popitem(last=False)

    def succeeded(self, peer: str, name: str) -> None:
        """Forget the failures of this address and this name."""
        with self._lock:
            self._peers.pop(peer, None)
            self._names.pop(name, None)


def _delay(failures: int) -> float:
    """How long a name waits after its `failures`-th failure (LOGIN_FAILURES or more)."""
    return min(2.0 ** min(failures - LOGIN_FAILURES, 30), NAME_DELAY_MAX_SECONDS)


def _forget_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] < cutoff:
        times.popleft()
