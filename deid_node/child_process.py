"""How every child process of the node starts: one prologue, :func:`start_child`.

The node starts three kinds: receiving processes (deid_node.intake.boot), de-identification
workers (deid_node.runtime.worker, forked by a forkserver) and the forwarding process
(deid_node.forward.process). Each entry calls :func:`start_child` before anything else.
Standard library and deid_node.logs only: a receiving process runs it before pydicom is
imported.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Final

from deid_node.logs import quiet_libraries, setup_logging

__all__ = ["PIXEL_LIBRARIES", "keep_pixels_out", "start_child", "watch_parent"]

# pydicom imports numpy whenever it can, and, to say which pixel plugins are available,
# Pillow, GDCM and the pylibjpeg family as well: some 35 MB in every process that merely
# reads headers. Receiving processes and header-only workers keep them out before anything
# imports pydicom; pydicom then reports those plugins unavailable, which such a process
# never asks about. Processes that clean pixels (or forward, decoding what a destination
# will not take compressed) keep them.
PIXEL_LIBRARIES: Final = (
    "numpy",
    "PIL",
    "gdcm",
    "pylibjpeg",
    "openjpeg",
    "rle",
    "libjpeg",
    "jpeg_ls",
    "tesserocr",
)


def keep_pixels_out() -> None:
    """Make the pixel libraries unimportable in this process (an import raises)."""
    for name in PIXEL_LIBRARIES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def start_child(
    parent_pid: int,
    *,
    pixels: bool,
    log_handler: logging.Handler | None = None,
    log_level: int | None = None,
) -> None:
    """The first call of every child process's entry.

    * `pixels` False: the pixel libraries are kept out (:func:`keep_pixels_out`; call
      before pydicom is imported). Workers pass True: their forkserver's preload
      (deid_node.runtime.worker_boot) already decided, before it forked them.
    * SIGTERM and SIGINT ignored: they are sent to the whole process group (systemd, a
      terminal), and the node drives its children's stop.
    * The process ends as soon as process `parent_pid` (the node) has exited.
    * Logging: every record to `log_handler` (a receiving process sends them to the node),
      else to stderr in the node's format at `log_level`; with neither, warnings only, as
      logging prints them by default. Library loggers are quietened either way.
    """
    if not pixels:
        keep_pixels_out()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    watch_parent(parent_pid)
    if log_handler is not None:
        root = logging.getLogger()
        root.handlers[:] = [log_handler]
        root.setLevel(logging.INFO if log_level is None else log_level)
    elif log_level is not None:
        setup_logging(log_level)
    quiet_libraries()


# A child ends when its parent is gone, whatever else it is doing: the node's children
# ignore SIGTERM and may hold both ends of their pipes, so a kill -9 of the node would
# leave them running.


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
