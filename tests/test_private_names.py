"""Only the two compat modules reach private pydicom and pynetdicom names.

Each reach into a library's internals is a promise an upgrade may break; the compat
modules keep them in one place, each with its test (test_pydicom_compat.py,
test_pynetdicom_compat.py). This scans deid_node's source: imports of a private module
or name (``from pydicom._x import``, ``from pynetdicom import _config``), and ``._name``
on anything imported from the libraries or on a variable annotated with one of their
types (``ds: Dataset`` ... ``ds._character_set``), including getattr/setattr/hasattr
with a ``"_name"`` string.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deid_node"
LIBRARIES = ("pydicom", "pynetdicom")
COMPAT = {
    PACKAGE / "dicom" / "pydicom_compat.py",
    PACKAGE / "net" / "pynetdicom_compat.py",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


def _root(node: ast.expr) -> str | None:
    """The name an attribute chain starts from (``a`` in ``a.b.c``)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _annotation_names(node: ast.expr | None) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node else set()


def private_reaches(source: str) -> list[str]:
    """Each reach into a private pydicom/pynetdicom name in `source`: "line: what"."""
    tree = ast.parse(source)
    found: list[str] = []
    imported: set[str] = set()  # names bound to a library's modules, classes, functions
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
                    imported.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _library(node.module):
            assert node.module is not None
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{node.lineno}: from {node.module} import")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                imported.add(alias.asname or alias.name)
    # Variables typed as a library's class: parameters and annotated assignments.
    typed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and _annotation_names(node.annotation) & imported:
            typed.add(node.arg)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and _annotation_names(node.annotation) & imported
        ):
            typed.add(node.target.id)
    roots = imported | typed
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _root(node) in roots:
            found.append(f"{node.lineno}: {_root(node)}...{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and _root(node.args[0]) in roots
        ):
            found.append(f"{node.lineno}: {node.func.id}({_root(node.args[0])}, ...)")
    return found


def test_no_module_but_the_compat_modules_reaches_a_private_library_name() -> None:
    offenders = {
        str(path.relative_to(PACKAGE.parent)): reaches
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in COMPAT and (reaches := private_reaches(path.read_text("utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        "from pydicom._dicom_dict import DicomDictionary",
        "from pydicom.sr import _concepts_dict",
        "from pynetdicom import _config",
        "import pydicom._uid_dict",
        "from pydicom import Dataset\ndef f(ds: Dataset) -> str:\n    return ds._character_set",
        "import pynetdicom\npynetdicom.association._x = 1",
        "from pynetdicom.ae import ApplicationEntity as AE\n"
        "def f(ae: AE):\n    ae._servers.append(1)",
        "from pynetdicom.association import Association\n"
        "def f(a: Association | None):\n    getattr(a, '_private')",
        "from pydicom.dataset import Dataset\nds: Dataset = Dataset()\nds._dict.clear()",
    ],
)
def test_the_scan_finds_each_kind_of_reach(source: str) -> None:
    assert private_reaches(source)


@pytest.mark.parametrize(
    "source",
    [
        "from pydicom import Dataset\n"
        "class A:\n    def f(self, ds: Dataset):\n        self._x = ds",
        "from pydicom import Dataset\ndef f(ds: Dataset):\n    return ds.__class__",
        "import os\nos._exit(0)",
        "from pydicom.uid import UID\nx = UID('1.2').name",
    ],
)
def test_the_scan_leaves_our_own_private_names_alone(source: str) -> None:
    assert private_reaches(source) == []
