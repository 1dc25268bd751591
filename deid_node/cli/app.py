"""The `deid-node` command: a thin typer layer over the library, one module per group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
import typer.main

from deid_node.cli import audit, deidentify, forward, node, profiles, quarantine, users, web
from deid_node.cli.shared import out
from deid_node.logs import quiet_libraries

app = typer.Typer(
    rich_markup_mode=None,
    help="A DICOM node that de-identifies every object it receives (PS3.15 Annex E).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold PHI
    add_completion=False,
)
app.command("check-config")(node.check_config)
app.command("deidentify")(deidentify.deidentify)
app.command("serve")(node.serve)
app.add_typer(audit.app, name="audit")
app.command("export-csv")(audit.export_csv)
app.add_typer(profiles.app, name="profiles")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(forward.app, name="forward")
app.add_typer(users.app, name="users")
app.command("web")(web.web)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from deid_node import __version__

    parts = []
    for name in ("pydicom", "pynetdicom"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} missing")
    parts.append(f"Python {sys.version.split()[0]}")
    out.print(f"deid-node {__version__} ({', '.join(parts)})", markup=False, highlight=False)
    raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version (and pydicom's, pynetdicom's, Python's) and exit.",
        ),
    ] = False,
) -> None:
    """A DICOM node that de-identifies every object it receives (PS3.15 Annex E)."""


def main() -> None:
    """Console entry point: library errors become one `Error:` line and exit 1."""
    import warnings

    warnings.simplefilter("ignore")  # library warnings can quote dataset values
    quiet_libraries()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="deid-node", standalone_mode=False)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # A group called bare: its help, and nothing went wrong.
            context = getattr(exc, "ctx", None)
            print(context.get_help() if context is not None else str(exc))
            sys.exit(0)
        if not _is_usage_error(exc):
            raise
        # One line, as every other error: typer's boxed message (and its exit 2) does not
        # fit a script that greps for "Error:".
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        print(f"Error: {message} (see --help)", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, EOFError):
        print("Error: interrupted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: BaseException) -> bool:
    """Whether exc is click's UsageError (or one of its kinds: bad option, bad value,
    missing argument); click is vendored inside typer, so it is told by its name."""
    return any(kind.__name__ == "UsageError" for kind in type(exc).__mro__)
