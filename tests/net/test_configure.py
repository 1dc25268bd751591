"""pynetdicom is configured by the processes that use it, at their start, never on import:
the supervisor imports the receiving and forwarding code and must leave pynetdicom as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The supervisor's modules: the CLI, the node, the receiving processes' supervisor, and
# the forwarding chain the node imports when it starts its forwarding process.
SUPERVISOR_MODULES = (
    "deid_node.cli.app",
    "deid_node.runtime.node",
    "deid_node.runtime.receivers",
    "deid_node.forward.process",
    "deid_node.intake.process",
    "deid_node.testing.fuzz.sender",
)

SCRIPT = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
from deid_node.net import pynetdicom_compat as compat
if sys.argv[1]:
    getattr(compat, sys.argv[1])()
print(json.dumps(compat.patched_settings()))
"""

PRISTINE = {
    "pynetdicom._config.STORE_RECV_CHUNKED_DATASET": "False",
    "pynetdicom._config.STORE_SEND_CHUNKED_DATASET": "False",
    "pynetdicom._config.LOG_HANDLER_LEVEL": "'standard'",
    "pynetdicom.dul.time": "module time",
    "pynetdicom.association.time": "module time",
    "pynetdicom.association.split_dataset": "pynetdicom.dsutils.split_dataset",
    "pynetdicom.dimse_messages.NamedTemporaryFile": "tempfile.NamedTemporaryFile",
}
QUICK = {
    "pynetdicom._config.LOG_HANDLER_LEVEL": "'none'",
    "pynetdicom.dul.time": "_ReactorTime",
    "pynetdicom.association.time": "_ReactorTime",
}


def settings_after(configure: str, *modules: str) -> dict[str, str]:
    """pynetdicom's settings in a fresh interpreter that imported `modules`, then called
    `configure` (a function of the compat module; "" for none)."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, configure, *modules],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_importing_the_supervisors_modules_leaves_pynetdicom_unpatched() -> None:
    assert settings_after("", *SUPERVISOR_MODULES) == PRISTINE


@pytest.mark.parametrize(
    ("configure", "changed"),
    [
        ("configure_receiving", {"pynetdicom._config.STORE_RECV_CHUNKED_DATASET": "True"}),
        ("configure_sending", {"pynetdicom._config.STORE_SEND_CHUNKED_DATASET": "True"}),
    ],
)
def test_each_process_kind_changes_only_what_it_needs(
    configure: str, changed: dict[str, str]
) -> None:
    assert settings_after(configure) == PRISTINE | QUICK | changed


ROUTE_UNCONFIGURED = """
from pynetdicom.ae import ApplicationEntity
from deid_node.net import pynetdicom_compat as compat
try:
    compat.route_datasets(ApplicationEntity(), lambda assoc: None)
except RuntimeError as exc:
    print(exc)
"""


def test_data_sets_are_not_routed_to_the_spool_in_a_process_that_did_not_configure() -> None:
    # Without chunked receipt a data set would stay in memory and never reach the spool.
    done = subprocess.run(
        [sys.executable, "-c", ROUTE_UNCONFIGURED], capture_output=True, check=True, text=True
    )
    assert done.stdout.strip() == "configure_receiving() was not called in this process"
