"""What every command shares: the consoles, --config, one-line errors, tables and JSON."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec

import typer
from rich.console import Console
from rich.table import Table

from deid_node.config import Config, load_config
from deid_node.errors import DeidNodeError

if TYPE_CHECKING:  # audit/db.py (SQLAlchemy) is imported by the commands that use it only:
    # `deidentify`, `profiles` and `check-config` start a third of a second sooner.
    from deid_node.audit.db import AuditDB


P = ParamSpec("P")
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $DEID_NODE_CONFIG, then config/deid-node.toml).",
        show_default=False,
    ),
]


def fail(message: str) -> NoReturn:
    """One `Error:` line on stderr, exit 1."""
    err.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def errors_as_lines(func: Callable[P, None]) -> Callable[P, None]:
    """Turn library errors into one `Error:` line and exit 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except DeidNodeError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted")

    return wrapper


def load(path: Path | None) -> Config:
    return load_config(path)


def open_existing_audit(cfg: Config) -> AuditDB:
    """Open the audit database for reading; an SQLite file must already exist."""
    from deid_node.audit.db import open_audit
    from deid_node.database_url import sqlite_file

    path = sqlite_file(cfg.database_url)
    if path is not None and not path.is_file():
        fail(
            f"audit database {path} not found: start the node first "
            "(deid-node serve) or check [database] url"
        )
    return open_audit(cfg.database_url)


@contextlib.contextmanager
def closed_after(
    rows: Iterator[dict[str, object]],
) -> Iterator[Iterator[dict[str, object]]]:
    """Close a streamed query (its connection) even when the reader stops early."""
    try:
        yield rows
    finally:
        close = getattr(rows, "close", None)
        if callable(close):
            close()


def print_table(table: Table) -> None:
    if not table.row_count:
        out.print("0 rows", markup=False, highlight=False)
        return
    # Piped output (no terminal) would be cut to 80 columns: UIDs need room.
    console = out if out.is_terminal else Console(width=240)
    # Cells are data (AE titles may hold "[/]"), never rich markup.
    console.print(table, markup=False, highlight=False)


def text_time(value: object) -> str:
    from deid_node.audit.records import format_time

    if isinstance(value, datetime):
        return format_time(value)[:19].replace("T", " ")
    return "" if value is None else str(value)


def _json_value(value: object) -> object:
    from deid_node.audit.records import format_time

    if isinstance(value, datetime):
        return format_time(value)
    return value


def write_json_array(rows: Iterable[Mapping[str, object]]) -> int:
    """Stream rows as one JSON array, an object per row, to stdout."""
    count = 0
    sys.stdout.write("[")
    for row in rows:
        sys.stdout.write(",\n" if count else "\n")
        sys.stdout.write(json.dumps({k: _json_value(v) for k, v in row.items()}))
        count += 1
    sys.stdout.write("\n]\n" if count else "]\n")
    return count
