"""`deid-node deidentify`: files and folders offline, with a progress bar."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deid_node.cli.shared import (
    ConfigOption,
    err,
    errors_as_lines,
    fail,
    load,
    out,
)


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

    A profile with record_linkage also writes linkage rows (and their audit rows, origin
    "offline", calling AE "(offline)", absolute output paths) into the config's audit database.

    Example: deid-node deidentify scans/ --output deid/ --profile research
    """
    from deid_node.deid.secret import load_secret
    from deid_node.ops.offline import deidentify_paths, iter_files

    cfg = load(config)
    prof = cfg.profile(profile)
    for p in paths:
        if not p.exists():
            fail(f"{p}: no such file or folder")
    key = load_secret(cfg.node.secret_path)
    output = output.absolute()  # audit rows and the report name the files wherever one runs
    files = list(iter_files(paths))
    if not files:
        fail("no files found under the given paths")
    with contextlib.ExitStack() as stack:
        record = None
        if prof.record_linkage:  # SQLAlchemy only for the profiles that need it
            from deid_node.audit.db import open_audit
            from deid_node.ops.linkage import OfflineLinkage

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
