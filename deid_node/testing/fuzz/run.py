"""One fuzz run: start or find the node, send every object, drain, check, report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydicom.uid import ExplicitVRLittleEndian

from deid_node.logs import quiet_libraries
from deid_node.testing.fuzz.draft import VALID, Draft
from deid_node.testing.fuzz.generator import (
    CONTROL,
    KINDS,
    FuzzObject,
    Generator,
    make_schedule,
    object_uid,
)
from deid_node.testing.fuzz.node import (
    crash_record,
    external_target,
    launch_node,
    make_recover,
    prepare_node,
    stop_node,
)
from deid_node.testing.fuzz.records import audit_rows, exception_summary, wait_for_drain
from deid_node.testing.fuzz.report import check_invariants, per_kind_table, pseudo_sop, summarise
from deid_node.testing.fuzz.sender import (
    Result,
    Sender,
    associate,
    echo,
    forget_raw_meta,
    install_raw_sender,
    is_success,
    make_ae,
)
from deid_node.testing.fuzz.target import Target

__all__ = ["OBJECT_COLUMNS", "FuzzOptions", "node_code_version", "run"]

# The checkout the node runs from (an editable install), for the report's commit.
_CHECKOUT: Final = Path(__file__).resolve().parents[3]

OBJECT_COLUMNS: Final = (
    "oid",
    "kind",
    "base",
    "variant",
    "expect",
    "status",
    "outcome",
    "bytes",
    "seconds",
)

# The report is a JSON document (scripts/fuzz.py --json): its sections are plain dicts.
Section = dict[str, Any]


@dataclass(frozen=True)
class FuzzOptions:
    """What to send, to which node, within which limits (scripts/fuzz.py's flags)."""

    count: int = 10_000
    seed: int = 0
    config: Path | None = None  # a running node's config (else we start our own)
    host: str = "127.0.0.1"
    port: int | None = None  # a running node's port (else we start our own)
    called_ae: str | None = None
    calling_ae: str | None = None
    data_dir: Path | None = None  # with port: the node's data dir
    profile: str | None = None  # with port: the sender's profile (pseudonym scope)
    node_log: Path | None = None  # with config/port: the node's log, for tracebacks
    associations: int = 4
    per_association: int = 100
    control_every: int = 100
    request_timeout: float = 30.0
    max_seconds: float = 1800.0
    kinds: frozenset[str] | None = None  # only these kinds (object ids unchanged)
    oids: tuple[int, ...] | None = None  # only these object ids
    node_memory_mb: int = 4096
    restart_on_crash: bool = False
    max_restarts: int = 20
    max_node_rss_mb: int = 2048
    drain_stall: float = 90.0
    stop_grace: float = 30.0
    keep: bool = False
    quiet: bool = False

    @property
    def own_node(self) -> bool:
        """Whether we start (and stop) the node ourselves."""
        return self.config is None and self.port is None


def run(options: FuzzOptions) -> Section:
    """Fuzz the node; the full report (see scripts/fuzz.py). RuntimeError: no node to fuzz."""
    t_start = time.monotonic()
    limit = t_start + options.max_seconds
    install_raw_sender()
    quiet_libraries()  # pynetdicom would log every abort we provoke
    gen = Generator(options.seed, options.count)
    oids = list(options.oids) if options.oids is not None else None
    schedule, controls = make_schedule(
        options.count, options.control_every, set(options.kinds or ()) or None, oids
    )
    workdir = Path(tempfile.mkdtemp(prefix="deid-fuzz-"))
    report: Section = {
        "count": options.count,
        "controls": controls,
        "seed": options.seed,
        "associations": options.associations,
        "max_node_rss_mb": options.max_node_rss_mb,
        "kinds_cycled": list(KINDS),
        "objects_columns": list(OBJECT_COLUMNS),
    }
    target: Target | None = None
    try:
        crashes: list[Section] = []
        target, recover = _start(options, workdir, crashes)
        since = datetime.now(UTC)  # audit rows of this run are those received from now on
        report["node"] = _node_section(target, options.own_node)
        sender = _send(options, gen, target, schedule, workdir, limit, recover)
        _record_sending(report, target, sender, crashes, t_start, options.own_node)
        final = _drain_and_check(report, options, gen, target, sender, since, workdir, limit)
        report["node"].update(stop_node(target, grace=options.stop_grace))
        if options.own_node:  # a node we restarted had its own peak before it was killed
            peaks = [c.get("peak_rss_mb", 0.0) for c in crashes]
            report["node"]["peak_rss_mb"] = max([report["node"]["peak_rss_mb"], *peaks])
        _conclude(report, gen, target, sender.results, schedule, since, final)
        report["seconds"] = round(time.monotonic() - t_start, 1)
        report["objects"] = [
            [
                r.oid,
                r.kind,
                r.base,
                r.variant,
                r.expect,
                r.status,
                r.outcome,
                r.size,
                round(r.seconds, 2),
            ]
            for r in sorted(sender.results.values(), key=lambda r: r.oid)
        ]
        report.pop("stored_by_oid", None)
        return report
    finally:
        if target is not None:
            target.close_audit()
            if target.proc is not None and target.proc.poll() is None:
                stop_node(target)
        if options.own_node and options.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _start(
    options: FuzzOptions, workdir: Path, crashes: list[Section]
) -> tuple[Target, Callable[[Sender], bool] | None]:
    """Our own node, started (with a restarter if asked), or the one the options name."""
    if not options.own_node:
        target = external_target(
            config=options.config,
            host=options.host,
            port=options.port,
            called_ae=options.called_ae,
            calling_ae=options.calling_ae,
            data_dir=options.data_dir,
            profile=options.profile,
            node_log=options.node_log,
        )
        return target, None
    target = prepare_node(workdir, options.calling_ae or "FUZZER", options.called_ae or "DEID_NODE")
    launch_node(target, options.node_memory_mb, timeout=60)
    recover = None
    if options.restart_on_crash:
        recover = make_recover(
            target,
            crashes,
            max_restarts=options.max_restarts,
            memory_limit_mb=options.node_memory_mb,
        )
    return target, recover


def _node_section(target: Target, own: bool) -> Section:
    node: Section = {
        "host": target.host,
        "port": target.port,
        "called_ae": target.called_ae,
        "calling_ae": target.calling_ae,
        "started_here": own,
        "key_known": target.key is not None,
        "data_dir": str(target.data_dir),
    }
    if own:
        node["code"] = node_code_version()
    return node


def _send(
    options: FuzzOptions,
    gen: Generator,
    target: Target,
    schedule: list[int],
    workdir: Path,
    limit: float,
    recover: Callable[[Sender], bool] | None,
) -> Sender:
    # Keep a quarter of the time (at most 5 min) for the drain and final checks.
    send_deadline = limit - min(300.0, options.max_seconds / 4)
    sender = Sender(
        gen,
        target,
        schedule,
        associations=options.associations,
        per_association=options.per_association,
        request_timeout=options.request_timeout,
        deadline=send_deadline,
        workdir=workdir,
        progress=not options.quiet,
        recover=recover,
    )
    sender.run()
    return sender


def _record_sending(
    report: Section,
    target: Target,
    sender: Sender,
    crashes: list[Section],
    t_start: float,
    own: bool,
) -> None:
    if own and target.proc is not None and target.proc.poll() is not None:
        crashes.append(crash_record(target, sender, "died"))
    report["node"]["crashes"] = crashes
    report["sending_seconds"] = round(time.monotonic() - t_start, 1)
    report["associations_opened"] = sender.associations_opened
    report["association_failures"] = sender.association_failures
    report["node_down_during_send"] = sender.node_down


def _drain_and_check(
    report: Section,
    options: FuzzOptions,
    gen: Generator,
    target: Target,
    sender: Sender,
    since: datetime,
    workdir: Path,
    limit: float,
) -> Result | None:
    """Let the node drain, then check it still serves; the final object's result."""
    accepted = sum(1 for r in sender.results.values() if is_success(r.status))
    # A node that stopped answering will not drain either: do not wait long for it.
    stall = 10.0 if sender.node_down else options.drain_stall
    report["drain_seconds"] = round(
        wait_for_drain(target, accepted, since, limit - 60, stall=stall), 1
    )
    crashes = report["node"]["crashes"]
    if crashes:
        report["node"]["died_during_run"] = [c["exit_code"] for c in crashes]
    echo_ok = echo(target.host, target.port, target.called_ae, target.calling_ae)
    store = final_store(gen, target, workdir, min(limit, time.monotonic() + 60))
    report["final"] = {"echo": echo_ok, "store": store}
    if store.get("status") == "0x0000":  # let its audit row land before counting
        wait_for_drain(target, accepted + 1, since, min(limit, time.monotonic() + 30))
    final: Result | None = store.pop("result", None)
    return final


def _conclude(
    report: Section,
    gen: Generator,
    target: Target,
    results: dict[int, Result],
    schedule: list[int],
    since: datetime,
    final: Result | None,
) -> None:
    """Join everything into the report's sections and check the invariants."""
    report.update(summarise(gen, target, results, schedule, since, final))
    report["exceptions"] = exception_summary(target.log_path)
    report["exceptions"]["status_0xC211"] = sum(1 for r in results.values() if r.status == "0xC211")
    report["kinds"] = per_kind_table(results)
    report["invariants"] = check_invariants(report, results)
    report["ok"] = all(v["ok"] for v in report["invariants"].values())


def final_store(gen: Generator, target: Target, workdir: Path, limit: float) -> Section:
    """After the storm: a valid object must still get 0x0000 and be written."""
    out: Section = {"status": None, "written": False}
    uid = f"{object_uid(gen.seed, 10**9)}.{int(time.time())}"  # fresh: never a duplicate
    base = gen.controls[0]
    obj = FuzzObject(
        -1,
        CONTROL,
        base.name,
        "final",
        VALID,
        base.sop_class,
        uid,
        ExplicitVRLittleEndian,
        Draft(base, uid).body(),
        (uid,),
    )
    since = datetime.now(UTC)
    ae = make_ae(target.calling_ae, 30)
    assoc = associate(ae, target.host, target.port, target.called_ae)
    if not assoc.is_established:
        out["status"] = "association-failed"
        return out
    res = Result(-1, CONTROL, base.name, "final", VALID, (uid,), len(obj.body))
    sender = Sender(
        gen,
        target,
        [],
        associations=1,
        per_association=1,
        request_timeout=30,
        deadline=limit,
        workdir=workdir,
        progress=False,
    )
    try:
        sender.send_one(assoc, obj, res, workdir / "final.bin", msg_id=1)
    finally:
        forget_raw_meta(workdir / "final.bin")
        if assoc.is_established:
            assoc.release()
    out["status"] = res.status
    out["result"] = res  # popped before the report is written
    if res.status == "0x0000":
        pseudo = pseudo_sop(target, uid)
        out["written"] = _written(target, pseudo, since, limit)
        out["pseudo_sop_uid"] = pseudo
    return out


def _written(target: Target, pseudo: str | None, since: datetime, limit: float) -> bool | None:
    """Whether the final object reached the output (None: cannot tell)."""
    while time.monotonic() < limit:
        if pseudo and target.output_dir and any(target.output_dir.rglob(f"{pseudo}.dcm")):
            return True
        if pseudo is None:  # no key: a newly stored row will do
            rows = audit_rows(target, since)
            if rows is None:
                return None
            if any(r["status"] in ("stored", "duplicate") for r in rows):
                return True
        time.sleep(0.3)
    return False


def node_code_version() -> Section:
    """The commit our own node runs from, and node files changed since (others edit them)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "deid_node")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": [line[3:] for line in dirty.splitlines()],
    }
