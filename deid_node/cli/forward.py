"""`deid-node forward status | retry | purge`: the outbox of jobs to destinations."""

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
    fail,
    load,
    open_existing_audit,
    out,
    text_time,
)
from deid_node.config import Config

app = typer.Typer(
    rich_markup_mode=None, help="The forwarding outbox: jobs per destination.", no_args_is_help=True
)

DestinationOption = Annotated[
    str | None,
    typer.Option("--destination", help="Only this destination.", show_default=False),
]


def _check_destination(cfg: Config, name: str | None) -> None:
    if name is not None and name not in cfg.destinations:
        known = ", ".join(sorted(cfg.destinations)) or "none"
        fail(f"unknown destination '{name}'; configured destinations: {known}")


@app.command("status")
@errors_as_lines
def status(
    config: ConfigOption = None,
    fmt: FormatOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Jobs per destination: pending, in flight, sent, failed, and the oldest pending.

    Example: deid-node forward status --format json
    """
    chosen = chosen_format(fmt, as_json=as_json)
    cfg = load(config)
    with open_existing_audit(cfg) as db:
        counts = {c.destination: c for c in db.outbox.counts()}
    from deid_node.audit.outbox import DestinationCounts

    names = sorted(set(cfg.destinations) | set(counts))
    rows = [
        {
            "destination": name,
            "configured": name in cfg.destinations,
            "pending": c.pending,
            "in_flight": c.in_flight,
            "sent": c.sent,
            "failed": c.failed,
            "oldest_pending": c.oldest_pending,
        }
        for name in names
        for c in [counts.get(name) or DestinationCounts(name)]
    ]

    def table() -> Table:
        built = Table("destination", title="forwarding")
        for column in ("pending", "in flight", "sent", "failed"):
            built.add_column(column, justify="right")
        built.add_column("oldest pending (UTC)")
        for row in rows:
            name = str(row["destination"]) + ("" if row["configured"] else " (not configured)")
            built.add_row(
                name,
                *(str(row[k]) for k in ("pending", "in_flight", "sent", "failed")),
                text_time(row["oldest_pending"]) or "-",
            )
        return built

    emit(rows, chosen, table)


@app.command("retry")
@errors_as_lines
def retry(
    config: ConfigOption = None,
    destination: DestinationOption = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Queue failed jobs again (attempts start over).")
    ] = False,
) -> None:
    """Make waiting jobs due now; with --failed, queue failed ones again.

    A running node sends them within a second.

    Example: deid-node forward retry --destination research_pacs --failed
    """
    from deid_node.clock import now

    cfg = load(config)
    _check_destination(cfg, destination)
    with open_existing_audit(cfg) as db:
        count = db.outbox.retry(now(), destination, failed=failed)
    what = "failed" if failed else "pending"
    out.print(f"{count} job(s) {what} before, due now", markup=False, highlight=False)


@app.command("purge")
@errors_as_lines
def purge(config: ConfigOption = None, destination: DestinationOption = None) -> None:
    """Delete failed jobs from the outbox (the objects and their output stay).

    Example: deid-node forward purge --destination research_pacs
    """
    cfg = load(config)
    _check_destination(cfg, destination)
    with open_existing_audit(cfg) as db:
        count = db.outbox.purge(destination)
    out.print(f"{count} failed job(s) purged", markup=False, highlight=False)
