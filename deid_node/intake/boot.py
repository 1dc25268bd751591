"""Where a receiving process starts: the children's prologue, then the receiving side.

A receiving process never touches pixel values, yet pydicom (under pynetdicom and the
config) imports numpy, Pillow and GDCM whenever it can (deid_node/child_process.py). The
supervisor starts each with :func:`run` as its target and the ReceiverSpec pickled to
bytes, so the child imports nothing but this module (standard library, the prologue and
the pipe's messages) before :func:`~deid_node.child_process.start_child` has kept them out.
"""

from __future__ import annotations

import pickle
from multiprocessing.connection import Connection
from typing import Any

from deid_node.child_process import start_child
from deid_node.intake.messages import Channel, ForwardLogs


def run(spec: bytes, supervisor_pid: int, conn: Connection, *args: Any) -> None:
    """The receiving process's target: `spec` is the pickled ReceiverSpec, `conn` its pipe."""
    channel = Channel(conn)
    start_child(supervisor_pid, pixels=False, log_handler=ForwardLogs(channel))
    from deid_node.intake.process import run as serve

    serve(pickle.loads(spec), conn, channel, *args)
