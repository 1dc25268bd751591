"""A child process that ends when its parent is gone, whatever else it is doing.

The node's receiving, worker and forwarding processes ignore SIGTERM (the node drives
their stop) and may hold both ends of their pipes, so a kill -9 of the node would leave
them running: each starts `watch_parent` first.
"""

from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["watch_parent"]


def _exit_with(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        select.select([fd], [], [])  # readable once the process has exited
    else:  # no pidfd (old kernel): look once a second
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                continue
    os._exit(0)


def watch_parent(pid: int) -> None:
    """End this process (os._exit(0)) as soon as process `pid` has exited."""
    threading.Thread(target=_exit_with, args=(pid,), name="deid-lifeline", daemon=True).start()
