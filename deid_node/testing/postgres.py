"""A throwaway PostgreSQL server for tests and benches: Debian's, run as the `postgres`
user in a temporary folder, on 127.0.0.1 and a given port, its unix socket in that folder.

`scripts/test` installs Debian's `postgresql` when missing; without its binaries the tests
that need the server are skipped (:func:`server_bin` is None).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"


def server_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder with initdb and pg_ctl, or None."""
    found = [
        p
        for p in Path("/").glob(BIN_GLOB.lstrip("/"))
        if (p / "initdb").exists() and (p / "pg_ctl").exists() and (p / "postgres").exists()
    ]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


class PostgresServer:
    """initdb, start, restart and stop one PostgreSQL cluster; create databases in it."""

    def __init__(self, bin_dir: Path, port: int, *, fsync: bool = False) -> None:
        """A cluster in a new temporary folder, owned by `postgres` when run as root;
        without `fsync` (tests) commits are not pushed to disk."""
        self.bin = bin_dir
        self.port = port
        self.fsync = fsync
        self.folder = Path(tempfile.mkdtemp(prefix="deid-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        os.chmod(self.folder, 0o700)
        self._names = itertools.count(1)

    def _run(self, args: Sequence[str], timeout: float = 120) -> None:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-2000:]}\n{log}")

    def init(self) -> None:
        """Create the cluster: trust on loopback (a test server), superuser `postgres`."""
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200"
        if not self.fsync:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
            + ["-o", options, "-w", "-t", "60", "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clients are disconnected, as in a restart)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        """Stop (fast) and start again: every client connection is cut."""
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database of this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"deid_test_{next(self._names)}"
        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
