"""`deid-node deidentify`: files and folders through the same pipeline as the node."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deid_node.config import ProfileConfig
from deid_node.deid.pipeline import Outcome, process_file
from deid_node.deid.profiles import compile_profile
from deid_node.object_status import Status

_CHUNK = 16  # files per task: amortises inter-process overhead, keeps progress smooth


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        elif path.is_file():
            yield path


@dataclass
class Summary:
    """Counts of one offline run; reasons never hold PHI."""

    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    report: list[tuple[Path, Outcome]] = field(default_factory=list)

    def add(self, path: Path, outcome: Outcome) -> None:
        """Count one file's outcome."""
        self.counts[outcome.status] += 1
        if outcome.reason:
            self.reasons[f"{outcome.status}: {outcome.reason}"] += 1
        self.report.append((path, outcome))

    @property
    def failed(self) -> int:
        """Objects that could not be de-identified."""
        return self.counts[Status.QUARANTINED]


def _work(args: tuple[list[Path], ProfileConfig, bytes, Path]) -> list[Outcome]:
    paths, profile_cfg, key, output = args
    profile = compile_profile(profile_cfg)
    return [process_file(p, profile, key, output) for p in paths]


def deidentify_paths(
    files: list[Path],
    profile: ProfileConfig,
    key: bytes,
    output: Path,
    *,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    record: Callable[[Outcome], None] | None = None,
) -> Summary:
    """De-identify files into `output` with a process pool; progress(n) after each batch.

    `record` gets every outcome in this process, e.g. to write linkage rows
    (:class:`deid_node.ops.linkage.OfflineLinkage`); workers never touch the database.
    """
    summary = Summary()
    workers = workers or (os.cpu_count() or 1)
    batches = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    if workers == 1 or len(batches) <= 1:
        compiled = compile_profile(profile)
        for path in files:
            outcome = process_file(path, compiled, key, output)
            summary.add(path, outcome)
            if record:
                record(outcome)
            if progress:
                progress(1)
        return summary
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = ((batch, profile, key, output) for batch in batches)
        for batch, outcomes in zip(batches, pool.map(_work, jobs), strict=True):
            for path, outcome in zip(batch, outcomes, strict=True):
                summary.add(path, outcome)
                if record:
                    record(outcome)
            if progress:
                progress(len(batch))
    return summary
