"""Forkserver preload for header-only worker processes: pixel libraries kept out.

Workers of a node whose profiles all say `burned_in_annotation = "allow"` never look at
pixel values, yet pydicom imports numpy, Pillow and GDCM whenever it can
(deid_node/child_process.py). Keeping them out here, in the forkserver only, keeps them
out of every worker; the node process itself is unaffected. Any other policy looks at
some objects' pixels (derived images even under `quarantine`), so such a node preloads
worker_boot_pixels instead. Each worker then starts with init_worker (runtime/worker.py).
"""

from deid_node.child_process import keep_pixels_out

keep_pixels_out()

import deid_node.runtime.worker  # noqa: E402,F401
