"""The `deid-node` command: a thin typer layer over the library."""

from __future__ import annotations

import csv
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from deid_node.config import Config, load_config
from deid_node.errors import DeidNodeError
from deid_node.logs import quiet_libraries

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

P = ParamSpec("P")
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file [default: $DEID_NODE_CONFIG, then config/deid-node.toml].",
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
    """Validate the config file and print what it sets up.

    Example: deid-node check-config --config config/deid-node.toml
    """
    cfg = _config(config)
    node = cfg.node
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
    from deid_node.profiles import compile_profile, describe

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

    Example: deid-node deidentify scans/ --output deid/ --profile research
    """
    from deid_node.offline import deidentify_paths, iter_files
    from deid_node.secret import load_secret

    cfg = _config(config)
    prof = cfg.profile(profile)
    for p in paths:
        if not p.exists():
            fail(f"{p}: no such file or folder")
    key = load_secret(cfg.node.secret_path)
    files = list(iter_files(paths))
    if not files:
        fail("no files found under the given paths")
    with Progress(
        TextColumn("de-identifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("files", total=len(files))
        summary = deidentify_paths(
            files,
            prof,
            key,
            output,
            workers=workers,
            progress=lambda n: bar.advance(task, n),
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
                writer.writerow([path, o.status.value, o.reason or "", o.output_path or ""])
    if summary.failed:
        raise typer.Exit(code=1)


def main() -> None:
    """Console entry point: library errors become one `Error:` line and exit 1."""
    import warnings

    warnings.simplefilter("ignore")  # library warnings can quote dataset values
    quiet_libraries()
    app()
