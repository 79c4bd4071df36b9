"""The package's layout keeps its promises: data flows one way, and the names do not collide.

Read from the source with ``ast`` (imports inside functions and under ``TYPE_CHECKING`` count
too), so a cycle cannot hide behind a deferred import, and from the imported package, so a
function cannot shadow a module of the same name.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import jaxrnn

ROOT = Path(jaxrnn.__file__).resolve().parent

# Third-party packages each module family may import (the rest of the library may not):
# Flax in the Flax wrappers and, lazily, the interop converters; Optax, orbax and tqdm in
# training and the models built on it; torch and equinox lazily, in interop only.
OPTIONAL_IMPORTS = {
    "flax": ("jaxrnn.flax", "jaxrnn.interop"),
    "optax": ("jaxrnn.train", "jaxrnn.models"),
    "orbax": ("jaxrnn.train",),
    "tqdm": ("jaxrnn.train",),
    "torch": ("jaxrnn.interop",),
    "equinox": ("jaxrnn.interop",),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ["jaxrnn", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``name`` imports anywhere in its source (absolute)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the jaxrnn modules it imports (not its own package, nor the root package)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        deps = {resolve(n) for n in _imports(name, path) if n.startswith("jaxrnn")}
        graph[name] = {
            d for d in deps if d and d not in (name, "jaxrnn") and not name.startswith(d + ".")
        }
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert _find_cycle(_graph()) is None


def test_core_types_import_nothing_of_jaxrnn():
    assert _graph()["jaxrnn._core"] == set()


@pytest.mark.parametrize("package", ["jaxrnn.train"])
def test_types_module_is_at_the_bottom_of_its_package(package):
    graph = _graph()
    assert not {d for d in graph[f"{package}._types"] if d.startswith(package)}


def test_optional_dependencies_stay_in_their_rooms():
    for name, path in _modules().items():
        for imported in _imports(name, path):
            top = imported.split(".")[0]
            if top in OPTIONAL_IMPORTS:
                rooms = OPTIONAL_IMPORTS[top]
                assert any(name == r or name.startswith(r + ".") for r in rooms), (
                    f"{name} imports {imported}; only {', '.join(rooms)} may"
                )


def test_no_function_shadows_a_module():
    """``import jaxrnn.x as m`` gives the module, not a function bound over it."""
    for info in pkgutil.walk_packages(jaxrnn.__path__, "jaxrnn."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        parent, _, leaf = info.name.rpartition(".")
        bound = getattr(importlib.import_module(parent), leaf, module)
        assert bound is module, f"{parent}.{leaf} is {bound!r}, not the module {info.name}"


def test_public_names_come_from_private_files_or_public_modules():
    """Every ``jr.*`` name resolves, and every name in a public ``__all__`` exists."""
    for name in jaxrnn.__all__:
        assert getattr(jaxrnn, name) is not None, name
    for public in ["jaxrnn.cells", "jaxrnn.layers", "jaxrnn.newton", "jaxrnn.cudnn"]:
        module = importlib.import_module(public)
        for name in module.__all__:
            assert hasattr(module, name), f"{public}.{name}"
