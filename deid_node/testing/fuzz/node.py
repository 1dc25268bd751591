"""The node under test: our own `deid-node serve` (started, watched, stopped) or someone else's."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from deid_node.config import load_config
from deid_node.deid.secret import load_secret
from deid_node.testing.fuzz.sender import Sender, echo
from deid_node.testing.fuzz.target import Target
from deid_node.testing.loopback import deid_node_command, free_port

__all__ = [
    "CONFIG_TEMPLATE",
    "FUZZ_PROFILE",
    "crash_record",
    "deid_node_command",
    "external_target",
    "free_port",
    "launch_node",
    "make_recover",
    "peak_rss_mb",
    "prepare_node",
    "stop_node",
]

FUZZ_PROFILE: Final = "fuzz"
CONFIG_TEMPLATE: Final = """\
# Written by the fuzzer (scripts/fuzz.py): one known sender, everyone else rejected.
[node]
ae_title = "{called}"
host = "127.0.0.1"
port = {port}
data_dir = "data"
max_associations = 16
durability = "os"

[[sources]]
ae_title = "{calling}"
profile = "{profile}"
hosts = ["127.0.0.1"]

[unknown_sources]
action = "reject"

[profiles.{profile}]
options = []
burned_in_annotation = "quarantine"
"""


def prepare_node(workdir: Path, calling_ae: str, called_ae: str) -> Target:
    """A temp config and data dir for our own node (not started yet)."""
    port = free_port()
    config = workdir / "fuzz.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            called=called_ae, port=port, calling=calling_ae, profile=FUZZ_PROFILE
        )
    )
    data = workdir / "data"
    return Target(
        host="127.0.0.1",
        port=port,
        called_ae=called_ae,
        calling_ae=calling_ae,
        data_dir=data,
        output_dir=data / "output",
        db_url=f"sqlite:///{data / 'audit.db'}",
        db_path=data / "audit.db",
        log_path=workdir / "node.log",
        key=os.urandom(32),  # handed over in DEID_NODE_SECRET: we can map pseudonyms
        scope=FUZZ_PROFILE,
    )


def launch_node(target: Target, memory_limit_mb: int, timeout: float) -> None:
    """Start (or restart) `deid-node serve` for a prepared target; wait until it echoes."""
    assert target.key is not None and target.log_path is not None
    workdir = target.log_path.parent
    env = dict(os.environ, DEID_NODE_SECRET=target.key.hex())
    env.pop("DEID_NODE_CONFIG", None)
    with target.log_path.open("ab") as log:  # a restart appends: tracebacks stay countable
        proc = subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(workdir / "fuzz.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,  # its own process group: we can reap its workers
        )
    if memory_limit_mb:
        # A memory bomb must fail inside the node (MemoryError), not make the kernel's
        # OOM killer pick processes on a shared machine. Workers inherit the limit.
        limit = memory_limit_mb * 1024 * 1024
        with contextlib.suppress(OSError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))
    target.proc = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = target.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"deid-node serve exited with {proc.returncode}:\n{tail}")
        if echo(target.host, target.port, target.called_ae, target.calling_ae, timeout=5):
            return
        time.sleep(0.3)
    stop_node(target)
    raise RuntimeError(f"deid-node serve did not answer C-ECHO within {timeout:.0f} s")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its direct children, in MiB."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def stop_node(target: Target, grace: float = 30.0) -> dict[str, Any]:
    """SIGTERM, bounded wait, then SIGKILL to its process group; report how it went."""
    proc = target.proc
    if proc is None:
        return {}
    info: dict[str, Any] = {"pid": proc.pid, "peak_rss_mb": peak_rss_mb(proc.pid)}
    if proc.poll() is not None:
        info.update(stopped="already exited", exit_code=proc.returncode)
        return info
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        info.update(stopped="SIGTERM", exit_code=proc.returncode)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        info.update(stopped=f"SIGKILL after {grace:.0f} s", exit_code=proc.returncode)
    # multiprocessing's forkserver and resource tracker leave by themselves within a
    # second or so; whatever is still in the group after 5 s outlived the node.
    linger = time.monotonic() + 5
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            info["orphans_killed"] = False
            break
        if time.monotonic() > linger:
            info["orphans_killed"] = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return info


def external_target(
    *,
    config: Path | None,
    host: str,
    port: int | None,
    called_ae: str | None,
    calling_ae: str | None,
    data_dir: Path | None,
    profile: str | None,
    node_log: Path | None,
) -> Target:
    """A node someone else runs: from its config file, or from its host and port."""
    if config is not None:
        target, secret_path = _target_from_config(config, called_ae, calling_ae)
    else:
        target = Target(
            host=host,
            port=port or 0,
            called_ae=called_ae or "DEID_NODE",
            calling_ae=calling_ae or "FUZZER",
            data_dir=data_dir,
            output_dir=data_dir / "output" if data_dir else None,
            db_url=f"sqlite:///{data_dir / 'audit.db'}" if data_dir else None,
            db_path=data_dir / "audit.db" if data_dir else None,
            scope=profile,
        )
        secret_path = data_dir / "secret.key" if data_dir else Path("/nonexistent")
    target.log_path = node_log
    with contextlib.suppress(Exception):  # no key: stored objects are counted, not mapped
        target.key = load_secret(secret_path, create=False)
    return target


def _target_from_config(
    path: Path, called_ae: str | None, calling_ae: str | None
) -> tuple[Target, Path]:
    """The target a node's config file describes, and where its key is."""
    cfg = load_config(path)
    calling = calling_ae or (cfg.sources[0].ae_title if cfg.sources else "FUZZER")
    source = cfg.source_for(calling)
    profile_name = source.profile if source else cfg.unknown_action
    profile = cfg.profiles.get(profile_name)
    db = None
    if cfg.database_url.startswith("sqlite:///"):
        db = Path(cfg.database_url[len("sqlite:///") :])
    target = Target(
        host=cfg.node.host if cfg.node.host not in ("0.0.0.0", "::") else "127.0.0.1",
        port=cfg.node.port,
        called_ae=called_ae or cfg.node.ae_title,
        calling_ae=calling,
        data_dir=cfg.node.data_dir,
        output_dir=cfg.node.output,
        db_url=cfg.database_url,
        db_path=db,
        scope=profile.pseudonym_scope if profile else None,
        record_linkage=bool(profile and profile.record_linkage),
    )
    return target, cfg.node.secret_path


def crash_record(target: Target, sender: Sender, state: str) -> dict[str, Any]:
    """What we know about a node that died or stopped answering."""
    proc = target.proc
    lost = sorted(r.oid for r in sender.results.values() if r.status in ("abort", "no-response"))
    return {
        "state": state,
        "exit_code": proc.returncode if proc is not None else None,
        "inflight": sorted(sender.inflight.values()),
        "lost_so_far": lost[-8:],
        "at_seconds": round(time.monotonic() - sender.started, 1),
    }


def make_recover(
    target: Target, crashes: list[dict[str, Any]], *, max_restarts: int, memory_limit_mb: int
) -> Callable[[Sender], bool]:
    """A callback that restarts our node (same data dir and port) after it died or wedged."""

    def recover(sender: Sender) -> bool:
        proc = target.proc
        if proc is not None and proc.poll() is None:
            if echo(target.host, target.port, target.called_ae, target.calling_ae):
                return True  # only busy
            record = crash_record(target, sender, "wedged")
            record["peak_rss_mb"] = peak_rss_mb(proc.pid)
            stop_node(target, grace=10)
            record["exit_code"] = proc.returncode
        else:
            record = crash_record(target, sender, "died")
        crashes.append(record)
        if len(crashes) > max_restarts:
            return False
        # The node drains what is left in its spool before it serves again (DESIGN.md).
        wait = max(60.0, sender.deadline - time.monotonic())
        try:
            launch_node(target, memory_limit_mb, timeout=min(wait, 900.0))
        except RuntimeError:
            return False
        record["restarted_in_s"] = round(
            time.monotonic() - sender.started - record["at_seconds"], 1
        )
        return True

    return recover
