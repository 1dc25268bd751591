"""Forkserver preload for header-only worker processes: pixel libraries kept out.

Workers of a node without a cleaning profile do header-only work and never touch pixel
values, yet pydicom imports numpy, Pillow and GDCM whenever it can (deid_node/lean.py).
Keeping them out here, in the forkserver only, keeps them out of every worker; the node
process itself is unaffected. A node with a profile that cleans burned-in text preloads
worker_boot_pixels instead.
"""

from deid_node.lean import keep_pixels_out

keep_pixels_out()

import deid_node.runtime.worker  # noqa: E402,F401
