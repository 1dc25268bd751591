"""SQLite database URLs read without SQLAlchemy: which file one names, if any.

The one reading of an SQLite URL for config loading (relative paths), the CLI (a file
must exist before it is read) and the engine (memory, or a file to create). Config
loading and offline runs must not import SQLAlchemy, so this follows the grammar of
:func:`sqlalchemy.engine.make_url` by itself; ``tests/audit/test_url.py`` checks that the
two agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote

__all__ = ["sqlite_file", "sqlite_memory", "sqlite_url", "with_sqlite_file"]

# make_url's pattern, with only the parts deid-node reads named.
_URL: Final = re.compile(
    r"""
    (?P<scheme>[\w+]+)://
    (?:[^:/]*(?::[^@]*)?@)?
    (?:(?:\[[^/?]+\]|[^/:?]+)?(?::[^/?]*)?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.VERBOSE,
)


def _sqlite(url: str) -> re.Match[str] | None:
    match = _URL.match(url)
    if match is None or match["scheme"].split("+", 1)[0] != "sqlite":
        return None
    return match


def _database(match: re.Match[str]) -> str:
    return unquote(match["database"] or "")


def sqlite_memory(url: str) -> bool:
    """True for an SQLite URL of an in-memory database (as SQLAlchemy's pool choice sees it)."""
    match = _sqlite(url)
    if match is None:
        return False
    if _database(match) in ("", ":memory:"):
        return True
    return parse_qs(match["query"] or "").get("mode") == ["memory"]


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL, as the driver opens it (relative: to the cwd).

    None for other backends, in-memory databases and sqlite3 ``file:`` URIs (whose
    file the caller manages).
    """
    match = _sqlite(url)
    if match is None or sqlite_memory(url):
        return None
    database = _database(match)
    return None if database.startswith("file:") else Path(database)


def _quote(path: Path) -> str:
    # Only what would end the database part or be decoded: "%" first, then "?".
    return str(path).replace("%", "%25").replace("?", "%3F")


def sqlite_url(path: Path) -> str:
    """The SQLite URL of a database file."""
    return "sqlite:///" + _quote(path)


def with_sqlite_file(url: str, path: Path) -> str:
    """`url` naming another database file; driver, query and the rest kept as they are."""
    match = _sqlite(url)
    if match is None or match["database"] is None:
        raise ValueError("not an SQLite URL with a database part")
    start, end = match.span("database")
    return url[:start] + _quote(path) + url[end:]
