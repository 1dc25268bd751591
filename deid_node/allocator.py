"""Allocator settings for processes that pass large buffers through Python."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
HELD_BYTES: Final = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit


def hold_freed_memory(limit: int = HELD_BYTES) -> bool:
    """Have glibc keep freed blocks up to `limit` bytes for reuse; False elsewhere.

    A receiving process allocates and frees blocks of 100 KiB to 1 MiB for every PDU.
    By default glibc hands such blocks back to the kernel at once (mmap for large blocks,
    trimming of the association threads' heaps), and every reuse then costs a page fault
    per 4 KiB: about 120 per CT slice, a large part of the process's time in a VM. Fixed
    thresholds keep them in the process; its peak memory does not change, only how soon
    it shrinks after a peak.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def give_back_freed_memory() -> bool:
    """Hand every freed page back to the kernel now (glibc's malloc_trim); False elsewhere.

    The thresholds above keep freed blocks for reuse, and every thread that ran an
    association had its own heap: after a crowd of connections has gone, what they used
    would stay resident until reused.
    """
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
