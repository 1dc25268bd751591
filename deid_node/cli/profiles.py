"""`deid-node profiles list | show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from deid_node.cli.shared import (
    ConfigOption,
    FormatOption,
    chosen_format,
    emit,
    errors_as_lines,
    load,
)

app = typer.Typer(
    rich_markup_mode=None,
    help="List profiles and show their effective rules.",
    no_args_is_help=True,
)


@app.command("list")
@errors_as_lines
def profiles_list(config: ConfigOption = None, fmt: FormatOption = None) -> None:
    """List configured profiles with their options.

    Example: deid-node profiles list
    """
    chosen = chosen_format(fmt)
    cfg = load(config)
    rows: list[dict[str, object]] = []
    for name, prof in sorted(cfg.profiles.items()):
        users = [s.ae_title for s in cfg.sources if s.profile == name]
        if cfg.unknown_action == name:
            users.append("(unknown sources)")
        rows.append(
            {
                "profile": name,
                "options": sorted(o.value for o in prof.options),
                "burned_in": prof.burned_in_annotation.value,
                "linkage": prof.record_linkage,
                "used_by": users,
            }
        )

    def table() -> Table:
        built = Table("profile", "options", "burned-in", "linkage", "used by")
        for row in rows:
            options, users = row["options"], row["used_by"]
            assert isinstance(options, list) and isinstance(users, list)
            built.add_row(
                str(row["profile"]),
                ", ".join(options) or "(basic profile only)",
                str(row["burned_in"]),
                "yes" if row["linkage"] else "no",
                ", ".join(users) or "-",
            )
        return built  # AE titles may look like rich markup ("SC[/]WS"): printed as data

    emit(rows, chosen, table)


@app.command("show")
@errors_as_lines
def profiles_show(
    name: Annotated[str, typer.Argument(help="Profile name from the config.")],
    config: ConfigOption = None,
    fmt: FormatOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Same as --format csv.")] = False,
) -> None:
    """Show the effective action for every Table E.1-1 attribute under a profile.

    Example: deid-node profiles show research
    """
    from deid_node.deid.profiles import compile_profile, describe

    chosen = chosen_format(fmt, as_csv=as_csv)
    cfg = load(config)
    lines = describe(compile_profile(cfg.profile(name)))
    rows = [
        {
            "tag": ln.tag,
            "keyword": ln.keyword,
            "name": ln.name,
            "basic": ln.basic,
            "action": ln.op,
            "source": ln.source,
        }
        for ln in lines
    ]

    def table() -> Table:
        built = Table("tag", "keyword", "basic", "action", "from", title=f"profile {name}")
        for ln in lines:
            built.add_row(ln.tag, ln.keyword or ln.name, ln.basic, ln.op, ln.source)
        return built

    emit(rows, chosen, table)
