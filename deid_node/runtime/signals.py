"""Signal dispositions for the node's child processes."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Final

_STOP_SIGNALS: Final = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Start child processes with SIGTERM and SIGINT ignored.

    An ignored disposition survives fork and exec (a blocked mask does not: the
    forkserver starts with an empty one), so the forkserver and every worker it forks
    never see the SIGTERM or Ctrl-C sent to the whole process group (systemd, a
    terminal): the node receives it and drains the spool through workers that are still
    there. Workers end when the node closes the pool, or when the node dies.
    """
    try:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
    except ValueError:  # not the main thread: leave the dispositions alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
