"""Durable intake: received objects land in spool/ before Success is sent, and wait there.

Layout (all on the data_dir filesystem, folders mode 0700, because spool files hold PHI)::

    spool/incoming/<random>.part     being received (chunked, never whole in memory)
    spool/<stem>.json                sidecar: who sent it, when, under which profile
    spool/<stem>.dcm                 the Part-10 object, published last
    quarantine/<stem>.dcm + .json    objects that could not be de-identified with certainty

Publishing writes the sidecar first and renames the object into place last, so a
``.dcm`` in spool/ always has its sidecar; recovery deletes what a crash left half done
(``incoming/``, temp files, sidecars without an object). Stems sort in receipt order.

The spool is bounded: an object larger than ``max_object_bytes``, or one that would take
the spool over ``spool_max_bytes``, or a full disk, marks the incoming file as failed and
stops writing it, so the SCP can answer Out of Resources instead of filling the disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final

from deid_node.durable import fsync_dir, make_private_dir, write_atomic
from deid_node.errors import StorageError, describe_error
from deid_node.intake.capacity import Budget

log = logging.getLogger(__name__)

INCOMING: Final = "incoming"
OBJECT_SUFFIX: Final = ".dcm"
SIDECAR_SUFFIX: Final = ".json"


class SpoolFullError(StorageError):
    """The object does not fit: too large, spool over its limit, or disk full."""


@dataclass(frozen=True)
class Receipt:
    """Where an object came from; the sidecar of a spool file. No PHI."""

    received_at: datetime
    association_id: str
    calling_ae: str
    called_ae: str
    peer_address: str
    profile: str
    size_bytes: int
    sop_class_uid: str
    transfer_syntax_uid: str

    def to_json(self) -> bytes:
        """The sidecar's bytes."""
        values: dict[str, Any] = dict(vars(self))  # scalars only: no deep copy needed
        values["received_at"] = self.received_at.astimezone(UTC).isoformat()
        return json.dumps(values, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Receipt:
        """Parse a sidecar; ValueError if it is not one."""
        try:
            values = json.loads(data)
            values["received_at"] = datetime.fromisoformat(values["received_at"])
            return cls(**values)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a spool sidecar ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SpoolItem:
    """One acknowledged object waiting in spool/ (or moved to quarantine/)."""

    stem: str
    path: Path
    receipt: Receipt

    @property
    def sidecar(self) -> Path:
        """The JSON sidecar beside the object."""
        return self.path.with_suffix(SIDECAR_SUFFIX)


class IncomingFile:
    """A file pynetdicom writes a C-STORE data set into, fragment by fragment.

    It quacks like the ``NamedTemporaryFile`` pynetdicom expects (``write``, ``file.flush``,
    ``close``, ``name``). When a limit is hit, the disk is full or spool/ cannot be
    written (read-only, vanished) it records why in ``failure``, frees what it wrote and
    swallows the rest of the data set, so the association keeps working and the handler
    can answer Out of Resources.
    """

    def __init__(self, spool: Spool, owner: object) -> None:
        """Create an empty file in spool/incoming/ (or a failed one if that is impossible)."""
        self.owner = owner
        self.size = 0
        self.failure: str | None = None
        self._spool = spool
        self._reserved = 0
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None
        try:
            fd, self.name = spool.make_incoming()
        except OSError as exc:
            # A name no file has, so the handler still finds this object and its failure.
            self.name = str(spool.incoming_dir / f"rx-unwritable-{uuid.uuid4().hex}.part")
            self.failure = _oserror_reason(exc)
            return
        self._fh = os.fdopen(fd, "wb")

    @property
    def file(self) -> IncomingFile:
        """pynetdicom calls ``.file.flush()`` after each fragment."""
        return self

    @property
    def path(self) -> Path:
        """The file's current path in spool/incoming/."""
        return Path(self.name)

    def write(self, data: bytes) -> int:
        """Append a fragment, unless the object already failed."""
        n = len(data)
        with self._lock:
            if self.failure is not None or self._fh is None or self._fh.closed:
                return n
            if self.size + n > self._spool.max_object_bytes:
                self._fail(f"object larger than max_object_bytes ({self._spool.max_object_bytes})")
                return n
            if not self._spool.reserve(n):
                self._fail(f"spool full (spool_max_bytes = {self._spool.max_bytes})")
                return n
            self._reserved += n
            try:
                self._fh.write(data)
            except OSError as exc:
                self._fail(_oserror_reason(exc))
                return n
            self.size += n
            return n

    def flush(self) -> None:
        """Hand written data to the OS (survives a crash of the node, not of the host)."""
        with self._lock:
            if self.failure is None and self._fh is not None and not self._fh.closed:
                try:
                    self._fh.flush()
                except OSError as exc:
                    self._fail(_oserror_reason(exc))

    def sync(self) -> None:
        """flush and fsync (durability = "fsync")."""
        with self._lock:
            if self._fh is None:
                raise StorageError(self.failure or "incoming file was never opened")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the handle (the file itself stays until published or discarded)."""
        with self._lock, contextlib.suppress(OSError):
            if self._fh is not None:
                self._fh.close()

    def _fail(self, reason: str) -> None:
        # Free the disk space now: the rest of the data set is swallowed unwritten.
        self.failure = reason
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.truncate(0)
            with contextlib.suppress(OSError):
                self._fh.close()
        self._spool.release(self._reserved)
        self._reserved = 0

    def _take_reservation(self) -> int:
        with self._lock:
            reserved, self._reserved = self._reserved, 0
            return reserved

    def __enter__(self) -> IncomingFile:
        """Context manager use (tests)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the handle."""
        self.close()


def _oserror_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return f"cannot write to spool ({exc.strerror or type(exc).__name__})"


class Spool:
    """spool/ and quarantine/: bounded intake, atomic publishing, recovery."""

    def __init__(
        self,
        root: Path,
        quarantine: Path,
        *,
        max_bytes: int,
        max_object_bytes: int,
        fsync: bool = False,
        budget: Budget | None = None,
        tag: str = "",
    ) -> None:
        """Describe the spool; call :meth:`prepare` before use.

        `budget` is shared with the other processes that receive into this spool; `tag`
        goes into the stem of every object this one publishes (see :meth:`published`).
        """
        self.root = root
        self.incoming_dir = root / INCOMING
        self.quarantine_root = quarantine
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.fsync = fsync
        self.budget = budget or Budget(max_bytes)
        self.tag = tag
        self._incoming_prefix = "rx-" + tag
        self._lock = threading.Lock()
        self._open: dict[str, IncomingFile] = {}

    # -- accounting -----------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes held by published and incoming objects."""
        return self.budget.used

    def reserve(self, n: int) -> bool:
        """Take n bytes of the spool budget; False if that would exceed it."""
        return self.budget.reserve(n)

    def release(self, n: int) -> None:
        """Give back n bytes of the budget."""
        self.budget.release(n)

    # -- intake ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create spool/, spool/incoming/ and quarantine/ with mode 0700."""
        try:
            make_private_dir(self.root)
            make_private_dir(self.incoming_dir)
            make_private_dir(self.quarantine_root)
        except OSError as exc:
            raise StorageError(f"cannot create {self.root}: {exc.strerror}") from None

    def make_incoming(self) -> tuple[int, str]:
        """Create a file in spool/incoming/; recreate the folders if they vanished."""
        try:
            return tempfile.mkstemp(
                prefix=self._incoming_prefix, suffix=".part", dir=self.incoming_dir
            )
        except FileNotFoundError:
            # Someone removed spool/ (or a clean-up job did): make it again, mode 0700.
            make_private_dir(self.root)
            make_private_dir(self.incoming_dir)
            log.warning("spool folder %s was missing: created it again", self.root)
            return tempfile.mkstemp(
                prefix=self._incoming_prefix, suffix=".part", dir=self.incoming_dir
            )

    def probe(self) -> str | None:
        """None if a file can be created in spool/incoming/ now; else why not (one line)."""
        try:
            fd, name = tempfile.mkstemp(prefix="probe-", suffix=".tmp", dir=self.incoming_dir)
        except FileNotFoundError:
            return None  # removed: the next object makes the folders again (make_incoming)
        except OSError as exc:
            return f"spool not writable: {describe_error(exc)}"
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        return None

    def open_incoming(self, owner: object) -> IncomingFile:
        """A new incoming file for the association `owner`."""
        f = IncomingFile(self, owner)
        with self._lock:
            self._open[f.name] = f
        return f

    def incoming(self, name: str | Path) -> IncomingFile | None:
        """The open incoming file with this path, if it is one of ours."""
        with self._lock:
            return self._open.get(str(name))

    def discard(self, f: IncomingFile) -> None:
        """Delete an incoming file that will not be published, and free its budget."""
        with self._lock:
            self._open.pop(f.name, None)
        f.close()
        self.release(f._take_reservation())
        with contextlib.suppress(OSError):
            os.unlink(f.name)

    def discard_owner(self, owner: object) -> int:
        """Discard every incoming file of an association (it ended mid-transfer)."""
        with self._lock:
            files = [f for f in self._open.values() if f.owner is owner]
        for f in files:
            self.discard(f)
        return len(files)

    def publish(self, f: IncomingFile, receipt: Receipt) -> SpoolItem:
        """Move a complete incoming file into spool/ with its sidecar; durable on return.

        Raises SpoolFullError (disk full) or StorageError; the file is discarded then.
        """
        stem = f"{time.time_ns():020d}-{self.tag}{uuid.uuid4().hex[:12]}"
        target = self.root / (stem + OBJECT_SUFFIX)
        item = SpoolItem(stem, target, receipt)
        try:
            f.flush()
            if f.failure is not None:
                raise SpoolFullError(f.failure)
            if self.fsync:
                f.sync()
            write_atomic(item.sidecar, [receipt.to_json()], fsync=self.fsync)
            os.replace(f.name, target)
            if self.fsync:
                fsync_dir(self.root)
        except (OSError, StorageError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(item.sidecar)
            self.discard(f)
            if isinstance(exc, SpoolFullError):
                raise
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFullError("disk full") from None
            if isinstance(exc, StorageError) and "No space" in str(exc):
                raise SpoolFullError("disk full") from None
            raise StorageError(f"cannot publish into spool: {_describe(exc)}") from None
        with self._lock:
            self._open.pop(f.name, None)
        self.budget.commit(f._take_reservation())  # now the published item's
        f.close()
        return item

    # -- after processing -----------------------------------------------------------------

    def remove(self, item: SpoolItem) -> None:
        """Delete a processed object (object first, then sidecar) and free its budget."""
        for path in (item.path, item.sidecar):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.budget.release_published(item.receipt.size_bytes)

    def quarantine_path(self, item: SpoolItem) -> Path:
        """Where :meth:`move_to_quarantine` puts an item."""
        return self.quarantine_root / (item.stem + OBJECT_SUFFIX)

    def move_to_quarantine(self, item: SpoolItem, reason: str) -> Path:
        """Move an object and its sidecar (with the reason added) into quarantine/."""
        target = self.quarantine_path(item)
        sidecar: dict[str, Any] = json.loads(item.receipt.to_json())
        sidecar["reason"] = reason
        try:
            write_atomic(
                target.with_suffix(SIDECAR_SUFFIX),
                [json.dumps(sidecar, sort_keys=True).encode()],
                fsync=self.fsync,
            )
            os.replace(item.path, target)
            if self.fsync:
                fsync_dir(self.quarantine_root)
        except OSError as exc:
            raise StorageError(f"cannot move {item.stem} into quarantine: {exc.strerror}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.sidecar)
        self.budget.release_published(item.receipt.size_bytes)
        return target

    # -- recovery -------------------------------------------------------------------------

    def abandon_incoming(self, tag: str) -> int:
        """Delete the incoming files of a spool with this tag that is gone (never
        acknowledged); how many there were."""
        paths = list(self.incoming_dir.glob(f"rx-{tag}*.part"))
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()
        return len(paths)

    def published(self, tag: str) -> list[SpoolItem]:
        """The objects in spool/ a spool with this tag published, oldest first; touches nothing.

        For a receiving process that died: what it published but had not reported yet.
        """
        items: list[SpoolItem] = []
        for path in sorted(self.root.glob(f"*-{tag}*{OBJECT_SUFFIX}")):
            with contextlib.suppress(OSError, ValueError):
                receipt = Receipt.from_json(path.with_suffix(SIDECAR_SUFFIX).read_bytes())
                items.append(SpoolItem(path.stem, path, receipt))
        return items

    def recover(self) -> list[SpoolItem]:
        """Clean up after a crash and return the acknowledged objects left, oldest first.

        Deleted: incoming files (never acknowledged), temp files, sidecars without an
        object. An object whose sidecar is unreadable is moved aside to quarantine/ with a
        generated sidecar-less name, so it is never lost and never blocks start-up.
        """
        self.prepare()
        with self._lock:
            open_names = set(self._open)
        for path in self.incoming_dir.iterdir():
            if str(path) not in open_names:
                with contextlib.suppress(OSError):
                    path.unlink()
        items: list[SpoolItem] = []
        used = 0
        for path in sorted(self.root.iterdir()):
            if path.is_dir():
                continue
            half_done = path.name.startswith(".tmp-") or (
                path.suffix == SIDECAR_SUFFIX and not path.with_suffix(OBJECT_SUFFIX).exists()
            )
            if half_done:
                with contextlib.suppress(OSError):
                    path.unlink()
            elif path.suffix == OBJECT_SUFFIX:
                try:
                    receipt = Receipt.from_json(path.with_suffix(SIDECAR_SUFFIX).read_bytes())
                except (OSError, ValueError):
                    target = self.quarantine_root / ("nosidecar-" + path.name)
                    log.error(
                        "spool object %s has no readable sidecar: moved to %s", path.name, target
                    )
                    os.replace(path, target)
                    continue
                items.append(SpoolItem(path.stem, path, receipt))
                used += receipt.size_bytes
        with self._lock:
            self.budget.set(used, sum(f._reserved for f in self._open.values()))
        return items


def set_quarantine_reason(object_path: Path, reason: str, *, fsync: bool = False) -> None:
    """Record a new reason in a quarantined object's sidecar (after a retry failed again)."""
    sidecar_path = object_path.with_suffix(SIDECAR_SUFFIX)
    try:
        sidecar: dict[str, Any] = json.loads(sidecar_path.read_bytes())
    except (OSError, ValueError):
        sidecar = {}  # missing or damaged: the audit row is the record, rewrite what we know
    sidecar["reason"] = reason
    try:
        write_atomic(sidecar_path, [json.dumps(sidecar, sort_keys=True).encode()], fsync=fsync)
    except OSError as exc:
        raise StorageError(
            f"cannot update the quarantine sidecar of {object_path.stem}: {exc.strerror}"
        ) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)
