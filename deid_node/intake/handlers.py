"""pynetdicom event handlers: plain ``handle_<event>(event, receiver)`` functions bound with
the :class:`~deid_node.intake.receiver.Receiver` as their extra argument. They never raise
and never log PHI."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType

from deid_node.dicom.status import (
    DIAG_CALLING_AE_NOT_RECOGNISED,
    REJECT_PERMANENT,
    SOURCE_SERVICE_USER,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
)
from deid_node.intake.receiver import Receiver, failure
from deid_node.net import pynetdicom_compat as compat

log = logging.getLogger(__name__)


def _internal_error(what: str, exc: Exception) -> None:
    # The exception's message may quote values from the request: log its type only.
    log.error("internal error in the %s handler (%s)", what, type(exc).__name__)


def _guarded(what: str, action: Callable[..., object], *args: object) -> None:
    """Run a receiver method for a handler: an error is one log line, never a raise."""
    try:
        action(*args)
    except Exception as exc:
        _internal_error(what, exc)


def handle_requested(event: Event, receiver: Receiver) -> None:
    """EVT_REQUESTED: apply the association policy, rejecting here if it says so."""
    try:
        receiver.requested(event.assoc)
    except Exception as exc:
        _internal_error("association request", exc)
        if not event.assoc.is_rejected:  # fail closed: a request we could not judge
            with contextlib.suppress(Exception):
                compat.reject_request(
                    event.assoc,
                    REJECT_PERMANENT,
                    SOURCE_SERVICE_USER,
                    DIAG_CALLING_AE_NOT_RECOGNISED,
                )


def handle_rejected(event: Event, receiver: Receiver) -> None:
    """EVT_REJECTED: pynetdicom rejected a request our policy had accepted."""
    _guarded("association rejected", receiver.rejected, event.assoc)


def handle_accepted(event: Event, receiver: Receiver) -> None:
    """EVT_ACCEPTED: the association is established."""
    _guarded("association accepted", receiver.accepted, event.assoc)


def handle_released(event: Event, receiver: Receiver) -> None:
    """EVT_RELEASED: remember the outcome; the slot is free."""
    _guarded("association released", receiver.ended, event.assoc, "released")


def handle_aborted(event: Event, receiver: Receiver) -> None:
    """EVT_ABORTED: remember the outcome; the slot is free."""
    _guarded("association aborted", receiver.ended, event.assoc, "aborted")


def handle_conn_close(event: Event, receiver: Receiver) -> None:
    """EVT_CONN_CLOSE: close the association's books."""
    _guarded("connection close", receiver.closed, event.assoc)


def handle_echo(event: Event, receiver: Receiver) -> int:
    """EVT_C_ECHO: Success."""
    return STATUS_SUCCESS


def handle_store(event: Event, receiver: Receiver) -> int | Dataset:
    """EVT_C_STORE: spool the data set, then answer."""
    try:
        return receiver.store(event)
    except Exception as exc:
        _internal_error("C-STORE", exc)
        return failure(STATUS_PROCESSING_FAILURE, "internal error")


def event_handlers(receiver: Receiver) -> list[EventHandlerType]:
    """The (event, handler, [receiver]) bindings for ``AE.start_server``."""
    return [
        (evt.EVT_REQUESTED, handle_requested, [receiver]),
        (evt.EVT_REJECTED, handle_rejected, [receiver]),
        (evt.EVT_ACCEPTED, handle_accepted, [receiver]),
        (evt.EVT_RELEASED, handle_released, [receiver]),
        (evt.EVT_ABORTED, handle_aborted, [receiver]),
        (evt.EVT_CONN_CLOSE, handle_conn_close, [receiver]),
        (evt.EVT_C_ECHO, handle_echo, [receiver]),
        (evt.EVT_C_STORE, handle_store, [receiver]),
    ]
