"""`deid-node users add | list | remove | password | logout | token`: who may use the console."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deid_node.cli.shared import (
    ConfigOption,
    FormatOption,
    chosen_format,
    emit,
    errors_as_lines,
    fail,
    load,
    out,
    text_time,
)

if TYPE_CHECKING:
    from deid_node.audit.db import AuditDB

app = typer.Typer(
    rich_markup_mode=None, help="Web console users and their API tokens.", no_args_is_help=True
)


def _open(config: ConfigOption) -> AuditDB:
    from deid_node.audit.db import open_audit

    cfg = load(config)
    return open_audit(cfg.database_url)


PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


def _password(from_stdin: bool) -> str:
    if not from_stdin:
        fail("give the password on stdin with --password-stdin (never as an argument)")
    return sys.stdin.readline().rstrip("\r\n")


@app.command("add")
@errors_as_lines
def add(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Add a console user; the password is the first line of stdin, never an argument.

    Example: deid-node users add alice --password-stdin < password.txt
    """
    from deid_node.clock import now

    password = _password(password_stdin)
    with _open(config) as db:
        db.users.add(name, password, now())
        _note(db, name, "user_added")
    out.print(f"user {name} added", markup=False, highlight=False)


@app.command("list")
@errors_as_lines
def list_users(config: ConfigOption = None, fmt: FormatOption = None) -> None:
    """List console users.

    Example: deid-node users list --format csv
    """
    chosen = chosen_format(fmt)
    with _open(config) as db:
        users = db.users.list()

    def table() -> Table:
        built = Table("user", "created (UTC)", title="users")
        for user in users:
            built.add_row(user.name, text_time(user.created_at))
        return built

    rows = [{"user": u.name, "created_at": u.created_at} for u in users]
    emit(rows, chosen, table, ("user", "created_at"))


@app.command("remove")
@errors_as_lines
def remove(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Remove a console user, every API token of theirs, and so every session.

    Example: deid-node users remove alice
    """
    with _open(config) as db:
        db.users.remove(name)
        _note(db, name, "user_removed")
    out.print(f"user {name} removed", markup=False, highlight=False)


@app.command("password")
@errors_as_lines
def password(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Set a user's password (first line of stdin); every session of theirs ends, tokens stay.

    Example: deid-node users password alice --password-stdin < password.txt
    """
    new = _password(password_stdin)
    with _open(config) as db:
        db.users.set_password(name, new)
        _note(db, name, "password_changed")
    out.print(f"password of {name} changed; their sessions ended", markup=False, highlight=False)


@app.command("logout")
@errors_as_lines
def logout(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """End every console session of a user now (their API tokens stay; see users remove).

    Example: deid-node users logout alice
    """
    with _open(config) as db:
        db.users.end_sessions(name)
        _note(db, name, "sessions_ended")
    out.print(f"sessions of {name} ended", markup=False, highlight=False)


def _note(db: AuditDB, name: str, kind: str) -> None:
    from deid_node.clock import now

    db.users.record_event(now(), name, "(cli)", kind, "deid-node users")


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
