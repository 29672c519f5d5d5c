"""The optional compiled build (README.md, "A compiled build"): which modules it compiles,
and that a test run knows which build it runs.

.ci/run builds the compiled wheel, installs it into a virtualenv of its own and runs the
core's tests there from a copy of tests/, with ``BFS_SMR_EXPECT_COMPILED=1``: the first
test below then fails if anything but the compiled modules was imported (the checkout, or
the editable install). In the ordinary run it checks that a checkout's editable install
is pure Python.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
from pathlib import Path

import pytest

import bfs_smr
from bfs_smr._build import COMPILABLE, build_description, compiled_modules, is_compiled

ROOT = Path(__file__).resolve().parents[1]
EXPECT_COMPILED = os.environ.get("BFS_SMR_EXPECT_COMPILED") == "1"


def test_the_build_that_runs_is_the_one_expected() -> None:
    if EXPECT_COMPILED:
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        for module in COMPILABLE:
            assert (module.__file__ or "").endswith(suffixes), module.__file__
        assert is_compiled()
        assert build_description() == "mypyc-compiled core"
        # the installed package, never a checkout's folder beside the tests
        assert Path(bfs_smr.__file__).resolve().parent != ROOT / "bfs_smr"
    elif Path(bfs_smr.__file__).resolve().parent == ROOT / "bfs_smr":
        # an editable install of this checkout: pure Python, whatever the environment said
        assert compiled_modules() == ()
        assert not is_compiled()
        assert build_description() == "pure Python"
    else:
        pytest.skip("an installed bfs_smr, and no BFS_SMR_EXPECT_COMPILED=1 to say which")


def test_setup_compiles_exactly_the_modules_the_build_reports() -> None:
    """setup.py's COMPILED list and bfs_smr._build's COMPILABLE name the same modules: a
    module compiled but not reported (or reported but never compiled) would make
    ``--version`` say a compiled build is only partly compiled, or the reverse."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
    )
    paths = ast.literal_eval(listed)
    assert [p.removesuffix(".py").replace("/", ".") for p in paths] == [
        m.__name__ for m in COMPILABLE
    ]


def test_the_classes_others_subclass_stay_interpreted() -> None:
    """Apps, L1 adapters and signature schemes subclass these: a compiled class cannot be
    subclassed by an interpreted one, so their modules are never in the compiled set."""
    names = {m.__name__ for m in COMPILABLE}
    for cls in (bfs_smr.StateMachine, bfs_smr.L1Format, bfs_smr.L1Adapter):
        assert cls.__module__ not in names
    assert bfs_smr.SignatureScheme.__module__ not in names
    assert bfs_smr.BfsSmrError.__module__ not in names
