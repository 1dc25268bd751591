"""`deid-node deidentify`: files and folders offline, with a progress bar."""

from __future__ import annotations

import contextlib
import csv
import os
import time
from pathlib import Path
from typing import Annotated, Final

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
from deid_node.config import Config, ProfileConfig, builtin_profiles, resolve_config_path


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
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Secret key file the pseudonyms are keyed with (default: $DEID_NODE_SECRET "
            "as hex, else the config's node key). Keep it: the same key gives the same "
            "pseudonyms in every run.",
        ),
    ] = None,
) -> None:
    """De-identify files into OUTPUT/<profile>/<patient>/<study>/<series>/<sop>.dcm.

    A profile with record_linkage also writes linkage rows (and their audit rows, origin
    "offline", calling AE "(offline)", absolute output paths) into the config's audit database.

    Without a config file the built-in profiles (basic, research) are there, and the key
    comes from --key or $DEID_NODE_SECRET.

    Example: deid-node deidentify scans/ --output deid/ --profile research
    """
    from deid_node.ops.offline import deidentify_paths, iter_files

    cfg = _config_if_any(config)
    prof = _profile(cfg, profile)
    for p in paths:
        if not p.exists():
            fail(f"{p}: no such file or folder")
    secret = _key(cfg, key)
    if prof.record_linkage and cfg is None:
        fail(f"profile '{prof.name}' keeps a linkage table: give --config (its audit database)")
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
            assert cfg is not None
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
        lines = _ProgressLines(len(files)) if not err.is_terminal else None

        def advance(n: int) -> None:
            bar.advance(task, n)
            if lines is not None:
                lines.advance(n)

        summary = deidentify_paths(
            files,
            prof,
            secret,
            output,
            workers=workers,
            progress=advance,
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


PROGRESS_EVERY: Final = 5.0  # seconds between progress lines when stderr is no terminal


class _ProgressLines:
    """A line on stderr every few seconds (a log file or a pipe has no progress bar)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            err.print(
                f"de-identifying: {self.done} of {self.total} files ({rate:.0f}/s)",
                markup=False,
                highlight=False,
            )


def _config_if_any(path: Path | None) -> Config | None:
    """The config given or found; None when none was given and none is where one is looked
    for (offline runs need none: built-in profiles, a key from --key or the environment)."""
    if path is None and not resolve_config_path(None).exists():
        return None
    return load(path)


def _profile(cfg: Config | None, name: str) -> ProfileConfig:
    """The config's profile of that name, else the built-in one."""
    if cfg is not None and name in cfg.profiles:
        return cfg.profiles[name]
    builtin = builtin_profiles()
    if name in builtin:
        return builtin[name]
    configured = ", ".join(sorted(cfg.profiles)) if cfg is not None else "none (no config file)"
    fail(
        f"unknown profile '{name}'; configured profiles: {configured}; "
        f"built-in: {', '.join(sorted(builtin))}"
    )


def _key(cfg: Config | None, path: Path | None) -> bytes:
    """--key's file, else $DEID_NODE_SECRET, else the config's node key."""
    from deid_node.deid.secret import SECRET_ENV, key_file, load_secret

    if path is not None:
        if not path.is_file():
            fail(f"{path}: key file not found (make one: head -c 32 /dev/urandom > {path})")
        key = key_file(path, "secret key")
        if len(key) < 16:
            fail(f"{path}: a key of at least 16 bytes is needed")
        return key
    if cfg is not None:
        return load_secret(cfg.node.secret_path)
    if os.environ.get(SECRET_ENV):
        return load_secret(Path(os.devnull), create=False)
    fail(f"no key: give --key FILE or set {SECRET_ENV} (hex), or --config (its node's key)")
