"""`deid-node profiles list | show`."""

from __future__ import annotations

import csv
import sys
from typing import Annotated

import typer
from rich.table import Table

from deid_node.cli.shared import ConfigOption, errors_as_lines, load, print_table

app = typer.Typer(
    rich_markup_mode=None,
    help="List profiles and show their effective rules.",
    no_args_is_help=True,
)


@app.command("list")
@errors_as_lines
def profiles_list(config: ConfigOption = None) -> None:
    """List configured profiles with their options.

    Example: deid-node profiles list
    """
    cfg = load(config)
    table = Table("profile", "options", "burned-in", "linkage", "used by")
    for name, prof in sorted(cfg.profiles.items()):
        users = [s.ae_title for s in cfg.sources if s.profile == name]
        if cfg.unknown_action == name:
            users.append("(unknown sources)")
        table.add_row(
            name,
            ", ".join(sorted(o.value for o in prof.options)) or "(basic profile only)",
            prof.burned_in_annotation.value,
            "yes" if prof.record_linkage else "no",
            ", ".join(users) or "-",
        )
    print_table(table)  # AE titles may look like rich markup ("SC[/]WS"): print them as data


@app.command("show")
@errors_as_lines
def profiles_show(
    name: Annotated[str, typer.Argument(help="Profile name from the config.")],
    config: ConfigOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
) -> None:
    """Show the effective action for every Table E.1-1 attribute under a profile.

    Example: deid-node profiles show research
    """
    from deid_node.deid.profiles import compile_profile, describe

    cfg = load(config)
    lines = describe(compile_profile(cfg.profile(name)))
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["tag", "keyword", "name", "basic", "action", "source"])
        for ln in lines:
            writer.writerow([ln.tag, ln.keyword, ln.name, ln.basic, ln.op, ln.source])
        return
    table = Table("tag", "keyword", "basic", "action", "from", title=f"profile {name}")
    for ln in lines:
        table.add_row(ln.tag, ln.keyword or ln.name, ln.basic, ln.op, ln.source)
    print_table(table)
