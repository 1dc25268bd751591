"""Forkserver preload for worker processes: numpy kept out, then the worker side imported.

Workers do header-only work and never touch pixel values, yet pydicom imports numpy
whenever it can (some 13 MB in every process). Marking it unimportable here, in the
forkserver only, keeps it out of every worker; the node process itself is unaffected.
A node with a profile that cleans burned-in text preloads worker_boot_pixels instead.
"""

import sys

sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]

import deid_node.runtime.worker  # noqa: E402,F401
