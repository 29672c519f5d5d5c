"""Layers point one way (docs/design.md §2), checked from the source as the no-I/O test is.

Every module under bfs_smr/, apps/ and adapters/ is parsed (apps/ is ``bfs_smr.apps`` and
adapters/ is ``bfs_smr.adapters``, as they install) and each first-party import is
resolved to the module it names. Then:

* each import points down the layers: core ← plugins ← apps, adapters ← runtime ←
  testing, cli (the table ``MAY_IMPORT``; type-only imports too, since a type from above
  drags its layer into the one below's meaning);
* the layers' import graph, from what runs at import time, has no cycle, and neither has
  the graph of the modules themselves;
* a first-party import inside a function is only for an optional extra (the ``evm``
  adapter, the chart), never to dodge a cycle;
* nothing imports the top-level packages ``apps`` or ``adapters``, which do not exist once
  installed.

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, unless the
importer lives inside them: those package edges count for cycles (that is how
``adapters.memory`` → ``bfs_smr.runtime`` → ``runtime._local`` → ``adapters.memory``
closes).
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Where each part of the installed package lives in the repository (pyproject.toml's
#: package-dir mapping).
SOURCES = {
    "bfs_smr": ROOT / "bfs_smr",
    "bfs_smr.apps": ROOT / "apps",
    "bfs_smr.adapters": ROOT / "adapters",
}

#: The layers, and which layers each may import (itself included): docs/design.md §2.
MAY_IMPORT = {
    "core": {"core"},
    "plugins": {"core", "plugins"},
    "apps": {"core"},
    "adapters": {"core", "plugins", "adapters"},
    "runtime": {"core", "plugins", "apps", "adapters", "runtime"},
    "testing": {"core", "plugins", "apps", "adapters", "runtime", "testing"},
    "cli": {"core", "plugins", "apps", "adapters", "runtime", "cli"},
}

#: Optional extras: the only first-party modules a function may import when it runs,
#: so that the rest works without the extra's dependencies installed.
EXTRAS = ("bfs_smr.adapters.evm", "bfs_smr.cli._chart")

#: Folders also scanned for imports of the top-level ``apps``/``adapters``.
OTHER_CODE = (ROOT / "tests", ROOT / "docs")


def layer(module: str) -> str:
    """The layer of a ``bfs_smr`` module: core is ``bfs_smr`` and ``bfs_smr/*.py``."""
    parts = module.split(".")
    assert parts[0] == "bfs_smr", module
    if len(parts) > 1 and parts[1] in MAY_IMPORT and parts[1] != "core":
        return parts[1]
    return "core"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """What a relative import starts from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    source: Module
    line: int
    target: str  # the first-party module this import runs
    in_function: bool
    type_only: bool  # under ``if TYPE_CHECKING:``: not run

    def where(self) -> str:
        return f"{self.source.path.relative_to(ROOT)}:{self.line}"


def _python_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for prefix, folder in SOURCES.items():
        for path in _python_files(folder):
            rel = path.relative_to(folder)
            if prefix == "bfs_smr" and rel.parts[0] in {"apps", "adapters"}:
                continue  # not there today; would shadow the mapped folders
            parts = list(rel.parts[:-1])
            is_package = path.name == "__init__.py"
            if not is_package:
                parts.append(path.stem)
            name = ".".join([prefix, *parts])
            found[name] = Module(name, path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, in_function: bool = False, type_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement under ``node``, with whether it runs in a function and
    whether it is type-only."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_only
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, type_only)
        else:
            yield from _walk(child, in_function, type_only)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        assert node.module is not None
        return node.module
    base = module.package.split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports() -> tuple[Import, ...]:
    known = modules()
    found: list[Import] = []
    for module in known.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        for node, in_function, type_only in _walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(module, node)
                # ``from pkg import name``: name is a submodule, or an attribute of pkg.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                if target.split(".")[0] == "bfs_smr":
                    found.append(Import(module, node.lineno, target, in_function, type_only))
    return tuple(found)


def runs_at_import(imp: Import) -> list[str]:
    """The modules an import runs when its module is imported: the target and the
    packages above it that do not contain the importer (those are running already)."""
    if imp.in_function or imp.type_only:
        return []
    parts = imp.target.split(".")
    above = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    own = imp.source.name
    return [m for m in above if not (own == m or own.startswith(m + "."))]


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _lines(items: list[str]) -> str:
    return "\n  " + "\n  ".join(items)


# -- the tests ----------------------------------------------------------------------------


def test_every_part_of_the_package_is_found():
    """The scan sees every layer, apps/ and adapters/ under their installed names."""
    names = modules()
    assert {"bfs_smr", "bfs_smr._channel", "bfs_smr.apps.payments", "bfs_smr.adapters.memory",
            "bfs_smr.adapters.evm", "bfs_smr.plugins", "bfs_smr.runtime.store",
            "bfs_smr.cli"} <= set(names)  # fmt: skip
    assert {layer(name) for name in names} == set(MAY_IMPORT)
    assert len(imports()) > 100


def test_imports_point_down_the_layers():
    wrong = [
        f"{imp.where()}: {layer(imp.source.name)} imports {imp.target} ({layer(imp.target)})"
        for imp in imports()
        if layer(imp.target) not in MAY_IMPORT[layer(imp.source.name)]
    ]
    assert not wrong, "imports against the layers (docs/design.md §2):" + _lines(wrong)


def test_apps_use_only_the_public_core():
    """An app imports the core as ``bfs_smr``, as a third-party app must."""
    wrong = [
        f"{imp.where()}: {imp.target}"
        for imp in imports()
        if layer(imp.source.name) == "apps" and imp.target != "bfs_smr"
    ]
    assert not wrong, "apps importing more than bfs_smr:" + _lines(wrong)


def test_may_import_is_itself_one_way():
    """The table admits no cycle between layers, so obeying it is enough for that."""
    graph = {a: {b for b in allowed if b != a} for a, allowed in MAY_IMPORT.items()}
    assert _find_cycle(graph) is None


def test_no_cycle_between_layers():
    graph: dict[str, set[str]] = {}
    for imp in imports():
        for target in runs_at_import(imp):
            a, b = layer(imp.source.name), layer(target)
            if a != b:
                graph.setdefault(a, set()).add(b)
    cycle = _find_cycle(graph)
    assert cycle is None, "layers import each other: " + " → ".join(cycle or [])


def test_no_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for imp in imports():
        for target in runs_at_import(imp):
            graph.setdefault(imp.source.name, set()).add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "modules import each other at import time: " + " → ".join(cycle or [])


def test_first_party_imports_in_functions_only_for_optional_extras():
    lazy = [
        f"{imp.where()}: {imp.target}"
        for imp in imports()
        if imp.in_function
        and not any(imp.target == x or imp.target.startswith(x + ".") for x in EXTRAS)
    ]
    assert not lazy, "first-party imports inside functions:" + _lines(lazy)


def test_nothing_imports_top_level_apps_or_adapters():
    """Installed, they are ``bfs_smr.apps`` and ``bfs_smr.adapters``; the bare names are
    other projects' (docs/design.md §2)."""
    bare = re.compile(r"(apps|adapters)(\.|:|$)")
    wrong: list[str] = []
    paths = [m.path for m in modules().values()]
    paths += [p for folder in OTHER_CODE for p in _python_files(folder)]
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
            wrong += [f"{where}:{node.lineno}: {n}" for n in names if bare.match(n)]
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for group, points in entry_points.get("entry-points", {}).items():
        for name, value in points.items():
            if not value.startswith("bfs_smr."):
                wrong.append(f"pyproject.toml: entry point {group}:{name} = {value}")
    assert not wrong, "top-level apps/adapters named:" + _lines(wrong)


# -- the checker itself can fail ------------------------------------------------------------


def test_the_checker_sees_lazy_type_only_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import _app\n"
        "from ..store import Store\n"
        "if TYPE_CHECKING:\n"
        "    from bfs_smr.cli import main\n"
        "def f():\n"
        "    import bfs_smr.adapters.evm\n"
        "    from bfs_smr.runtime import _local\n"
    )
    fake = Module("bfs_smr.runtime.node.mod", source, is_package=False)
    tree = ast.parse(source.read_text())
    seen = []
    for node, in_function, type_only in _walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            continue
        base = _absolute(fake, node) if isinstance(node, ast.ImportFrom) else node.names[0].name
        seen.append((base, in_function, type_only))
    assert seen == [
        ("bfs_smr.runtime.node", False, False),
        ("bfs_smr.runtime.store", False, False),
        ("bfs_smr.cli", False, True),
        ("bfs_smr.adapters.evm", True, False),
        ("bfs_smr.runtime", True, False),
    ]


def test_package_edges_close_the_cycle_the_issue_found():
    """``adapters.memory`` importing ``bfs_smr.runtime.store`` runs ``bfs_smr.runtime``."""
    source = modules()["bfs_smr.adapters.memory"]
    imp = Import(source, 1, "bfs_smr.runtime.store", in_function=False, type_only=False)
    assert runs_at_import(imp) == ["bfs_smr.runtime", "bfs_smr.runtime.store"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
