"""Library log records reach our logs as one line: no traceback, no dump."""

from __future__ import annotations

import io
import logging

import pynetdicom  # noqa: F401 - its loggers exist once it is imported

from deid_node.logs import quiet_libraries


def test_pynetdicom_records_lose_tracebacks_and_extra_lines() -> None:
    quiet_libraries()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        log = logging.getLogger("pynetdicom.dul")
        try:
            raise ConnectionError("peer went away")
        except ConnectionError:
            log.exception("Connection closed before the entire PDU was received")
        log.error("Dataset dump:\n(0010,0010) PatientName SECRET^NAME")
        logging.getLogger("pynetdicom.assoc").debug("Affected SOP Instance UID 1.2.3")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["Connection closed before the entire PDU was received", "Dataset dump:"]
