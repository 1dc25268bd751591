"""A multipart upload streamed straight into a private folder: files never held whole
in memory, never in /tmp (they hold PHI), sizes bounded, the client's file names dropped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

__all__ = ["Upload", "UploadRefused", "receive"]

_MAX_FIELD: Final = 64 * 1024  # a text field (project, notes): more is refused


class _Part:
    """The part being parsed: a text field's bytes, or a file's handle."""

    def __init__(self) -> None:
        self.name = ""
        self.buffer: bytearray | None = None
        self.file: BinaryIO | None = None

    def reset(self) -> None:
        self.close()
        self.name, self.buffer = "", None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class UploadRefused(Exception):
    """The upload breaks a limit or is not multipart: the message says which (no values)."""


@dataclass
class Upload:
    """Text fields by name, and the files written (named by number, extension kept)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


async def receive(
    content_type: str,
    chunks: AsyncIterator[bytes],
    folder: Path,
    *,
    max_bytes: int,
    max_files: int,
) -> Upload:
    """Parse the body as it arrives, files into `folder` (0700)."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadRefused("expected multipart/form-data")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    upload = Upload()
    part = _Part()
    header = {"field": b"", "value": b""}
    headers: dict[bytes, bytes] = {}

    def on_part_begin() -> None:
        headers.clear()
        part.reset()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[header["field"].lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        _disposition, params = parse_options_header(headers.get(b"content-disposition", b""))
        part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is None:
            part.buffer = bytearray()
            return
        if len(upload.files) >= max_files:
            raise UploadRefused(f"more than {max_files} files")
        suffix = ".zip" if filename.lower().endswith(b".zip") else ".dcm"
        path = folder / f"{len(upload.files):06d}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        part.file = os.fdopen(fd, "wb")
        upload.files.append(path)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.file is not None:
            part.file.write(data[start:end])
        elif part.buffer is not None:
            part.buffer += data[start:end]
            if len(part.buffer) > _MAX_FIELD:
                raise UploadRefused(f"a form field is longer than {_MAX_FIELD} bytes")

    def on_part_end() -> None:
        if part.file is not None:
            part.close()
        elif part.buffer is not None:
            upload.fields[part.name] = part.buffer.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise UploadRefused(f"the upload is larger than {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        part.close()
        for path in upload.files:
            path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise UploadRefused("the multipart body is malformed") from None
        raise
    return upload
