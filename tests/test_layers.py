"""The package layers: arrows point down, and nothing imports in a circle.

Read from the source (every import statement, inside functions and ``TYPE_CHECKING``
blocks too), not from what an interpreter happens to load.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deid_node"

# Higher imports lower; one layer may import within itself, but not in a circle. The
# top-level modules (config, errors, clock, ...) are the ground floor: every layer uses
# them, and they import only each other. net/ belongs to the bottom layer whether or not
# it exists yet.
LAYERS: dict[str, int] = {
    "__main__": 5,
    **dict.fromkeys(("cli", "web", "testing"), 4),
    **dict.fromkeys(("ops", "runtime", "forward"), 3),
    **dict.fromkeys(("intake", "deid", "pixels"), 2),
    **dict.fromkeys(("net", "dicom", "audit"), 1),
}
GROUND = 0


def _module_name(path: Path) -> str:
    parts = ["deid_node", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> Iterable[str]:
    """Every deid_node module `path` names in an import, wherever the statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    """Module -> the deid_node modules it imports (those that exist)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        module: {name for name in _imports(path, module) if name in paths and name != module}
        for module, path in paths.items()
    }


def _unit(module: str) -> str:
    """The package a module belongs to (`audit`, ...), or the top-level module's name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_ground(module: str) -> bool:
    parts = module.split(".")
    if len(parts) == 1:
        return True  # deid_node itself: its version
    return len(parts) == 2 and not (PACKAGE / parts[1]).is_dir() and parts[1] != "__main__"


def _layer(module: str) -> int:
    if _is_ground(module):
        return GROUND
    unit = _unit(module)
    assert unit in LAYERS, f"package {unit}/ has no layer: add it to LAYERS (and DESIGN.md)"
    return LAYERS[unit]


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_arrows_point_down() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _unit(module) != _unit(target) and _layer(target) > _layer(module)
    )
    assert upward == []


def test_no_import_circle_between_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        if _is_ground(module):
            continue
        packages[_unit(module)].update(
            _unit(t) for t in targets if not _is_ground(t) and _unit(t) != _unit(module)
        )
    assert _circles(packages) == []


def test_no_import_circle_between_modules() -> None:
    assert _circles(_graph()) == []


def test_the_checks_see_what_they_look_for() -> None:
    # The scan finds imports inside functions, and a circle when there is one.
    graph = _graph()
    assert "deid_node.forward.process" in graph["deid_node.runtime.forwarding"]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
