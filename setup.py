"""Builds the optional compiled core; everything else is declared in pyproject.toml.

Without ``BFS_SMR_COMPILE`` this adds nothing: the package is pure Python, as always. With
``BFS_SMR_COMPILE=1`` (README.md, "A compiled build") the modules below are compiled with
mypyc into C extensions that replace them; the .py files still ship beside them. The
compiled modules are the per-update and per-command path (docs/performance.md, "Compiled
build"); the classes that apps, L1 adapters and signature schemes subclass (``_app``,
``_l1``, ``_crypto``) and the error hierarchy stay interpreted, since a compiled class
cannot be subclassed by an interpreted one. ``_limits`` stays interpreted as well: its
ChannelLimits is built from configuration, and a compiled class would raise TypeError for
a wrong type before its own check could raise LocalError.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from setuptools import setup

# Kept in step with bfs_smr/_build.py's COMPILABLE, which reports what runs compiled.
COMPILED = [
    "bfs_smr/_codec.py",
    "bfs_smr/_update.py",
    "bfs_smr/_messages.py",
    "bfs_smr/_lazydeque.py",
    "bfs_smr/_state.py",
    "bfs_smr/_sequencer.py",
    "bfs_smr/_follower.py",
    "bfs_smr/_recovery.py",
    "bfs_smr/_dispute.py",
    "bfs_smr/_reaction.py",
]


def _compiled_build() -> dict[str, object]:
    """setup()'s extra arguments for the compiled build."""
    from mypyc.build import mypycify  # only the compiled build needs mypy

    # A fresh build folder each time, outside the checkout: a build/ left by an earlier
    # build would put its stale extensions (of a module since dropped from COMPILED, or of
    # older sources) into the wheel, and a pure build never looks there.
    build_base = tempfile.mkdtemp(prefix="bfs-smr-mypyc-")
    atexit.register(shutil.rmtree, build_base, ignore_errors=True)
    # The type check mypyc runs first is the project's own ([tool.mypy], strict). The
    # compiled modules share one top-level extension with mypyc's runtime, named after
    # the group (bfs_smr_core__mypyc) rather than after a hash of the sources.
    ext_modules = mypycify(
        COMPILED,
        opt_level="3",
        group_name="bfs_smr_core",
        target_dir=os.path.join(build_base, "mypyc"),
    )
    return {"ext_modules": ext_modules, "options": {"build": {"build_base": build_base}}}


if os.environ.get("BFS_SMR_COMPILE", "").strip() in ("", "0"):
    setup()
else:
    setup(**_compiled_build())
