"""The `deid-node` command: a thin typer layer over the library."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from deid_node.config import Config, load_config
from deid_node.errors import DeidNodeError
from deid_node.logs import quiet_libraries

if TYPE_CHECKING:  # audit/db.py (SQLAlchemy) is imported by the commands that use it only:
    # `deidentify`, `profiles` and `check-config` start a third of a second sooner.
    from deid_node.audit.db import AuditDB
    from deid_node.audit.records import Filters

app = typer.Typer(
    help="A DICOM node that de-identifies every object it receives (PS3.15 Annex E).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold PHI
    add_completion=False,
)
profiles_app = typer.Typer(
    help="List profiles and show their effective rules.", no_args_is_help=True
)
app.add_typer(profiles_app, name="profiles")
quarantine_app = typer.Typer(
    help="List, retry and purge objects the node could not de-identify with certainty.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


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


def _config(path: Path | None) -> Config:
    return load_config(path)


@app.command("check-config")
@errors_as_lines
def check_config(config: ConfigOption = None) -> None:
    """Validate the config file (the data and output folders must be writable), summarise it.

    Example: deid-node check-config --config config/deid-node.toml
    """
    from deid_node.durable import check_writable

    cfg = _config(config)
    node = cfg.node
    check_writable(node.data_dir, "node.data_dir")
    check_writable(node.output, "node.output_dir")
    out.print(
        f"OK: {cfg.path}: AE title {node.ae_title} on {node.host}:{node.port}, "
        f"{len(cfg.sources)} source(s), {len(cfg.profiles)} profile(s), "
        f"unknown sources: {cfg.unknown_action}",
        markup=False,
        highlight=False,
    )
    for src in cfg.sources:
        hosts = ", ".join(str(h) for h in src.hosts) or "any host"
        out.print(
            f"  {src.ae_title} -> {src.profile} ({hosts})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@profiles_app.command("list")
@errors_as_lines
def profiles_list(config: ConfigOption = None) -> None:
    """List configured profiles with their options.

    Example: deid-node profiles list
    """
    cfg = _config(config)
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
    out.print(table)


@profiles_app.command("show")
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

    cfg = _config(config)
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
    out.print(table)


@app.command()
@errors_as_lines
def deidentify(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM files or folders (searched recursively).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile name.")],
    config: ConfigOption = None,
    workers: Annotated[int, typer.Option(help="Worker processes (0 = CPU count).", min=0)] = 0,
    report: Annotated[
        Path | None,
        typer.Option(help="Write path,status,reason per file to this CSV (it names your files)."),
    ] = None,
) -> None:
    """De-identify files into OUTPUT/<profile>/<patient>/<study>/<series>/<sop>.dcm.

    A profile with record_linkage also writes linkage rows (and their audit rows, calling AE
    "(offline)") into the config's audit database.

    Example: deid-node deidentify scans/ --output deid/ --profile research
    """
    from deid_node.deid.secret import load_secret
    from deid_node.runtime.offline import deidentify_paths, iter_files

    cfg = _config(config)
    prof = cfg.profile(profile)
    for p in paths:
        if not p.exists():
            fail(f"{p}: no such file or folder")
    key = load_secret(cfg.node.secret_path)
    files = list(iter_files(paths))
    if not files:
        fail("no files found under the given paths")
    with contextlib.ExitStack() as stack:
        record = None
        if prof.record_linkage:  # SQLAlchemy only for the profiles that need it
            from deid_node.audit.db import open_audit
            from deid_node.runtime.linkage import OfflineLinkage

            # Opened before the first file: a database that cannot be written stops the
            # run before any output exists without its linkage.
            linkage = OfflineLinkage(open_audit(cfg.database_url), prof.name)
            record = stack.enter_context(linkage).add
        bar = stack.enter_context(
            Progress(
                TextColumn("de-identifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            )
        )
        task = bar.add_task("files", total=len(files))
        summary = deidentify_paths(
            files,
            prof,
            key,
            output,
            workers=workers,
            progress=lambda n: bar.advance(task, n),
            record=record,
        )
    counts = summary.counts
    out.print(
        f"{len(files)} file(s): {counts['stored']} written, {counts['duplicate']} duplicate, "
        f"{counts['quarantined']} quarantined, {counts['skipped']} skipped (not DICOM)",
        markup=False,
        highlight=False,
    )
    for reason, n in sorted(summary.reasons.items()):
        out.print(f"  {n} x {reason}", markup=False, highlight=False, soft_wrap=True)
    if report is not None:
        with report.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "status", "reason", "output"])
            for path, o in summary.report:
                writer.writerow([path, o.status, o.reason or "", o.output_path or ""])
    if summary.failed:
        raise typer.Exit(code=1)


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
    from deid_node.audit.records import Filters, parse_time

    if profile is not None:
        cfg.profile(profile)  # ConfigError naming the configured profiles
    return Filters(
        since=parse_time(since) if since is not None else None,
        until=parse_time(until) if until is not None else None,
        calling_ae=calling_ae,
        profile=profile,
        status=status.strip().lower() if status is not None else None,
        study=study,
    )


def _open_existing_audit(cfg: Config) -> AuditDB:
    """Open the audit database for reading; an SQLite file must already exist."""
    from deid_node.audit.db import open_audit
    from deid_node.audit.url import sqlite_file

    path = sqlite_file(cfg.database_url)
    if path is not None and not path.is_file():
        fail(
            f"audit database {path} not found: start the node first "
            "(deid-node serve) or check [database] url"
        )
    return open_audit(cfg.database_url)


@contextlib.contextmanager
def _closed_after(
    rows: Iterator[dict[str, object]],
) -> Iterator[Iterator[dict[str, object]]]:
    """Close a streamed query (its connection) even when the reader stops early."""
    try:
        yield rows
    finally:
        close = getattr(rows, "close", None)
        if callable(close):
            close()


def _print_table(table: Table) -> None:
    if not table.row_count:
        out.print("0 rows", markup=False, highlight=False)
        return
    # Piped output (no terminal) would be cut to 80 columns: UIDs need room.
    console = out if out.is_terminal else Console(width=240)
    # Cells are data (AE titles may hold "[/]"), never rich markup.
    console.print(table, markup=False, highlight=False)


def _text_time(value: object) -> str:
    from deid_node.audit.records import format_time

    if isinstance(value, datetime):
        return format_time(value)[:19].replace("T", " ")
    return "" if value is None else str(value)


def _json_value(value: object) -> object:
    from deid_node.audit.records import format_time

    if isinstance(value, datetime):
        return format_time(value)
    return value


def _write_json_array(rows: Iterable[Mapping[str, object]]) -> int:
    """Stream rows as one JSON array, an object per row, to stdout."""
    count = 0
    sys.stdout.write("[")
    for row in rows:
        sys.stdout.write(",\n" if count else "\n")
        sys.stdout.write(json.dumps({k: _json_value(v) for k, v in row.items()}))
        count += 1
    sys.stdout.write("\n]\n" if count else "]\n")
    return count


@app.command()
@errors_as_lines
def serve(config: ConfigOption = None) -> None:
    """Receive objects over DICOM, de-identify and audit each one, until SIGTERM or Ctrl-C.

    Example: deid-node serve --config config/deid-node.toml
    """
    from deid_node.logs import setup_logging
    from deid_node.runtime.node import Node

    cfg = _config(config)
    setup_logging()
    Node(cfg).serve_forever()


@app.command("audit")
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
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            help="With --associations: released, aborted, closed, rejected or open.",
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
    if objects and associations:
        fail("choose one of --objects and --associations")
    if outcome is not None and not associations:
        fail("--outcome applies to --associations only (objects have --status)")
    cfg = _config(config)
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
    with _open_existing_audit(cfg) as db:
        if objects:
            with _closed_after(db.iter_objects(filters, limit, newest_first=True)) as rows:
                if as_json:
                    _write_json_array(rows)
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
                        _text_time(row["received_at"]),
                        str(row["calling_ae"]),
                        str(row["profile"]),
                        str(row["status"]),
                        _text_time(row["pseudo_study_uid"]),
                        _text_time(row["pseudo_sop_uid"]),
                        _text_time(row["reason"]),
                    )
            _print_table(table)
            return
        studies = db.study_summaries(filters, limit)
    if as_json:
        _write_json_array(dataclasses.asdict(s) for s in studies)
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
            _text_time(s.first_received_at),
            _text_time(s.last_received_at),
            str(s.stored),
            str(s.quarantined),
            str(s.duplicate),
            str(s.rejected),
        )
    _print_table(table)


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
    from deid_node.audit.records import AssociationFilters, parse_time

    filters = AssociationFilters(
        since=parse_time(since) if since is not None else None,
        until=parse_time(until) if until is not None else None,
        calling_ae=calling_ae,
        outcome=outcome.strip().lower() if outcome is not None else None,
    )
    with (
        _open_existing_audit(cfg) as db,
        _closed_after(db.iter_associations(filters, limit)) as rows,
    ):
        if as_json:
            _write_json_array(rows)
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
                _text_time(row["started_at"]),
                _text_time(row["ended_at"]),
                str(row["peer_address"]),
                str(row["calling_ae"]),
                str(row["called_ae"]),
                str(row["objects"]),
                _text_time(row["outcome"]) or "open",
                _text_time(row["reason"]),
            )
    _print_table(table)


@app.command("export-csv")
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
    lf: Annotated[
        bool,
        typer.Option("--lf", help="End lines with LF (Unix tools) instead of RFC 4180's CRLF."),
    ] = False,
) -> None:
    """Export audit rows as RFC 4180 CSV with a header, streamed to stdout or --output.

    Example: deid-node export-csv --since 2026-11-01 --status stored --output audit.csv
    """
    from deid_node.audit.export import write_csv
    from deid_node.audit.schema import LINKAGE_COLUMNS, OBJECT_COLUMNS

    cfg = _config(config)
    filters = _filters(cfg, since, until, calling_ae, profile, status, study)
    columns = LINKAGE_COLUMNS if linkage else OBJECT_COLUMNS
    line_end = "\n" if lf else "\r\n"
    with _open_existing_audit(cfg) as db:
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
        rows = db.iter_linkage(filters) if linkage else db.iter_objects(filters)
        with _closed_after(rows):
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
    with _closed_after(db.iter_linkage(Filters(profile=profile), limit=1)) as rows:
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


@quarantine_app.command("list")
@errors_as_lines
def quarantine_list(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array, one object per entry, for scripts.")
    ] = False,
) -> None:
    """List quarantined objects still held, oldest first: id, received, calling AE, profile, reason.

    Example: deid-node quarantine list --config config/deid-node.toml
    """
    from deid_node.runtime.quarantine import list_quarantine

    cfg = _config(config)
    with _open_existing_audit(cfg) as db:
        entries = list_quarantine(db)
    if as_json:
        _write_json_array(
            {
                "id": e.id,
                "received_at": e.received_at,
                "calling_ae": e.calling_ae,
                "profile": e.profile,
                "reason": e.reason,
            }
            for e in entries
        )
        return
    if not entries:
        out.print("no quarantined objects", markup=False, highlight=False)
        return
    table = Table("id", "received (UTC)", "calling AE", "profile", title="quarantine")
    table.add_column("reason", overflow="fold")
    for e in entries:
        table.add_row(str(e.id), _quarantine_time(e.received_at), e.calling_ae, e.profile, e.reason)
    _print_table(table)


@quarantine_app.command("retry")
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
    from deid_node.audit.records import Status
    from deid_node.deid.pipeline import Outcome
    from deid_node.deid.secret import load_secret
    from deid_node.runtime.quarantine import list_quarantine, retry

    wanted = _parse_ids(ids)
    if bool(wanted) == retry_all:
        fail("say which objects to retry: IDs, or --all (not both)")
    cfg = _config(config)
    with _open_existing_audit(cfg) as db:
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


@quarantine_app.command("purge")
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
    from deid_node.runtime.quarantine import purge

    wanted = _parse_ids(ids)
    if bool(wanted) == (older_than is not None):
        fail("say which objects to purge: IDs, or --older-than DAYS (not both)")
    cfg = _config(config)
    with _open_existing_audit(cfg) as db:
        gone = purge(db, wanted or None, older_than_days=older_than)
    out.print(f"{len(gone)} quarantined object(s) purged", markup=False, highlight=False)


def main() -> None:
    """Console entry point: library errors become one `Error:` line and exit 1."""
    import warnings

    warnings.simplefilter("ignore")  # library warnings can quote dataset values
    quiet_libraries()
    app()
