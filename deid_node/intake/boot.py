"""Where a receiving process starts: pixel libraries kept out, then the receiving side.

A receiving process never touches pixel values, yet pydicom (under pynetdicom and the
config) imports numpy, Pillow and GDCM whenever it can (deid_node/lean.py). The
supervisor starts each with :func:`run` as its target and the ReceiverSpec pickled to
bytes, so the child imports nothing but this module before :func:`keep_numpy_out` runs.
"""

from __future__ import annotations

import pickle
from typing import Any


def keep_numpy_out() -> None:
    """Make numpy and the other pixel libraries unimportable in this process (before
    anything imports pydicom)."""
    from deid_node.lean import keep_pixels_out

    keep_pixels_out()


def run(spec: bytes, *args: Any) -> None:
    """The receiving process's target: `spec` is the pickled ReceiverSpec."""
    keep_numpy_out()
    from deid_node.intake.process import run as serve

    serve(pickle.loads(spec), *args)
