"""Logging set-up that keeps PHI out of every log line."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """Silence what third-party libraries would log about values.

    pynetdicom logs original UIDs at DEBUG and dumps datasets on some errors; pydicom's
    warnings quote invalid values. Neither may reach a log.
    """
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
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
