"""The node's pseudonymisation key: 32 random bytes, created once, mode 0600."""

from __future__ import annotations

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
    if not path.exists():
        if not create:
            raise ConfigError(
                f"{path}: secret key missing (start the node once, or set {SECRET_ENV})"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: secret key is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"fix with: chmod 600 {path}"
        )
    key = path.read_bytes()
    if len(key) < 16:
        raise ConfigError(f"{path}: secret key is too short ({len(key)} bytes, expected 32)")
    return key
