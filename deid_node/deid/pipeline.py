"""One file in, one outcome out: read, de-identify, verify, write. No sockets, no SQL."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid_node.deid.burned_in import looks_at_pixels
from deid_node.deid.dataset import (
    DeidResult,
    Originals,
    deidentify_dataset,
)
from deid_node.deid.marks import mark_pixels
from deid_node.deid.profiles import CompiledProfile
from deid_node.deid.stream import StreamRefused, StreamUnsupported, deidentify_file
from deid_node.deid.verify import verify_clean
from deid_node.dicom.encoding import check_file
from deid_node.dicom.part10 import NotDicomError, encode_instance, read_dataset, read_header
from deid_node.dicom.pixel_bits import clear_dataset_pixels, pixel_element
from deid_node.dicom.repair import repair_file
from deid_node.durable import FileRange, write_atomic
from deid_node.errors import DeidError, StorageError
from deid_node.object_status import Status

if TYPE_CHECKING:
    from deid_node.pixels.release import PixelsAsSent

_SAFE_PART = re.compile(r"[^A-Za-z0-9._-]")
REPAIRED = "repaired"  # the reason of a stored object that was repaired first


def output_path(root: Path, profile: str, patient: str, study: str, series: str, sop: str) -> Path:
    """`<root>/<profile>/<patient>/<study>/<series>/<sop>.dcm` (pseudonyms only)."""
    parts = [_SAFE_PART.sub("_", p) or "_" for p in (profile, patient, study, series)]
    return root.joinpath(*parts, _SAFE_PART.sub("_", sop) + ".dcm")


@dataclass(frozen=True)
class Outcome:
    """What happened to one object; everything here is safe to log except `originals`."""

    status: Status
    reason: str | None = None
    size_bytes: int = 0
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    pseudo_patient_id: str | None = None
    pseudo_study_uid: str | None = None
    pseudo_series_uid: str | None = None
    pseudo_sop_uid: str | None = None
    output_path: Path | None = None
    originals: Originals | None = None
    pixels: str | None = None  # what was done to burned-in text (counts only), if anything


def deidentify_to_output(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    pixels: FileRange | None = None,
    source: Path | None = None,
    text_tags: frozenset[int] = frozenset(),
) -> tuple[DeidResult, Path, bool, str | None]:
    """De-identify ds and write it (pixel bytes copied from `pixels`, if given).

    `source` is the file ds was read from: with it, burned-in text is cleaned from the
    pixels where the profile says `clean`. Returns (result, path, was it already there,
    what was done to the pixels or None).
    """
    as_sent = None
    if source is not None and looks_at_pixels(profile.config, ds, True if pixels else None):
        from deid_node.pixels.release import pixels_as_sent  # numpy: only where pixels are cleaned

        as_sent = pixels_as_sent(ds, profile.config)  # region rules match on the header as sent
    result = deidentify_dataset(
        ds,
        profile,
        key,
        has_pixels=True if pixels else None,
        cleans_pixels=as_sent is not None,
        text_tags=text_tags,
    )
    target = _target(output_root, profile, result)
    body, cleared = _native_pixels(pixels, result)
    if pixels is None:
        cleared = clear_dataset_pixels(result.dataset, UID(result.transfer_syntax_uid))
    summary = BITS_CLEARED if cleared else None
    if result.pixels_to_clean:
        assert source is not None and as_sent is not None
        body, summary = _clean_pixels(result, source, as_sent, body)
        summary = f"{summary}; {BITS_CLEARED}" if cleared else summary

    def check(header: bytes) -> None:
        verify_clean(header, result.needles, result.dataset)

    try:
        chunks = encode_instance(result.dataset, check)
    except DeidError:
        raise
    except Exception as exc:
        raise DeidError(f"cannot encode the de-identified object ({type(exc).__name__})") from None
    # What follows the pixel data (chunks[1:]) goes after the cleaned pixel data.
    parts = itertools.chain(chunks[:1], body, chunks[1:])
    existed = write_atomic(target, parts, fsync=fsync)
    return result, target, existed, summary


BITS_CLEARED = "bits outside BitsStored cleared"


def _native_pixels(
    pixels: FileRange | None, result: DeidResult
) -> tuple[Iterable[bytes | FileRange], bool]:
    """The pixel data element as it came, but with no bit set outside BitsStored; whether
    any was."""
    if pixels is None:
        return [], False
    cleared = pixel_element(pixels, result.dataset, UID(result.transfer_syntax_uid))
    return ([pixels], False) if cleared is None else (cleared, True)


def _clean_pixels(
    result: DeidResult, source: Path, as_sent: PixelsAsSent, pixels: Iterable[bytes | FileRange]
) -> tuple[Iterable[bytes | FileRange], str]:
    """Look at the pixels, mark the header; what to write as the pixel data element."""
    from deid_node.pixels.release import plan_pixels, rewrite_header

    ds = result.dataset
    plan = plan_pixels(source, as_sent, check_only=result.pixels_check_only)
    if plan.found_text and result.pixels_check_only:
        r = plan.report
        raise DeidError(
            f"text-like content in the pixels ({r.regions} regions in frame {r.frames} "
            f"of {plan.layout.frames}); {result.pixels_reason}; profile policy is quarantine"
        )
    mark_pixels(ds, cleaned=plan.changed)
    if not plan.changed:
        return pixels, plan.summary
    before = ds.file_meta.TransferSyntaxUID
    after = rewrite_header(ds, plan)
    if (before.is_little_endian, before.is_implicit_VR) != (
        after.is_little_endian,
        after.is_implicit_VR,
    ):
        # Values still raw are in the old encoding; decoded, pydicom writes them anew.
        ds.walk(lambda _ds, _elem: None)
        ds.set_original_encoding(after.is_implicit_VR, after.is_little_endian)
    ds.file_meta.TransferSyntaxUID = after
    return plan.element(), plan.summary


def process_file(
    path: Path,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    check_encoding: bool = True,
) -> Outcome:
    """De-identify one file into the output layout; never raises for bad input.

    The strict encoding check runs on every file, also with `check_encoding=False` (a file
    that passed it before it was acknowledged): what it notes as repairable must be
    repaired before an engine reads the object. Checked objects go through the stream
    engine; what it does not handle, and repaired objects, through the dataset engine.
    """
    try:
        repairs = check_file(path).repairs
    except Exception:  # the dataset engine's path says why, in its own words
        return process_file_dataset(path, profile, key, output_root, fsync=fsync)
    if repairs:
        return _process_repaired(path, repairs, profile, key, output_root, fsync=fsync)
    try:
        return _process_stream(path, profile, key, output_root, fsync=fsync)
    except StreamUnsupported:
        return process_file_dataset(
            path, profile, key, output_root, fsync=fsync, check_encoding=False
        )


def _process_stream(
    path: Path,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool,
) -> Outcome:
    try:
        size = os.path.getsize(path)
        out = deidentify_file(path, profile, key)
    except OSError:
        raise StreamUnsupported from None  # the dataset engine reports it
    except StreamRefused as exc:
        return Outcome(
            Status.QUARANTINED,
            str(exc),
            size_bytes=size,
            sop_class_uid=exc.sop_class_uid,
            transfer_syntax_uid=exc.transfer_syntax_uid,
        )
    result = out.result
    try:
        # Everything but the pixel bytes is verified: the header and what follows the
        # pixel data. Only a hit needs the elements, so only then are they read back.
        written = out.header + out.trailer if out.trailer else out.header
        if result.needles.found_in(written):
            verify_clean(written, result.needles, out.written_dataset())
        target = _target(output_root, profile, result)
        pixels, cleared = _native_pixels(out.pixels, result)
        trailer = [out.trailer] if out.trailer else []
        existed = write_atomic(target, itertools.chain([out.header], pixels, trailer), fsync=fsync)
    except DeidError as exc:
        return _refused(str(exc), size, result)
    except StorageError:
        raise  # the node must stop acknowledging, not quarantine: output is broken
    except Exception as exc:  # fail closed on anything we did not foresee
        return _refused(f"internal error ({type(exc).__name__})", size, result)
    return _stored(result, target, existed, size, BITS_CLEARED if cleared else None)


def _refused(reason: str, size: int, result: DeidResult) -> Outcome:
    return Outcome(
        Status.QUARANTINED,
        reason,
        size_bytes=size,
        sop_class_uid=result.sop_class_uid,
        transfer_syntax_uid=result.transfer_syntax_uid,
    )


def _target(output_root: Path, profile: CompiledProfile, result: DeidResult) -> Path:
    return output_path(
        output_root,
        profile.name,
        result.pseudo_patient_id,
        result.pseudo_study_uid,
        result.pseudo_series_uid,
        result.pseudo_sop_uid,
    )


def _stored(
    result: DeidResult, target: Path, existed: bool, size: int, pixels: str | None = None
) -> Outcome:
    return Outcome(
        Status.DUPLICATE if existed else Status.STORED,
        None,
        size_bytes=size,
        sop_class_uid=result.sop_class_uid,
        transfer_syntax_uid=result.transfer_syntax_uid,
        pseudo_patient_id=result.pseudo_patient_id,
        pseudo_study_uid=result.pseudo_study_uid,
        pseudo_series_uid=result.pseudo_series_uid,
        pseudo_sop_uid=result.pseudo_sop_uid,
        output_path=target,
        originals=result.originals,
        pixels=pixels,
    )


def process_file_dataset(
    path: Path,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool = False,
    check_encoding: bool = True,
) -> Outcome:
    """De-identify one file with the dataset engine (pydicom read, walk and write).

    `check_encoding=False` skips the strict encoding check, for files that passed it.
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}")
    # The check before pydicom reads anything: what it would repair, pydicom must not read
    # as sent. A file it refuses is read below, so that what is no DICOM is skipped.
    repairs: tuple[str, ...] = ()
    checked = not check_encoding
    if check_encoding:
        with contextlib.suppress(Exception):
            repairs, checked = check_file(path).repairs, True
    if repairs:
        return _process_repaired(path, repairs, profile, key, output_root, fsync=fsync)
    try:
        ds, pixels = read_header(path)
        if not checked:
            check_file(path)  # refuses it again, with the reason
    except NotDicomError as exc:
        return Outcome(Status.SKIPPED, str(exc), size_bytes=size)
    except DeidError as exc:
        return Outcome(Status.QUARANTINED, str(exc), size_bytes=size)
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}", size_bytes=size)
    return process_dataset(
        ds, profile, key, output_root, size=size, fsync=fsync, pixels=pixels, source=path
    )


def _process_repaired(
    path: Path,
    notes: tuple[str, ...],
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    fsync: bool,
) -> Outcome:
    """Repair an object the check found repairable, then de-identify it in memory with
    the dataset engine; a stored outcome's reason lists the repairs (for the audit)."""
    try:
        size = os.path.getsize(path)
        repaired = repair_file(path, notes)
        ds = read_dataset(BytesIO(repaired.data))
    except DeidError as exc:
        return Outcome(Status.QUARANTINED, str(exc), size_bytes=_size(path))
    except OSError as exc:
        return Outcome(Status.QUARANTINED, f"cannot read file: {exc.strerror}")
    except Exception as exc:  # fail closed; the type names no value
        return Outcome(Status.QUARANTINED, f"cannot repair ({type(exc).__name__})", _size(path))
    # The pixels are looked at from a file: the repaired one, beside the original (the
    # spool's own folder, private to the node), gone once written.
    try:
        fd, name = tempfile.mkstemp(prefix=".repaired-", suffix=".dcm", dir=path.parent)
    except OSError:  # a read-only input folder (offline runs): a private file elsewhere
        fd, name = tempfile.mkstemp(prefix=".repaired-", suffix=".dcm")
    source = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(repaired.data)
        outcome = process_dataset(
            ds,
            profile,
            key,
            output_root,
            size=size,
            fsync=fsync,
            source=source,
            text_tags=repaired.text_tags,
        )
    finally:
        source.unlink(missing_ok=True)
    if outcome.status is Status.QUARANTINED:
        return outcome
    return replace(outcome, reason=f"{REPAIRED}: {'; '.join(notes)}")


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def process_dataset(
    ds: Dataset,
    profile: CompiledProfile,
    key: bytes,
    output_root: Path,
    *,
    size: int,
    fsync: bool = False,
    pixels: FileRange | None = None,
    source: Path | None = None,
    text_tags: frozenset[int] = frozenset(),
) -> Outcome:
    """De-identify an already-read dataset; quarantine outcome on any doubt.

    `source`: the file it was read from, which pixel cleaning reads its frames from.
    `text_tags`: attributes cleaned as free text wherever they are (engine.py).
    """
    sop_class = str(ds.get("SOPClassUID", "") or "") or None
    ts = None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        ts = str(meta.TransferSyntaxUID)
    try:
        result, target, existed, summary = deidentify_to_output(
            ds,
            profile,
            key,
            output_root,
            fsync=fsync,
            pixels=pixels,
            source=source,
            text_tags=text_tags,
        )
    except DeidError as exc:
        return Outcome(
            Status.QUARANTINED,
            str(exc),
            size_bytes=size,
            sop_class_uid=sop_class,
            transfer_syntax_uid=ts,
        )
    except StorageError:
        raise  # the node must stop acknowledging, not quarantine: output is broken
    except Exception as exc:  # fail closed on anything we did not foresee
        return Outcome(
            Status.QUARANTINED,
            f"internal error ({type(exc).__name__})",
            size_bytes=size,
            sop_class_uid=sop_class,
            transfer_syntax_uid=ts,
        )
    return _stored(result, target, existed, size, summary)
