"""The node's pseudonymisation key: 32 random bytes, created once, mode 0600."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from deid_node.errors import ConfigError

SECRET_ENV = "DEID_NODE_SECRET"
KEY_BYTES = 32


def load_secret(path: Path, *, create: bool = True) -> bytes:
    """$DEID_NODE_SECRET (hex) if set, else the key file, created if missing."""
    env = os.environ.get(SECRET_ENV)
    if env:
        try:
            key = bytes.fromhex(env.strip())
        except ValueError:
            raise ConfigError(f"{SECRET_ENV}: expected hex digits (64 for 32 bytes)") from None
        if len(key) < 16:
            raise ConfigError(f"{SECRET_ENV}: expected at least 16 bytes (32 hex digits)")
        return key
    if not path.exists() and not create:
        raise ConfigError(f"{path}: secret key missing (start the node once, or set {SECRET_ENV})")
    return key_file(path, "secret key")


def key_file(path: Path, what: str) -> bytes:
    """A private key file's bytes, made (32 random bytes, 0600) if missing.

    Written beside and linked into place, so two processes starting at once agree on one
    key and none ever reads a half-written one. Refused when others may read it.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(staged, path)
        staged.unlink()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: {what} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"fix with: chmod 600 {path}"
        )
    key = path.read_bytes()
    if len(key) < 16:
        raise ConfigError(f"{path}: {what} is too short ({len(key)} bytes, expected 32)")
    return key
