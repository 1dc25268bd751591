"""The worker side of the node: a process that de-identifies spool files, nothing else.

Kept apart from node.py so worker processes import only the pipeline (pydicom and the
engine), not pynetdicom, SQLAlchemy or the CLI: every worker is a full process, and what
it imports it holds in memory for as long as the node runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from deid_node.child_process import start_child
from deid_node.config import ProfileConfig
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import CompiledProfile, compile_profile
from deid_node.errors import StorageError
from deid_node.object_status import Status

WORKER_NICENESS = 10


@dataclass(frozen=True)
class WorkResult:
    """What a worker sends back: an outcome, or why the output could not be written."""

    outcome: Outcome | None
    storage_error: str | None = None
    seconds: float = 0.0  # how long the work took (the node's metrics)


@dataclass
class _WorkerState:
    profiles: dict[str, CompiledProfile]
    key: bytes
    output: Path
    fsync: bool


_worker: _WorkerState | None = None


def init_worker(
    profiles: Mapping[str, ProfileConfig], key: bytes, output: Path, fsync: bool, node_pid: int
) -> None:
    """Per worker process, its entry: the children's prologue (the node drains, then shuts
    the pool; pixel libraries as the forkserver's preload left them), then compile the
    profiles once."""
    global _worker
    start_child(node_pid, pixels=True)  # only warnings to stderr: the node logs outcomes
    warnings.simplefilter("ignore")
    # Receipt first: a sender waits on the receiving process, never on a worker, and the
    # spool absorbs the difference (bounded by spool_max_bytes). Without this, two workers
    # and the receiver share two cores three ways and every acknowledgement comes later.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    compiled = {name: compile_profile(p) for name, p in profiles.items()}
    _worker = _WorkerState(compiled, key, output, fsync)


def work(path: str, profile: str) -> WorkResult:
    """De-identify one spool file in a worker process; never raises."""
    started = time.perf_counter()
    result = _work(path, profile)
    return replace(result, seconds=time.perf_counter() - started)


def _work(path: str, profile: str) -> WorkResult:
    state = _worker
    if state is None:
        return WorkResult(None, "worker not initialised")
    try:
        return WorkResult(
            # Spool files passed the strict encoding check before they were acknowledged.
            process_file(
                Path(path),
                state.profiles[profile],
                state.key,
                state.output,
                fsync=state.fsync,
                check_encoding=False,
            )
        )
    except StorageError as exc:
        # A write's message names the file, whose path is made of the object's
        # pseudonymous UIDs: the node's log gets the system's reason only.
        return WorkResult(None, exc.reason or str(exc))
    except Exception as exc:  # fail closed: anything unforeseen is quarantined
        return WorkResult(Outcome(Status.QUARANTINED, f"internal error ({type(exc).__name__})"))


HEADER_BOOT = "deid_node.runtime.worker_boot"  # numpy kept out
PIXEL_BOOT = "deid_node.runtime.worker_boot_pixels"  # numpy, pixel codecs and Tesseract in
_preloaded: str | None = None  # what this process's forkserver was told to preload


def pool_context(pixels: bool = False) -> multiprocessing.context.BaseContext:
    """The start method for worker pools: a forkserver that preloads only the worker side.

    `pixels`: some profile looks at pixels (any policy but allow), so workers need numpy.
    A process has one forkserver; if it already runs without numpy, pixel workers are
    spawned instead.
    """
    global _preloaded
    # fork from a process with pynetdicom, SQLAlchemy and writer threads risks copying
    # held locks into the child; the forkserver forks from a clean, preloaded process.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    wanted = PIXEL_BOOT if pixels else HEADER_BOOT
    if _preloaded is None or (wanted == PIXEL_BOOT and not _forkserver_running()):
        ctx.set_forkserver_preload([wanted])
        _preloaded = wanted
    if pixels and _preloaded != PIXEL_BOOT:
        return multiprocessing.get_context("spawn")
    return ctx


def kill_workers(pool: ProcessPoolExecutor) -> int:
    """SIGKILL what is left of a broken pool's workers; how many were alive.

    A broken pool sends its workers SIGTERM, which they ignore (the node drives their
    stop). One may then wait for good on the task queue's lock that the killed worker
    held, and the pool's manager thread waits for it (busy, and again at interpreter
    exit): only the node can end it. The executor names its processes only in a private
    attribute (3.11-3.13); missing, nothing is killed.
    """
    processes = getattr(pool, "_processes", None) or {}
    alive = [p for p in list(processes.values()) if p.is_alive()]
    for process in alive:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    return len(alive)


def _forkserver_running() -> bool:
    # multiprocessing does not say whether its forkserver has started; its private
    # attribute does (3.11-3.13). Unknown counts as started: spawning is the safe side.
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", 0) is not None


__all__ = ["WorkResult", "init_worker", "kill_workers", "pool_context", "work"]
