"""`deid-node users add | list | remove | token`: who may use the web console."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deid_node.cli.shared import (
    ConfigOption,
    errors_as_lines,
    fail,
    load,
    out,
    print_table,
    text_time,
)

if TYPE_CHECKING:
    from deid_node.audit.db import AuditDB

app = typer.Typer(help="Web console users and their API tokens.", no_args_is_help=True)


def _open(config: ConfigOption) -> AuditDB:
    from deid_node.audit.db import open_audit

    cfg = load(config)
    return open_audit(cfg.database_url)


@app.command("add")
@errors_as_lines
def add(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add a console user; the password is the first line of stdin, never an argument.

    Example: deid-node users add alice --password-stdin < password.txt
    """
    from deid_node.clock import now

    if not password_stdin:
        fail("give the password on stdin with --password-stdin (never as an argument)")
    password = sys.stdin.readline().rstrip("\r\n")
    with _open(config) as db:
        db.users.add(name, password, now())
    out.print(f"user {name} added", markup=False, highlight=False)


@app.command("list")
@errors_as_lines
def list_users(config: ConfigOption = None) -> None:
    """List console users.

    Example: deid-node users list
    """
    with _open(config) as db:
        users = db.users.list()
    table = Table("user", "created (UTC)", title="users")
    for user in users:
        table.add_row(user.name, text_time(user.created_at))
    print_table(table)


@app.command("remove")
@errors_as_lines
def remove(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Remove a console user and every API token of theirs.

    Example: deid-node users remove alice
    """
    with _open(config) as db:
        db.users.remove(name)
    out.print(f"user {name} removed", markup=False, highlight=False)


@app.command("token")
@errors_as_lines
def token(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Print a new API token for a user (shown once; only its hash is kept).

    Example: deid-node users token alice
    """
    from deid_node.clock import now

    with _open(config) as db:
        value = db.users.new_token(name, now())
    out.print(value, markup=False, highlight=False, soft_wrap=True)
