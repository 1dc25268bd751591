"""A trial cluster on this machine: `up N`, `status`, `down` (run through scripts/cluster).

Everything listens on 127.0.0.1 and lives in a state folder (default `.cluster/`):
PostgreSQL from Debian in `pg/` (its own port, trust authentication on loopback: a trial,
not a deployment), N nodes in `node-<i>/` (config, data_dir, log) sharing one key
(`secret.hex`, given as DEID_NODE_SECRET), one database and one output folder
(`output/`), and HAProxy in TCP mode in front of them, checking each node's /health.
`up` starts whatever is not running yet, so `up` after a node died restarts that node
(its spool is processed before it serves again). Without psycopg (the `postgres` extra)
or Debian's PostgreSQL, each node gets its own SQLite audit database instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAPROXY = "/usr/sbin/haproxy"
AE_TITLE = "DEID_NODE"
START_SECONDS = 120.0


class ClusterError(Exception):
    """A step failed; its message is one line for the user."""


@dataclass
class NodeState:
    """One node's ports and process."""

    dicom: int
    metrics: int
    pid: int = 0


@dataclass
class State:
    """What `up` chose, kept in cluster.json so `status` and `down` find it."""

    port: int
    database: str  # "postgres" or "sqlite"
    pg_port: int = 0
    haproxy_pid: int = 0
    nodes: list[NodeState] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child of ours that ended) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _load(state_dir: Path) -> State | None:
    path = state_dir / "cluster.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["nodes"] = [NodeState(**n) for n in raw["nodes"]]
    return State(**raw)


def _save(state_dir: Path, state: State) -> None:
    tmp = state_dir / "cluster.json.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(state_dir / "cluster.json")


# -- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def _as_postgres(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool: as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _start_postgres(state_dir: Path, state: State) -> str:
    pg = _pg_bin()
    assert pg is not None
    data = state_dir / "pg"
    if os.geteuid() == 0 and _as_postgres(["test", "-x", str(state_dir)]).returncode:
        raise ClusterError(
            f"the postgres user cannot reach {state_dir}: give a --state folder whose "
            "parents others may enter (mode 755)"
        )
    if not (data / "PG_VERSION").exists():
        data.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(data, user.pw_uid, user.pw_gid)
        made = _as_postgres(
            [str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )
        if made.returncode:
            raise ClusterError(f"initdb failed: {made.stderr.strip().splitlines()[-1:]}")
    if _as_postgres([str(pg / "pg_ctl"), "-D", str(data), "status"]).returncode != 0:
        state.pg_port = state.pg_port or _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {state.pg_port} -c unix_socket_directories='{data}'"
            " -c max_connections=200"
        )
        started = _as_postgres(
            [
                str(pg / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-w",
                "-o",
                options,
                "start",
            ]
        )
        if started.returncode:
            raise ClusterError(f"PostgreSQL did not start: see {data / 'server.log'}")
    exists = _as_postgres(
        [
            str(pg / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(state.pg_port),
            "-U",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'deid'",
        ]
    )
    if exists.stdout.strip() != "1":
        made = _as_postgres(
            [
                str(pg / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(state.pg_port),
                "-U",
                "postgres",
                "deid",
            ]
        )
        if made.returncode:
            raise ClusterError(f"createdb failed: {made.stderr.strip()}")
    return f"postgresql+psycopg://postgres@127.0.0.1:{state.pg_port}/deid"


def _stop_postgres(state_dir: Path) -> None:
    pg = _pg_bin()
    data = state_dir / "pg"
    if pg is not None and (data / "PG_VERSION").exists():
        _as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


def _postgres_usable() -> str | None:
    """Why PostgreSQL cannot be used, or None."""
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install 'deid-node[postgres]')"
    if _pg_bin() is None:
        return "Debian's PostgreSQL server is not installed (apt-get install postgresql)"
    return None


# -- nodes ------------------------------------------------------------------------------------


def _node_config(state_dir: Path, index: int, node: NodeState, url: str | None) -> Path:
    folder = state_dir / f"node-{index}"
    folder.mkdir(exist_ok=True)
    database = f'\n[database]\nurl = "{url}"\n' if url else ""
    text = f"""# Written by scripts/cluster: node {index} of a trial cluster (all on 127.0.0.1).
[node]
name = "node-{index}"         # on every audit row: which node received what
ae_title = "{AE_TITLE}"
host = "127.0.0.1"
port = {node.dicom}
data_dir = "var"            # its own spool/ and quarantine/: what it acknowledged, it processes
output_dir = "../output"    # shared by every node (and the console)
output_shared = true        # so any node's forwarder may send any node's files
{database}
[metrics]
host = "127.0.0.1"
port = {node.metrics}

# A trial: any calling AE title gets the research profile (dcmtk's storescu calls as STORESCU).
[unknown_sources]
action = "research"

[profiles.research]
options = ["retain-longitudinal-modified-dates", "retain-safe-private"]
patient_id_prefix = "RES"
"""
    path = folder / "deid-node.toml"
    path.write_text(text)
    return path


def _deid_node() -> list[str]:
    beside = Path(sys.executable).parent / "deid-node"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "deid_node"]


def _start_node(state_dir: Path, index: int, config: Path, secret: str) -> int:
    log = open(state_dir / f"node-{index}" / "node.log", "ab")  # noqa: SIM115 (the child's)
    env = {**os.environ, "DEID_NODE_SECRET": secret}
    process = subprocess.Popen(
        [*_deid_node(), "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: `down` and kill -9 reach all of it
    )
    log.close()
    return process.pid


def health(port: int) -> tuple[int, str]:
    """(status, first line) of a node's /health; (0, why) if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return int(r.status), r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode().strip()
    except OSError as exc:
        return 0, f"not answering ({type(exc).__name__})"


def _wait_healthy(state_dir: Path, index: int, node: NodeState) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if health(node.metrics)[0] == 200:
            return
        if not _alive(node.pid):
            tail = (state_dir / f"node-{index}" / "node.log").read_text(errors="replace")
            last = [line for line in tail.splitlines() if line.strip()][-1:]
            raise ClusterError(f"node {index} stopped: {' '.join(last) or 'see its node.log'}")
        time.sleep(0.2)
    raise ClusterError(
        f"node {index} not healthy after {START_SECONDS:.0f} s: {health(node.metrics)[1]}"
    )


def _stop_process_group(pid: int, timeout: float) -> None:
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # the node drains: open associations finish
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # anything left of its group


# -- HAProxy ----------------------------------------------------------------------------------


def _haproxy_config(state_dir: Path, state: State, nodes: list[NodeState]) -> Path:
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{n.dicom} check port {n.metrics}"
        for i, n in enumerate(nodes, 1)
    )
    text = f"""# Written by scripts/cluster: DICOM over TCP to the nodes, each checked on /health.
global
    maxconn 4096
    stats socket {state_dir / "haproxy.sock"} mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    # An association may idle between objects for as long as the node allows.
    timeout client 1h
    timeout server 1h
    timeout check 2s

frontend dicom
    bind 127.0.0.1:{state.port}
    default_backend nodes

backend nodes
    balance leastconn
    # A connection refused (a node just died, not yet marked down) is retried, the last
    # time on another node; an association already under way is not moved.
    retries 2
    option redispatch
    # A node answers 503 while it starts, drains or cannot write: no new associations go
    # to it; those it holds finish.
    option httpchk GET /health
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""
    path = state_dir / "haproxy.cfg"
    path.write_text(text)
    return path


def _start_haproxy(state_dir: Path, state: State, nodes: list[NodeState]) -> None:
    """(Re)start HAProxy in front of `nodes`; wait until it sees each one healthy."""
    config = _haproxy_config(state_dir, state, nodes)
    checked = subprocess.run(
        [HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if checked.returncode:
        raise ClusterError(f"HAProxy refuses {config}: {checked.stderr.strip()}")
    if _alive(state.haproxy_pid):
        # Reload with the new server list: the old process finishes its connections.
        _stop_process_group(state.haproxy_pid, 5)
    log = open(state_dir / "haproxy.log", "ab")  # noqa: SIM115 (the child's)
    process = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    state.haproxy_pid = process.pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _backends_up(state_dir) == len(nodes):
            return
        if not _alive(process.pid):
            raise ClusterError(f"HAProxy stopped: see {state_dir / 'haproxy.log'}")
        time.sleep(0.2)
    raise ClusterError("HAProxy does not see every node healthy")


def backend_states(state_dir: Path) -> dict[str, str]:
    """HAProxy's view: server name -> status (UP, DOWN, ...), from its stats socket."""
    sock_path = state_dir / "haproxy.sock"
    if not sock_path.exists():
        return {}
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    lines = data.decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    found = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "nodes" and row.get("svname") not in ("BACKEND", "FRONTEND"):
            found[row["svname"]] = row.get("status", "")
    return found


def _backends_up(state_dir: Path) -> int:
    return sum(1 for s in backend_states(state_dir).values() if s.startswith("UP"))


# -- commands ---------------------------------------------------------------------------------


def up(state_dir: Path, count: int, port: int | None, database: str) -> State:
    """Start (or complete) a cluster of `count` nodes; print its addresses."""
    if not Path(HAPROXY).exists():
        raise ClusterError(f"{HAPROXY} not found: apt-get install haproxy (scripts/cluster does)")
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # the postgres user reads its data folder below it
    state = _load(state_dir)
    if database == "auto":
        why_not = _postgres_usable()
        database = state.database if state else ("sqlite" if why_not else "postgres")
        if why_not and database == "sqlite" and state is None:
            print(f"note: {why_not}: each node gets its own SQLite audit database")
    elif database == "postgres" and (why_not := _postgres_usable()):
        raise ClusterError(why_not)
    if state is None:
        state = State(port=port or 11112, database=database)
    elif port:
        state.port = port
    secret_file = state_dir / "secret.hex"
    if not secret_file.exists():
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_hex(32) + "\n")
    secret = secret_file.read_text().strip()
    url = _start_postgres(state_dir, state) if state.database == "postgres" else None
    (state_dir / "output").mkdir(exist_ok=True)
    while len(state.nodes) < count:
        state.nodes.append(NodeState(_free_port(), _free_port()))
    for index, node in enumerate(state.nodes[:count], 1):
        if _alive(node.pid):
            continue
        config = _node_config(state_dir, index, node, url)
        node.pid = _start_node(state_dir, index, config, secret)
        _save(state_dir, state)
    for index, node in enumerate(state.nodes[:count], 1):
        _wait_healthy(state_dir, index, node)
    if len(backend_states(state_dir)) != count or not _alive(state.haproxy_pid):
        _start_haproxy(state_dir, state, state.nodes[:count])
    _save(state_dir, state)
    _print(state_dir, state, count)
    return state


def _print(state_dir: Path, state: State, count: int) -> None:
    where = (
        f"PostgreSQL 127.0.0.1:{state.pg_port} (database deid)"
        if state.database == "postgres"
        else "one SQLite database per node"
    )
    print(f"cluster in {state_dir}: {count} node(s), {where}")
    print(f"send DICOM to {AE_TITLE} at 127.0.0.1:{state.port} (HAProxy), e.g.")
    print(f"  TCP_NODELAY=1 storescu -aec {AE_TITLE} 127.0.0.1 {state.port} FILE...")
    for index, node in enumerate(state.nodes[:count], 1):
        print(
            f"node {index}: DICOM 127.0.0.1:{node.dicom}, "
            f"http://127.0.0.1:{node.metrics}/health and /metrics, "
            f"config {state_dir / f'node-{index}' / 'deid-node.toml'}"
        )
    print(f"output: {state_dir / 'output'}; stop with: scripts/cluster down")


def status(state_dir: Path) -> int:
    """Print what runs; 0 if everything is up and healthy."""
    state = _load(state_dir)
    if state is None:
        print(f"no cluster in {state_dir}")
        return 1
    ok = True
    backends = backend_states(state_dir)
    print(
        f"HAProxy 127.0.0.1:{state.port}: {'running' if _alive(state.haproxy_pid) else 'stopped'}"
    )
    ok &= _alive(state.haproxy_pid)
    for index, node in enumerate(state.nodes, 1):
        code, text = health(node.metrics)
        seen = backends.get(f"node{index}", "-")
        print(
            f"node {index}: 127.0.0.1:{node.dicom} pid {node.pid or '-'}: {code or '-'} {text}; "
            f"HAProxy sees {seen}"
        )
        ok &= code == 200
    return 0 if ok else 1


def down(state_dir: Path, purge: bool) -> None:
    """Stop the nodes (draining), HAProxy and PostgreSQL; with `purge`, delete the state."""
    state = _load(state_dir)
    if state is not None:
        for node in state.nodes:
            _stop_process_group(node.pid, 90)
            node.pid = 0
        _stop_process_group(state.haproxy_pid, 10)
        state.haproxy_pid = 0
        _save(state_dir, state)
    _stop_postgres(state_dir)
    if purge and state_dir.exists():
        shutil.rmtree(state_dir)
    print(f"cluster in {state_dir} stopped" + (" and deleted" if purge else ""))


def main(argv: list[str] | None = None) -> int:
    """Command line: up N | status | down [--purge]."""
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, default=ROOT / ".cluster", help="state folder")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start N nodes behind HAProxy")
    p_up.add_argument("count", type=int, nargs="?", default=2)
    p_up.add_argument("--port", type=int, help="HAProxy's DICOM port (default 11112)")
    p_up.add_argument("--database", choices=["auto", "postgres", "sqlite"], default="auto")
    sub.add_parser("status", help="what runs, each node's /health")
    p_down = sub.add_parser("down", help="stop everything")
    p_down.add_argument("--purge", action="store_true", help="also delete the state folder")
    args = parser.parse_args(argv)
    state_dir = args.state.resolve()
    try:
        if args.command == "up":
            if args.count < 1:
                raise ClusterError("up needs at least 1 node")
            up(state_dir, args.count, args.port, args.database)
            return 0
        if args.command == "status":
            return status(state_dir)
        down(state_dir, args.purge)
        return 0
    except ClusterError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
