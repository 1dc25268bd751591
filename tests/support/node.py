"""A node under test: its config, what it wrote and audited, and a node run as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.audit.records import AssociationFilters, Filters
from deid_node.config import Config
from deid_node.deid.pseudonym import pseudo_uid
from deid_node.intake.spool import Receipt, Spool, SpoolItem
from deid_node.testing.loopback import deid_node_command
from tests.support.files import files_under
from tests.support.scu import NODE_AE

IDLE = 60.0  # seconds: generous bounds, only reached when something is broken

# A [node] table for tests: small pool, short timeouts, port chosen by the test.
NODE_TABLE = """
[node]
ae_title = "DEID_NODE"
host = "127.0.0.1"
port = {port}
data_dir = "var"
workers = {workers}
max_associations = 8
network_timeout = 15
acse_timeout = 10
dimse_timeout = 30
"""

# CT_SCANNER sends to the research profile; append the profile's keys.
CT_SOURCE = """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
"""
ONE_SOURCE = CT_SOURCE + "record_linkage = true\n"


def node_table(port: int = 0, workers: int = 2) -> str:
    """The [node] table of a test config (append [[sources]] and [profiles.*])."""
    return NODE_TABLE.format(port=port, workers=workers)


def key_of(cfg: Config) -> bytes:
    """The node's pseudonym key."""
    return cfg.node.secret_path.read_bytes()


def expected_output(cfg: Config, profile: str, datasets: list[Dataset]) -> set[str]:
    """The pseudonymous SOP Instance UIDs the node must write for these datasets."""
    key = key_of(cfg)
    return {pseudo_uid(key, profile, str(ds.SOPInstanceUID)) for ds in datasets}


def output_sops(cfg: Config, profile: str | None = None) -> list[str]:
    """The SOP Instance UIDs of the files in output/ (of one profile)."""
    root = cfg.node.output / profile if profile else cfg.node.output
    return [p.stem for p in files_under(root, "*.dcm")]


def spool_files(cfg: Config) -> list[Path]:
    """What is left in spool/."""
    return files_under(cfg.node.spool)


def audit_objects(cfg: Config, **filters: Any) -> list[dict[str, object]]:
    """Object rows of the node's audit database, oldest first."""
    with open_audit(cfg.database_url) as db:
        return list(db.iter_objects(Filters(**filters)))


def audit_associations(cfg: Config) -> list[dict[str, object]]:
    """Association rows of the node's audit database, oldest first."""
    with open_audit(cfg.database_url) as db:
        return list(reversed(list(db.iter_associations(AssociationFilters()))))


def publish_in_spool(spool: Spool, path: Path, profile: str = "research") -> SpoolItem:
    """Put a file into spool/ exactly as the SCP does after a C-STORE (as a crash leaves
    it: acknowledged, not yet processed); the entry."""
    incoming = spool.open_incoming(owner=None)
    incoming.write(path.read_bytes())
    incoming.flush()
    receipt = Receipt(
        received_at=datetime.now(UTC),
        association_id="before-the-crash",
        calling_ae="CT_SCANNER",
        called_ae=NODE_AE,
        peer_address="127.0.0.1",
        profile=profile,
        size_bytes=incoming.size,
        sop_class_uid=CTImageStorage,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    return spool.publish(incoming, receipt)


def console_user(cfg: Config, name: str, password: str) -> str:
    """Add a web console user through the CLI, as an operator would; a new API token."""
    from deid_node.cli.app import app

    runner = CliRunner()
    config = ["-c", str(cfg.path)]
    added = runner.invoke(
        app, ["users", "add", name, "--password-stdin", *config], input=password + "\n"
    )
    assert added.exit_code == 0, added.output
    made = runner.invoke(app, ["users", "token", name, *config])
    assert made.exit_code == 0, made.output
    return made.output.strip()


def serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`deid-node serve` in a process group of its own (kill -9 takes its workers too)."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            [*deid_node_command(), "serve", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Leave nothing behind: the node and what it started (its own process group)."""
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(10)
