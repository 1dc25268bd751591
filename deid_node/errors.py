"""Named errors; every message is one line, names what is wrong and never carries PHI."""


class DeidNodeError(Exception):
    """Base of every error deid-node raises on purpose."""


class ConfigError(DeidNodeError):
    """The configuration file is missing, unreadable or invalid."""


class DeidError(DeidNodeError):
    """An object cannot be de-identified with certainty; it must be quarantined."""


class StorageError(DeidNodeError):
    """Output, spool or quarantine cannot be written."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        """`message` may name a file; `reason` (the system's, e.g. "No space left on
        device") names none: output paths are made of pseudonymous UIDs."""
        super().__init__(message)
        self.reason = reason


class AuditError(DeidNodeError):
    """The audit database cannot be opened, migrated or queried."""


class AuditUnavailable(AuditError):
    """The audit database is unreachable for now (refused or cut connection, a server
    restart, a serialization failure): the same write is expected to succeed later."""


def describe_error(exc: BaseException) -> str:
    """One line for a log: our errors' own message, else the type (and OS reason) only.

    Other exceptions' messages may quote data (paths, values), so they are left out.
    """
    if isinstance(exc, DeidNodeError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__
