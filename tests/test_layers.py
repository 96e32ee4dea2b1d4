"""The layers of ../shared/DESIGN.md, read from the code: every import in kzguard/ walked
with ast (function-level imports too; ``if TYPE_CHECKING:`` blocks, which never run, left
out). No cycle anywhere, and no import in a forbidden direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
PACKAGE = TOP / "kzguard"

# layer -> the layers (and outside packages) it must never import
FORBIDDEN = {
    "kzguard.base": ("kzguard.",),  # nothing of kzguard but base itself (checked below)
    "kzguard.judge": (
        "kzguard.actions",
        "kzguard.managers",
        "kzguard.service",
        "kzguard.guard",
        "kzguard.cli",
        "kzguard.context",
        "kzguard.root",
    ),
    "kzguard.facts": (
        "kzguard.actions",
        "kzguard.judge",
        "kzguard.guard",
        "kzguard.service",
        "kzguard.cli",
        "kzguard.context",
    ),
    "kzguard.distros": ("kzguard.",),
    "kzguard.actions": (
        "kzguard.managers",
        "kzguard.judge",
        "kzguard.guard",
        "kzguard.service",
        "kzguard.cli",
    ),
    "kzguard.managers": ("kzguard.service", "kzguard.cli"),
    "kzguard.guard": ("kzguard.cli",),
    "kzguard.service": ("kzguard.cli",),
}
# within their own layer, and what every layer may use
ALLOWED_BELOW = {
    "kzguard.base": ("kzguard.base",),
    "kzguard.distros": ("kzguard.distros", "kzguard.base"),
}
ONLY_IN_SERVICE = ("dbus", "gi", "prometheus_client")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(TOP).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports when it runs (kzguard's own resolved to modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _own(target: str) -> str | None:
    """The kzguard module an import names (a name inside a module resolves to the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {
    name: {own for t in _imports(name, path) if (own := _own(t)) and own != name}
    for name, path in MODULES.items()
}
EXTERNAL = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(GRAPH[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    return found


def _layer(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_the_walk_sees_the_tree():
    assert {"kzguard.context", "kzguard.root", "kzguard.managers", "kzguard.judge.policy"} <= set(
        GRAPH
    )
    assert "kzguard.judge.reasons" in GRAPH["kzguard.judge.decision"]  # an edge it must find


def test_no_import_cycle_anywhere():
    assert _cycles() == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_in_a_forbidden_direction(layer):
    allowed = ALLOWED_BELOW.get(layer, ())
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if _layer(name) == layer
        for target in targets
        if target.startswith(FORBIDDEN[layer])
        and not target.startswith(allowed)
        and target != "kzguard"
    )
    assert wrong == []


def test_bus_metrics_and_gi_only_in_the_service():
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in EXTERNAL.items()
        if not name.startswith("kzguard.service")
        for target in targets
        if target.split(".")[0] in ONLY_IN_SERVICE
    )
    assert wrong == []


def test_only_the_context_and_the_root_build_a_root_or_a_runner():
    """Below the entry points nothing builds its own Root or Runner: it takes the context's."""
    makers = {"kzguard.root", "kzguard.context"}
    wrong = []
    for name, path in MODULES.items():
        if name in makers:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if called == "Runner" or (
                called in ("Root", "open")
                and (called == "Root" or getattr(getattr(func, "value", None), "id", "") == "Root")
            ):
                wrong.append(f"{name}:{node.lineno}")
    assert wrong == []
