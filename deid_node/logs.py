"""Logging set-up that keeps PHI out of every log line."""

from __future__ import annotations

import logging
import warnings


class OneLine(logging.Filter):
    """Keep a library's record to its first line: no traceback, no multi-line dump.

    pynetdicom logs a peer that hangs up mid-PDU as an ERROR with a traceback; that is a
    peer's doing, not a crash of ours, and a dump could carry values.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop exception and stack text, and anything after the message's first line."""
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        message = record.getMessage()
        if "\n" in message:
            record.msg, record.args = message.split("\n", 1)[0], None
        return True


def quiet_libraries() -> None:
    """Silence what third-party libraries would log about values.

    pynetdicom logs original UIDs at DEBUG and dumps datasets on some errors; pydicom's
    warnings quote invalid values. Neither may reach a log.
    """
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # A logger's filters do not apply to its children's records, so each gets its own;
    # called again once pynetdicom is imported (workers never import it).
    for name in list(logging.root.manager.loggerDict):
        if name == "pynetdicom" or name.startswith("pynetdicom."):
            logger = logging.getLogger(name)
            if not any(isinstance(f, OneLine) for f in logger.filters):
                logger.addFilter(OneLine())
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    warnings.filterwarnings("ignore", module=r"pynetdicom(\..*)?")


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr, libraries kept quiet."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    quiet_libraries()
