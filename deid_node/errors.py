"""Named errors; every message is one line, names what is wrong and never carries PHI."""


class DeidNodeError(Exception):
    """Base of every error deid-node raises on purpose."""


class ConfigError(DeidNodeError):
    """The configuration file is missing, unreadable or invalid."""


class DeidError(DeidNodeError):
    """An object cannot be de-identified with certainty; it must be quarantined."""


class StorageError(DeidNodeError):
    """Output, spool or quarantine cannot be written."""


class AuditError(DeidNodeError):
    """The audit database cannot be opened, migrated or queried."""
