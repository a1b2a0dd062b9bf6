"""The layout of ``landscape_core`` (issue 23): its import graph has no circle, no module
imports another module's private names, no file is over 500 lines, and nothing imports the
service's libraries. Imports are read with ``ast`` wherever they are written: at module
level, inside functions and under ``if TYPE_CHECKING:`` alike.

Edges: ``import a.b.c`` and ``from a.b.c import x`` make the importer depend on ``a.b.c``
and on the packages above it (Python runs ``a/__init__.py`` and ``a/b/__init__.py`` first),
except the importer's own packages (already being initialised when it runs); ``from a.b
import c`` also on the submodule ``a.b.c`` when there is one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "landscape_core"
#: the service's libraries: the core takes plain values and tensors (docs/architecture.md)
FORBIDDEN = {"ray", "mlflow", "hydra", "pyarrow", "pandas", "optuna"}
MAX_LINES = 500


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(name: str, path: Path) -> list[tuple[str, list[str], ast.AST]]:
    """(imported module, names taken from it, node) for every import statement in the file;
    relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [alias.name for alias in node.names], node))
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of ``root``'s package it depends on (module docstring)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        own = set(_ancestors(name))
        for target, names, _ in _imports(name, path):
            deps = {target, *_ancestors(target)} | {f"{target}.{n}" for n in names}
            graph[name] |= {d for d in deps if d in modules and d != name and d not in own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def private_imports(root: Path) -> list[str]:
    """``from x import _name`` and ``x._name`` (x another module of the package) in each module."""
    modules = _modules(root)
    top = root.name
    found = []
    for name, path in modules.items():
        aliases: dict[str, str] = {}  # local name -> module of the package
        for target, _, node in _imports(name, path):
            if target.split(".")[0] != top:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = alias.name if alias.asname else alias.name.split(".")[0]
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target != name:
                    found.append(f"{name}: from {target} import {alias.name}")
                if f"{target}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            dotted, value = [], node.value
            while isinstance(value, ast.Attribute):
                dotted.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                owner = ".".join([aliases[value.id], *dotted])
                if owner in modules and owner != name:
                    found.append(f"{name}: {owner}.{node.attr}")
    return found


def test_core_import_graph_has_no_circle():
    graph = import_graph(CORE)
    assert "landscape_core.teacher_student.objective" in graph["landscape_core.teacher_student.descent"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_module_imports_private_names_of_another():
    assert private_imports(CORE) == []


def test_no_core_file_over_the_size_cap():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules(CORE).items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_core_never_imports_the_service_libraries():
    found = [
        f"{name}: {target}"
        for name, path in _modules(CORE).items()
        for target, _, _ in _imports(name, path)
        if target.split(".")[0] in FORBIDDEN
    ]
    assert found == []


@pytest.fixture()
def toy_package(tmp_path):
    """A package with a circle through a package ``__init__`` (under TYPE_CHECKING and in a
    function) and private imports both ways."""
    root = tmp_path / "toy"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.sub.c import C\n",
        "sub/__init__.py": "from toy.sub.b import B\n",
        "sub/b.py": "B = 1\n",
        "sub/c.py": "def f():\n    import toy.a as a\n    return a._hidden\n",
        "d.py": "from toy.sub.b import _x\nfrom . import a\nfrom .sub import b\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_checks_find_circles_and_private_imports(toy_package):
    graph = import_graph(toy_package)
    assert graph["toy.a"] == {"toy.sub.c", "toy.sub"}  # the package of c too
    assert graph["toy.sub.c"] == {"toy.a"}
    assert graph["toy.d"] == {"toy.sub.b", "toy.sub", "toy.a"}
    assert find_cycle(graph) == ["toy.a", "toy.sub.c", "toy.a"]
    assert sorted(private_imports(toy_package)) == ["toy.d: from toy.sub.b import _x", "toy.sub.c: toy.a._hidden"]
