"""`deid-node audit` and `deid-node export-csv`: the audit database, read."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from deid_node.config import Config

if TYPE_CHECKING:  # audit/db.py (SQLAlchemy) is imported by the commands that use it only:
    # `deidentify`, `profiles` and `check-config` start a third of a second sooner.
    from deid_node.audit.db import AuditDB
    from deid_node.audit.records import Filters
from deid_node.cli.shared import (
    ConfigOption,
    Format,
    FormatOption,
    chosen_format,
    closed_after,
    err,
    errors_as_lines,
    fail,
    load,
    open_existing_audit,
    print_table,
    text_time,
    write_rows,
)

# --------------------------------------------------------------------------------------------
# serve, audit, export-csv

SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="Received at or after (ISO 8601; naive means UTC).", show_default=False
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        "--until", help="Received before (ISO 8601; naive means UTC).", show_default=False
    ),
]
CallingAeOption = Annotated[
    str | None, typer.Option("--calling-ae", help="Calling AE title.", show_default=False)
]
ProfileOption = Annotated[
    str | None, typer.Option("--profile", help="Profile name.", show_default=False)
]
StatusOption = Annotated[
    str | None,
    typer.Option(
        "--status", help="stored, quarantined, rejected or duplicate.", show_default=False
    ),
]
StudyOption = Annotated[
    str | None,
    typer.Option("--study", help="Pseudonymous StudyInstanceUID.", show_default=False),
]

NodeOption = Annotated[
    str | None,
    typer.Option("--node", help="The node ([node] name) it came through.", show_default=False),
]


def _filters(
    cfg: Config,
    since: str | None,
    until: str | None,
    calling_ae: str | None,
    profile: str | None,
    status: str | None,
    study: str | None,
    node: str | None = None,
) -> Filters:
    """The audit filters shared by `audit` and `export-csv`, checked against the config."""
    from deid_node.audit.records import parse_filters

    if profile is not None:
        cfg.profile(profile)  # ConfigError naming the configured profiles
    return parse_filters(since, until, calling_ae, profile, status, study, node)


JsonOption = Annotated[bool, typer.Option("--json", help="Same as --format json.")]
FullOption = Annotated[
    bool, typer.Option("--full", help="Tables show UIDs whole (else shortened to fit).")
]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most N rows.", show_default=False)
]
OutcomeOption = Annotated[
    str | None,
    typer.Option(
        "--outcome",
        help="released, aborted, closed, rejected, interrupted or open.",
        show_default=False,
    ),
]


_ALIASES = {"--objects": "objects", "--associations": "associations", "--forwards": "forwards"}
_NOT_FILTERS = ("--config", "-c", "--json", "--format", "-f", "--full", "--limit", "--help")


class _AuditGroup(TyperGroup):
    """`audit VIEW [filters]`; the older `audit [--objects|--associations|--forwards]` too.

    Scripts in the field call the flag forms, so they stay: a flag becomes its subcommand
    before parsing, and no flag means `studies`. A filter the view does not take, or two
    views at once, is one `Error:` line and exit 1 in either form, as it always was.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: click's Context
        return super().parse_args(ctx, self._as_subcommand(args))

    def _as_subcommand(self, args: list[str]) -> list[str]:
        alias_form = not args or args[0].startswith("-")
        if not alias_form:
            if args[0] not in self.commands:
                return args  # click names it: no such command
            view, rest = args[0], args[1:]
        elif "--help" in args and not _ALIASES.keys() & set(args):
            return args  # the group's own help
        else:
            flags = list(dict.fromkeys(a for a in self._options_in(args) if a in _ALIASES))
            if len(flags) > 1:
                fail("choose one of --objects, --associations and --forwards")
            view = _ALIASES[flags[0]] if flags else "studies"
            rest = [a for a in args if a not in _ALIASES]
        self._check_filters(view, rest, alias_form)
        return [view, *rest]

    @staticmethod
    def _options_in(args: list[str]) -> list[str]:
        """The option names given (click never takes a word starting with '-' as a value)."""
        names = []
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("-"):
                names.append(arg.split("=", 1)[0])
        return names

    def _check_filters(self, view: str, args: list[str], alias_form: bool) -> None:
        """Refuse a filter that belongs to another view, saying which views take it."""
        options = {
            name: [o for param in command.params for o in param.opts]
            for name, command in self.commands.items()
        }
        for given in self._options_in(args):
            if given in options[view]:
                continue
            if given in _ALIASES:
                fail(
                    f"{given} is the flag form of 'audit {_ALIASES[given]}': "
                    "use it without a subcommand"
                )
            owners = [name for name in self.commands if given in options[name]]
            if len(owners) == 1:
                fail(f"{given} applies to {_spelled(owners[0], alias_form)} only")
            if owners:
                filters = [o for o in options[view] if o not in _NOT_FILTERS]
                fail(
                    f"{given} does not apply to {_spelled(view, alias_form)} "
                    f"(use {', '.join(filters[:-1])} or {filters[-1]})"
                )
            # an option no view knows: click's own message


def _spelled(view: str, alias_form: bool) -> str:
    """A view as the user called it: `--associations`, or `audit associations`."""
    flag = {name: flag for flag, name in _ALIASES.items()}.get(view)
    return flag if alias_form and flag else f"audit {view}"


app = typer.Typer(rich_markup_mode=None, cls=_AuditGroup, no_args_is_help=False)


@app.callback()
def audit() -> None:
    """Show what the node received, newest first: per study, object, association or forward.

    `deid-node audit` alone lists studies. The older flags --objects, --associations and
    --forwards still work, as aliases of the subcommands.

    Example: deid-node audit objects --since 2026-11-01 --calling-ae CT_SCANNER --limit 5
    """


@app.command("studies")
@errors_as_lines
def studies(
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    profile: ProfileOption = None,
    status: StatusOption = None,
    study: StudyOption = None,
    node: NodeOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
    full: FullOption = False,
    limit: LimitOption = None,
) -> None:
    """One line per study, newest first: patient, sender, profile, counts per status.

    Objects that never got a study (quarantined or refused before de-identification) are
    summarised per association. `deid-node audit` alone does the same.

    Example: deid-node audit studies --since 2026-11-01 --calling-ae CT_SCANNER --limit 5
    """
    chosen = chosen_format(fmt, as_json=as_json)
    cfg = load(config)
    filters = _filters(cfg, since, until, calling_ae, profile, status, study, node)
    with open_existing_audit(cfg) as db:
        rows = db.study_summaries(filters, limit)
    if chosen is not Format.TABLE:
        write_rows((dataclasses.asdict(s) for s in rows), chosen)
        return
    uid = _uid_cell(full)
    table = Table(title="studies")
    table.add_column("study", overflow="fold")
    table.add_column("patient", overflow="fold")
    for name in ("calling AE", "profile", "node", "first (UTC)", "last (UTC)"):
        table.add_column(name)
    for name in ("stored", "quarantined", "duplicate", "rejected"):
        table.add_column(name, justify="right")
    for s in rows:
        study_cell = uid(s.pseudo_study_uid) or (
            f"- (association {s.association_id[:8]})" if s.association_id else "-"
        )
        table.add_row(
            study_cell,
            s.pseudo_patient_id or "-",
            s.calling_ae,
            s.profile,
            s.node or "-",
            text_time(s.first_received_at),
            text_time(s.last_received_at),
            str(s.stored),
            str(s.quarantined),
            str(s.duplicate),
            str(s.rejected),
        )
    print_table(table)


@app.command("objects")
@errors_as_lines
def objects(
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    profile: ProfileOption = None,
    status: StatusOption = None,
    study: StudyOption = None,
    node: NodeOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
    full: FullOption = False,
    limit: LimitOption = None,
) -> None:
    """One line per object, newest first, with its status and reason (alias: audit --objects).

    Example: deid-node audit objects --status quarantined --since 2026-11-01 --limit 20
    """
    chosen = chosen_format(fmt, as_json=as_json)
    uid = _uid_cell(full)
    cfg = load(config)
    filters = _filters(cfg, since, until, calling_ae, profile, status, study, node)
    with (
        open_existing_audit(cfg) as db,
        closed_after(db.iter_objects(filters, limit, newest_first=True)) as rows,
    ):
        if chosen is not Format.TABLE:
            write_rows(rows, chosen)
            return
        table = Table(
            "id", "received (UTC)", "calling AE", "profile", "node", "status", title="objects"
        )
        table.add_column("study", overflow="fold")
        table.add_column("SOP instance", overflow="fold")
        table.add_column("reason", overflow="fold")
        for row in rows:
            table.add_row(
                str(row["id"]),
                text_time(row["received_at"]),
                str(row["calling_ae"]),
                str(row["profile"]),
                text_time(row["node"]) or "-",
                str(row["status"]),
                uid(row["pseudo_study_uid"]),
                uid(row["pseudo_sop_uid"]),
                text_time(row["reason"]),
            )
    print_table(table)


@app.command("associations")
@errors_as_lines
def associations(
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    outcome: OutcomeOption = None,
    node: NodeOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
    full: FullOption = False,
    limit: LimitOption = None,
) -> None:
    """Every association, newest first, rejected ones included, with the reason.

    Alias: audit --associations.

    Example: deid-node audit associations --outcome rejected --since 2026-11-01
    """
    chosen = chosen_format(fmt, as_json=as_json)
    cfg = load(config)
    _audit_associations(cfg, since, until, calling_ae, outcome, node, chosen, limit)


@app.command("forwards")
@errors_as_lines
def forwards(
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    profile: ProfileOption = None,
    status: StatusOption = None,
    study: StudyOption = None,
    node: NodeOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
    full: FullOption = False,
    limit: LimitOption = None,
) -> None:
    """One line per object and destination: state, attempts, sent at, last error.

    The filters choose the objects (alias: audit --forwards).

    Example: deid-node audit forwards --calling-ae CT_SCANNER --limit 20
    """
    chosen = chosen_format(fmt, as_json=as_json)
    cfg = load(config)
    filters = _filters(cfg, since, until, calling_ae, profile, status, study, node)
    _audit_forwards(cfg, filters, chosen, limit, full)


def _audit_forwards(
    cfg: Config, filters: Filters, chosen: Format, limit: int | None, full: bool = False
) -> None:
    """`audit --forwards`: every forward job of the matching objects, in job order."""
    with (
        open_existing_audit(cfg) as db,
        closed_after(db.outbox.iter_jobs(filters, limit=limit)) as rows,
    ):
        if chosen is not Format.TABLE:
            write_rows(rows, chosen)
            return
        uid = _uid_cell(full)
        table = Table("object", "received (UTC)", "destination", "state", title="forwards")
        table.add_column("attempts", justify="right")
        table.add_column("sent (UTC)")
        table.add_column("SOP instance", overflow="fold")
        table.add_column("last error", overflow="fold")
        for row in rows:
            table.add_row(
                str(row["object_id"]),
                text_time(row["received_at"]),
                str(row["destination"]),
                str(row["state"]),
                str(row["attempts"]),
                text_time(row["sent_at"]),
                uid(row["pseudo_sop_uid"]),
                text_time(row["last_error"]),
            )
    print_table(table)


def _audit_associations(
    cfg: Config,
    since: str | None,
    until: str | None,
    calling_ae: str | None,
    outcome: str | None,
    node: str | None,
    chosen: Format,
    limit: int | None,
) -> None:
    """`audit --associations`: every association, accepted or rejected, newest first."""
    from deid_node.audit.records import parse_association_filters

    filters = parse_association_filters(since, until, calling_ae, outcome, node)
    with (
        open_existing_audit(cfg) as db,
        closed_after(db.iter_associations(filters, limit)) as rows,
    ):
        if chosen is not Format.TABLE:
            write_rows(rows, chosen)
            return
        table = Table(
            "association",
            "started (UTC)",
            "ended (UTC)",
            "peer",
            "calling AE",
            "called AE",
            "node",
            title="associations",
        )
        table.add_column("objects", justify="right")
        table.add_column("outcome")
        table.add_column("reason", overflow="fold")
        for row in rows:
            table.add_row(
                str(row["id"])[:8],
                text_time(row["started_at"]),
                text_time(row["ended_at"]),
                str(row["peer_address"]),
                str(row["calling_ae"]),
                str(row["called_ae"]),
                text_time(row["node"]) or "-",
                str(row["objects"]),
                text_time(row["outcome"]) or "open",
                text_time(row["reason"]),
            )
    print_table(table)


UID_HEAD, UID_TAIL = 10, 8  # a shortened UID: enough to tell two apart, and to search by


def _uid_cell(full: bool) -> Callable[[object], str]:
    """How a table shows a UID: whole with --full, else its start and end (a 64-character
    UID folds over seven lines of a 100-column terminal)."""

    def cell(value: object) -> str:
        text = text_time(value)
        if full or len(text) <= UID_HEAD + UID_TAIL + 1:
            return text
        return f"{text[:UID_HEAD]}…{text[-UID_TAIL:]}"

    return cell


@errors_as_lines
def export_csv(
    config: ConfigOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE instead of stdout.", show_default=False),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    profile: ProfileOption = None,
    status: StatusOption = None,
    study: StudyOption = None,
    node: NodeOption = None,
    linkage: Annotated[
        bool,
        typer.Option("--linkage", help="Export the linkage table (original identifiers: PHI)."),
    ] = False,
    forwards: Annotated[
        bool,
        typer.Option(
            "--forwards", help="Export the forward jobs: one row per object and destination."
        ),
    ] = False,
    lf: Annotated[
        bool,
        typer.Option("--lf", help="End lines with LF (Unix tools) instead of RFC 4180's CRLF."),
    ] = False,
) -> None:
    """Export audit rows as RFC 4180 CSV with a header, streamed to stdout or --output.

    Example: deid-node export-csv --since 2026-11-01 --status stored --output audit.csv
    """
    from deid_node.audit.export import write_csv
    from deid_node.audit.outbox import FORWARD_COLUMNS
    from deid_node.audit.schema import LINKAGE_COLUMNS, OBJECT_COLUMNS

    if linkage and forwards:
        fail("choose one of --linkage and --forwards")
    cfg = load(config)
    filters = _filters(cfg, since, until, calling_ae, profile, status, study, node)
    columns = LINKAGE_COLUMNS if linkage else FORWARD_COLUMNS if forwards else OBJECT_COLUMNS
    line_end = "\n" if lf else "\r\n"
    with open_existing_audit(cfg) as db:
        if linkage:
            _explain_linkage(cfg, db, profile)
            where = str(output) if output is not None else "this output"
            err.print(
                f"Warning: {where} holds PHI (original patient IDs, names and UIDs): "
                "protect it like the source images and delete it when done.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if linkage:
            rows = db.iter_linkage(filters)
        elif forwards:
            rows = db.outbox.iter_jobs(filters)
        else:
            rows = db.iter_objects(filters)
        with closed_after(rows):
            if output is None:
                write_csv(rows, columns, sys.stdout, line_end=line_end)
                sys.stdout.flush()
                return
            try:
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror}")
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                count = write_csv(rows, columns, fh, line_end=line_end)
    err.print(f"{count} row(s) written to {output}", markup=False, highlight=False)


def _note(message: str) -> None:
    err.print(f"Note: {message}", markup=False, highlight=False, soft_wrap=True)


def _explain_linkage(cfg: Config, db: AuditDB, profile: str | None) -> None:
    """Say why a linkage export may come out empty; refuse a profile that never had any."""
    from deid_node.audit.records import Filters

    if profile is None:
        if not any(p.record_linkage for p in cfg.profiles.values()):
            _note(
                "no configured profile has record_linkage = true, so no linkage is being "
                "recorded; only rows recorded earlier are exported "
                "(set profiles.NAME.record_linkage = true to record it)"
            )
        return
    if cfg.profile(profile).record_linkage:
        return
    with closed_after(db.iter_linkage(Filters(profile=profile), limit=1)) as rows:
        recorded_before = next(rows, None) is not None
    if not recorded_before:
        fail(
            f"profile '{profile}' has record_linkage = false, so its objects have no linkage "
            f"rows: set profiles.{profile}.record_linkage = true to record them from then on"
        )
    _note(
        f"profile '{profile}' has record_linkage = false: only rows recorded before it was "
        "turned off are exported"
    )
