"""What a receiving process and the supervisor say to each other over their pipe.

Each message is a frozen dataclass, pickled whole; each end dispatches on the class with a
``match`` that mypy checks for exhaustiveness (``assert_never``), so a message one end
sends and the other does not handle fails the type check. :class:`Report` is what a
receiving process sends (:class:`Channel` is its end of the pipe, the
:class:`~deid_node.intake.receiver.ReceiverEvents` the receiver calls), :class:`Command`
what the supervisor sends (deid_node.runtime.receivers).

No pydicom or pynetdicom here, at run time: a receiving process builds its
:class:`Channel` and :class:`ForwardLogs` before it imports them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from deid_node.intake.receiver import AssociationInfo, RefusedObject
    from deid_node.intake.spool import SpoolItem

__all__ = [
    "Abort",
    "Accepted",
    "Active",
    "Channel",
    "Command",
    "Ended",
    "ForwardLogs",
    "Log",
    "Ping",
    "Pong",
    "Ready",
    "Received",
    "Refused",
    "Refusing",
    "Rejected",
    "Report",
    "Stop",
]

# -- from a receiving process to the supervisor -----------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The process serves: its AE listens on the shared socket."""

    pid: int


@dataclass(frozen=True)
class Accepted:
    """An association was accepted."""

    info: AssociationInfo


@dataclass(frozen=True)
class Rejected:
    """An association request was rejected (sent before the A-ASSOCIATE-RJ goes out)."""

    info: AssociationInfo
    reason: str


@dataclass(frozen=True)
class Ended:
    """An accepted association ended (info.outcome says how)."""

    info: AssociationInfo


@dataclass(frozen=True)
class Refused:
    """A C-STORE was answered with a failure status."""

    refused: RefusedObject


@dataclass(frozen=True)
class Received:
    """An object is durable in spool/ (sent before the C-STORE-RSP goes out)."""

    item: SpoolItem


@dataclass(frozen=True)
class Active:
    """This many associations are open in the process now."""

    count: int


@dataclass(frozen=True)
class Log:
    """A log record for the node's log: logger name, level, the message's first line."""

    logger: str
    level: int
    text: str


@dataclass(frozen=True)
class Pong:
    """Every message sent before :class:`Ping` `number` arrived has been sent."""

    number: int


Report: TypeAlias = Ready | Accepted | Rejected | Ended | Refused | Received | Active | Log | Pong

# -- from the supervisor to a receiving process -----------------------------------------------


@dataclass(frozen=True)
class Refusing:
    """Answer every C-STORE Out of Resources with `reason` (None: accept again)."""

    reason: str | None


@dataclass(frozen=True)
class Ping:
    """Answer with :class:`Pong` `number` once what came before is sent."""

    number: int


@dataclass(frozen=True)
class Stop:
    """Accept no more associations; let the open ones finish (drain_timeout), then end."""


@dataclass(frozen=True)
class Abort:
    """During a stop: abort the associations still open now, without waiting."""


Command: TypeAlias = Refusing | Ping | Stop | Abort


class Channel:
    """A receiving process's end of the pipe: the ReceiverEvents, sent to the supervisor."""

    def __init__(self, conn: Connection) -> None:
        """Send on `conn` (association threads share it: one send at a time)."""
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: Report) -> None:
        """Send one message; the supervisor gone means this process ends too."""
        try:
            with self._lock:
                self._conn.send(message)
        except (OSError, EOFError):
            os._exit(0)

    def association_accepted(self, info: AssociationInfo) -> None:
        """Report an accepted association."""
        self.send(Accepted(info))

    def association_rejected(self, info: AssociationInfo, reason: str) -> None:
        """Report a rejected association."""
        self.send(Rejected(info, reason))

    def association_ended(self, info: AssociationInfo) -> None:
        """Report an association's end."""
        self.send(Ended(info))

    def object_refused(self, refused: RefusedObject) -> None:
        """Report a refused C-STORE."""
        self.send(Refused(refused))

    def object_received(self, item: SpoolItem) -> None:
        """Report an object durable in spool/ (sent before the C-STORE-RSP goes out)."""
        self.send(Received(item))

    def associations_changed(self, active: int) -> None:
        """Report how many associations are open."""
        self.send(Active(active))


class ForwardLogs(logging.Handler):
    """Send each log record's message (PHI-free by construction) to the supervisor."""

    def __init__(self, channel: Channel) -> None:
        """Forward through `channel`."""
        super().__init__(logging.INFO)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        """One :class:`Log` message: logger name, level, the message's first line."""
        try:
            message = record.getMessage().split("\n", 1)[0]
        except Exception:
            message = f"unformattable log record ({record.name})"
        self._channel.send(Log(record.name, record.levelno, message))
