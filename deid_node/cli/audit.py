"""`deid-node audit` and `deid-node export-csv`: the audit database, read."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deid_node.config import Config

if TYPE_CHECKING:  # audit/db.py (SQLAlchemy) is imported by the commands that use it only:
    # `deidentify`, `profiles` and `check-config` start a third of a second sooner.
    from deid_node.audit.db import AuditDB
    from deid_node.audit.records import Filters
from deid_node.cli.shared import (
    ConfigOption,
    closed_after,
    err,
    errors_as_lines,
    fail,
    load,
    open_existing_audit,
    print_table,
    text_time,
    write_json_array,
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


def _filters(
    cfg: Config,
    since: str | None,
    until: str | None,
    calling_ae: str | None,
    profile: str | None,
    status: str | None,
    study: str | None,
) -> Filters:
    """The audit filters shared by `audit` and `export-csv`, checked against the config."""
    from deid_node.audit.records import parse_filters

    if profile is not None:
        cfg.profile(profile)  # ConfigError naming the configured profiles
    return parse_filters(since, until, calling_ae, profile, status, study)


@errors_as_lines
def audit_command(
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    calling_ae: CallingAeOption = None,
    profile: ProfileOption = None,
    status: StatusOption = None,
    study: StudyOption = None,
    objects: Annotated[
        bool, typer.Option("--objects", help="One line per object instead of per study.")
    ] = False,
    associations: Annotated[
        bool,
        typer.Option(
            "--associations",
            help="One line per association, rejected ones included, instead of per study.",
        ),
    ] = False,
    forwards: Annotated[
        bool,
        typer.Option(
            "--forwards",
            help="One line per object and destination: state, attempts, last error, sent at.",
        ),
    ] = False,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            help="With --associations: released, aborted, closed, rejected, interrupted or open.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array, one object per row, for scripts.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most N rows.", show_default=False)
    ] = None,
) -> None:
    """Show what the node received, newest first: one line per study, object or association.

    Objects that never got a study (quarantined or refused before de-identification) are
    summarised per association.

    Example: deid-node audit --since 2026-11-01 --calling-ae CT_SCANNER --objects --limit 5
    """
    if objects + associations + forwards > 1:
        fail("choose one of --objects, --associations and --forwards")
    if outcome is not None and not associations:
        fail("--outcome applies to --associations only (objects have --status)")
    cfg = load(config)
    if associations:
        for name, value in (("--profile", profile), ("--status", status), ("--study", study)):
            if value is not None:
                fail(
                    f"{name} does not apply to --associations (use --since, --until, "
                    "--calling-ae or --outcome)"
                )
        _audit_associations(cfg, since, until, calling_ae, outcome, as_json, limit)
        return
    filters = _filters(cfg, since, until, calling_ae, profile, status, study)
    if forwards:
        _audit_forwards(cfg, filters, as_json, limit)
        return
    with open_existing_audit(cfg) as db:
        if objects:
            with closed_after(db.iter_objects(filters, limit, newest_first=True)) as rows:
                if as_json:
                    write_json_array(rows)
                    return
                table = Table(
                    "id", "received (UTC)", "calling AE", "profile", "status", title="objects"
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
                        str(row["status"]),
                        text_time(row["pseudo_study_uid"]),
                        text_time(row["pseudo_sop_uid"]),
                        text_time(row["reason"]),
                    )
            print_table(table)
            return
        studies = db.study_summaries(filters, limit)
    if as_json:
        write_json_array(dataclasses.asdict(s) for s in studies)
        return
    table = Table(title="studies")
    table.add_column("study", overflow="fold")
    table.add_column("patient", overflow="fold")
    for name in ("calling AE", "profile", "first (UTC)", "last (UTC)"):
        table.add_column(name)
    for name in ("stored", "quarantined", "duplicate", "rejected"):
        table.add_column(name, justify="right")
    for s in studies:
        study_cell = s.pseudo_study_uid or (
            f"- (association {s.association_id[:8]})" if s.association_id else "-"
        )
        table.add_row(
            study_cell,
            s.pseudo_patient_id or "-",
            s.calling_ae,
            s.profile,
            text_time(s.first_received_at),
            text_time(s.last_received_at),
            str(s.stored),
            str(s.quarantined),
            str(s.duplicate),
            str(s.rejected),
        )
    print_table(table)


def _audit_forwards(cfg: Config, filters: Filters, as_json: bool, limit: int | None) -> None:
    """`audit --forwards`: every forward job of the matching objects, in job order."""
    with (
        open_existing_audit(cfg) as db,
        closed_after(db.outbox.iter_jobs(filters, limit=limit)) as rows,
    ):
        if as_json:
            write_json_array(rows)
            return
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
                text_time(row["pseudo_sop_uid"]),
                text_time(row["last_error"]),
            )
    print_table(table)


def _audit_associations(
    cfg: Config,
    since: str | None,
    until: str | None,
    calling_ae: str | None,
    outcome: str | None,
    as_json: bool,
    limit: int | None,
) -> None:
    """`audit --associations`: every association, accepted or rejected, newest first."""
    from deid_node.audit.records import parse_association_filters

    filters = parse_association_filters(since, until, calling_ae, outcome)
    with (
        open_existing_audit(cfg) as db,
        closed_after(db.iter_associations(filters, limit)) as rows,
    ):
        if as_json:
            write_json_array(rows)
            return
        table = Table(
            "association",
            "started (UTC)",
            "ended (UTC)",
            "peer",
            "calling AE",
            "called AE",
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
                str(row["objects"]),
                text_time(row["outcome"]) or "open",
                text_time(row["reason"]),
            )
    print_table(table)


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
    filters = _filters(cfg, since, until, calling_ae, profile, status, study)
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
