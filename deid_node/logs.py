"""Logging set-up that keeps PHI out of every log line."""

from __future__ import annotations

import logging
import re
import warnings
from typing import Final


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


# A token shaped like a UID: three or more dot-separated parts, the first starting with a
# digit (letters and leading zeros included: non-conformant UIDs are the ones libraries
# complain about, quoting them).
_UID_LIKE: Final = re.compile(r"(?<![\w.])\d\w*(?:\.\w+){2,}(?![\w])")
_QUOTED: Final = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_OCTET: Final = re.compile(r"0|[1-9]\d{0,2}")
WITHHELD: Final = "<withheld>"
OWN_LOGGERS: Final = "deid_node"


def _not_a_uid(token: str) -> bool:
    """An IPv4 address (peers are named by it) or a short version number (3.0.4)."""
    parts = token.split(".")
    if len(parts) == 4 and all(_OCTET.fullmatch(p) and int(p) < 256 for p in parts):
        return True
    return len(parts) == 3 and all(p.isdigit() and len(p) <= 3 for p in parts)


def _withhold_uids(text: str) -> str:
    return _UID_LIKE.sub(lambda m: m[0] if _not_a_uid(m[0]) else WITHHELD, text)


class NoValues(logging.Filter):
    """At a handler: no value from a command set or data set gets through, whoever logs.

    Every record loses what is shaped like a UID (an IPv4 address or a version number
    stays). A record of any logger outside deid_node also loses quoted text, the way
    libraries quote values (pynetdicom: ``Non-conformant 'Affected SOP Instance UID'
    value '1.2.03.4'``), its traceback and every line after its first. deid_node's own
    records name no value by construction; this is the net under that, and it judges
    the text, not the logger's name alone, so a library no one has listed is covered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place (other handlers see the same record)."""
        try:
            message = record.getMessage()
        except Exception:  # a library's broken format string: its arguments stay out
            message = str(record.msg)
        own = record.name == OWN_LOGGERS or record.name.startswith(OWN_LOGGERS + ".")
        if not own:
            message = _QUOTED.sub(f"'{WITHHELD}'", message.split("\n", 1)[0])
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        record.msg, record.args = _withhold_uids(message), None
        return True


def protect(handler: logging.Handler) -> logging.Handler:
    """Give a handler the :class:`NoValues` filter (once)."""
    if not any(isinstance(f, NoValues) for f in handler.filters):
        handler.addFilter(NoValues())
    return handler


def protect_handlers() -> None:
    """:func:`protect` the root logger's handlers and logging's last resort (what prints
    a record when no handler is configured, as in worker processes)."""
    for handler in logging.getLogger().handlers:
        protect(handler)
    if logging.lastResort is not None:
        protect(logging.lastResort)


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
    protect_handlers()
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
