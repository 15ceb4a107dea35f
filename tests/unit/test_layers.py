"""The shape of the house: the import graph points one way, modules stay readable.

Read from the source with `ast` (imports under `if TYPE_CHECKING:` do not run
and are left out): no module imports the package root, no runtime import
circle, each layer imports only the layers below it (docs/architecture.md),
and no module grows past the sizes the architecture promises.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pywebtransport

pytestmark = pytest.mark.timeout(30)

ROOT = Path(pywebtransport.__file__).parent
PACKAGE = "pywebtransport"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> set[str]:
    """The package modules a module imports when it runs (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith(PACKAGE):
                    continue
                for alias in node.names:
                    # `from . import x` may name a module or a package member.
                    found.add(
                        f"{target}.{alias.name}" if _exists(f"{target}.{alias.name}") else target
                    )
            for child in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, child, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    visit(block)

    visit(ast.parse(path.read_text()).body)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").exists() or (
        ROOT / relative / "__init__.py"
    ).exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in sorted(ROOT.rglob("*.py"))}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] == "transport" and len(parts) > 2:
        if parts[2] in ("_core", "_aioquic", "_admission", "_routing"):
            return parts[2]
        if parts[2] in ("_engine", "_setup", "_endpoint"):
            return "engine"
        return "facades"
    return parts[1]


def test_nothing_imports_the_package_root() -> None:
    for module, imports in _graph().items():
        assert PACKAGE not in imports, module


def test_no_runtime_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            # A package's __init__ runs before its modules; count only module edges.
            if target not in graph:
                continue
            if state.get(target) == 1:
                circle = [*stack[stack.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                walk(target)
        stack.pop()
        state[module] = 2

    for module in graph:
        if module not in state and not module.endswith("__init__"):
            walk(module)


_MAY_IMPORT = {
    "shared": {"shared"},
    "_core": {"_core", "shared"},
    "_admission": {"_admission", "shared"},
    "_routing": {"shared"},
    "_aioquic": {"_aioquic", "_core", "_routing", "shared"},
    "engine": {"engine", "_aioquic", "_core", "_admission", "_routing", "shared"},
}


@pytest.mark.parametrize("layer", sorted(_MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = _MAY_IMPORT[layer]
    for module, imports in _graph().items():
        if _layer(module) != layer:
            continue
        for target in imports:
            if target == f"{PACKAGE}.transport":
                continue  # the package itself (its __init__ runs first anyway)
            assert _layer(target) in allowed, f"{module} imports {target}"


def test_modules_stay_readable() -> None:
    for path in sorted(ROOT.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        limit = 700 if "_aioquic" in path.parts else 1000
        assert lines <= limit, f"{path.relative_to(ROOT)} has {lines} lines (limit {limit})"
