"""What every command shares: the consoles, --config, one-line errors, tables and JSON."""

from __future__ import annotations

import contextlib
import csv
import enum
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


class Format(enum.StrEnum):
    """How a listing is printed."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


FormatOption = Annotated[
    Format | None,
    typer.Option(
        "--format",
        "-f",
        help="table (default: fits the terminal), csv (a header row, then one row per "
        "line) or json (an array of objects).",
        case_sensitive=False,
        show_default=False,
    ),
]


def chosen_format(fmt: Format | None, *, as_json: bool = False, as_csv: bool = False) -> Format:
    """--format, or the older --json / --csv flag it replaces; both given must agree."""
    older = Format.JSON if as_json else Format.CSV if as_csv else None
    if as_json and as_csv:
        fail("--json and --csv exclude each other (use --format)")
    if fmt is not None and older is not None and fmt is not older:
        fail(f"--{older.value} and --format {fmt.value} disagree")
    return fmt or older or Format.TABLE


def write_csv_rows(rows: Iterable[Mapping[str, object]], columns: Sequence[str] = ()) -> int:
    """Rows as CSV on stdout: a header (the first row's keys, or `columns`), then values
    (times in ISO 8601 UTC, several values joined by a backslash as DICOM writes them)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    count = 0
    header = list(columns)
    if header:
        writer.writerow(header)
    for row in rows:
        if not header:
            header = list(row)
            writer.writerow(header)
        writer.writerow([_csv_value(row.get(k)) for k in header])
        count += 1
    return count


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value)
    return str(_json_value(value))


def emit(
    rows: Sequence[Mapping[str, object]],
    fmt: Format,
    table: Callable[[], Table | None],
    columns: Sequence[str] = (),
) -> None:
    """A listing in the chosen format; `table` builds the rich table (None: say why
    there is none); `columns`: the CSV header, also when there is no row."""
    if fmt is Format.TABLE:
        built = table()
        if built is not None:
            print_table(built)
    else:
        write_rows(rows, fmt, columns)


def write_rows(
    rows: Iterable[Mapping[str, object]], fmt: Format, columns: Sequence[str] = ()
) -> None:
    """Rows, streamed, as JSON or CSV (`fmt` is not TABLE)."""
    if fmt is Format.JSON:
        write_json_array(rows)
    else:
        write_csv_rows(rows, columns)
