"""`deid-node quarantine list | retry | purge`."""

from __future__ import annotations

from datetime import datetime
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
)

app = typer.Typer(
    rich_markup_mode=None,
    help="List, retry and purge objects the node could not de-identify with certainty.",
    no_args_is_help=True,
)

# --------------------------------------------------------------------------------------------
# quarantine list, retry, purge
#
# Quarantine files hold PHI; their paths are never printed (only audit ids and reasons).

IdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Audit ids, as `deid-node quarantine list` shows them.", show_default=False
    ),
]


def _parse_ids(ids: list[str] | None) -> list[int]:
    """Audit ids from the command line; one `Error:` line for anything else."""
    parsed: list[int] = []
    for text in ids or ():
        try:
            value = int(text.strip())
        except ValueError:
            value = 0
        if value < 1:
            fail(
                f"invalid id {text!r}: expected a positive number (see: deid-node quarantine list)"
            )
        if value not in parsed:
            parsed.append(value)
    return parsed


def _quarantine_time(value: datetime) -> str:
    """UTC ISO 8601 to the second, e.g. 2026-11-01T09:30:00Z."""
    from deid_node.audit.records import format_time

    return format_time(value)[:19] + "Z"


@app.command("list")
@errors_as_lines
def quarantine_list(
    config: ConfigOption = None,
    fmt: FormatOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """List quarantined objects still held, oldest first: id, received, calling AE, profile, reason.

    Example: deid-node quarantine list --format csv
    """
    from deid_node.ops.quarantine import list_quarantine

    chosen = chosen_format(fmt, as_json=as_json)
    cfg = load(config)
    with open_existing_audit(cfg) as db:
        entries = list_quarantine(db)
    rows = [
        {
            "id": e.id,
            "received_at": e.received_at,
            "calling_ae": e.calling_ae,
            "profile": e.profile,
            "reason": e.reason,
        }
        for e in entries
    ]

    def table() -> Table | None:
        if not entries:
            out.print("no quarantined objects", markup=False, highlight=False)
            return None
        built = Table("id", "received (UTC)", "calling AE", "profile", title="quarantine")
        built.add_column("reason", overflow="fold")
        for e in entries:
            built.add_row(
                str(e.id), _quarantine_time(e.received_at), e.calling_ae, e.profile, e.reason
            )
        return built

    emit(rows, chosen, table, ("id", "received_at", "calling_ae", "profile", "reason"))


@app.command("retry")
@errors_as_lines
def quarantine_retry(
    ids: IdsArgument = None,
    retry_all: Annotated[
        bool, typer.Option("--all", help="Retry every quarantined object.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run quarantined objects through their profile again, e.g. after fixing the profile.

    Exit status 1 if any object is still quarantined.

    Example: deid-node quarantine retry 17 18
    """
    from deid_node.deid.pipeline import Outcome
    from deid_node.deid.secret import load_secret
    from deid_node.object_status import Status
    from deid_node.ops.quarantine import list_quarantine, retry

    wanted = _parse_ids(ids)
    if bool(wanted) == retry_all:
        fail("say which objects to retry: IDs, or --all (not both)")
    cfg = load(config)
    with open_existing_audit(cfg) as db:
        held = {e.id: e for e in list_quarantine(db)}
        for object_id in wanted:
            if object_id not in held:
                fail(f"no quarantined object with id {object_id} (see: deid-node quarantine list)")
        chosen = [held[i] for i in wanted] if wanted else list(held.values())
        if not chosen:
            out.print("no quarantined objects", markup=False, highlight=False)
            return
        # Objects retry() would refuse are reported here, so the others still run.
        problems: dict[int, str] = {}
        for e in chosen:
            if e.profile not in cfg.profiles:
                problems[e.id] = f"profile '{e.profile}' is no longer configured"
            elif not e.path.exists():
                problems[e.id] = "its quarantine file is missing"
        runnable = [e.id for e in chosen if e.id not in problems]
        results: dict[int, Outcome] = {}
        if runnable:
            key = load_secret(cfg.node.secret_path, create=False)
            results = {e.id: o for e, o in retry(cfg, db, key, runnable)}
    counts = dict.fromkeys(("stored", "duplicate", "still quarantined"), 0)
    for e in chosen:
        outcome = results.get(e.id)
        if outcome is None:
            what, reason = "still quarantined", f"not retried: {problems[e.id]}"
        elif outcome.status in (Status.STORED, Status.DUPLICATE):
            what, reason = outcome.status, None
        else:
            what, reason = "still quarantined", outcome.reason or e.reason
        counts[what] += 1
        line = f"{e.id}: {what}" + (f": {reason}" if reason else "")
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    out.print(f"{len(chosen)} retried: {summary}", markup=False, highlight=False)
    if counts["still quarantined"]:
        raise typer.Exit(code=1)


@app.command("purge")
@errors_as_lines
def quarantine_purge(
    ids: IdsArgument = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            help="Purge every object received more than DAYS days ago.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Delete quarantined files (they hold PHI); their audit rows stay, marked as purged.

    Example: deid-node quarantine purge --older-than 30
    """
    from deid_node.ops.quarantine import purge

    wanted = _parse_ids(ids)
    if bool(wanted) == (older_than is not None):
        fail("say which objects to purge: IDs, or --older-than DAYS (not both)")
    cfg = load(config)
    with open_existing_audit(cfg) as db:
        gone = purge(db, wanted or None, older_than_days=older_than)
    out.print(f"{len(gone)} quarantined object(s) purged", markup=False, highlight=False)
