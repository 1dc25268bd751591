"""Where a receiving process starts: numpy kept out, then the receiving side imported.

A receiving process never touches pixel values, yet pydicom (under pynetdicom and the
config) imports numpy whenever it can: some 13 MB in every receiving process. The
supervisor starts each with :func:`run` as its target and the ReceiverSpec pickled to
bytes, so the child imports nothing but this module before :func:`keep_numpy_out` runs.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any


def keep_numpy_out() -> None:
    """Make numpy unimportable in this process (before anything imports pydicom)."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]


def run(spec: bytes, *args: Any) -> None:
    """The receiving process's target: `spec` is the pickled ReceiverSpec."""
    keep_numpy_out()
    from deid_node.intake.process import run as serve

    serve(pickle.loads(spec), *args)
