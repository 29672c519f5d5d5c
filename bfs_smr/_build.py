"""Which build of the core is running: pure Python, or the optional compiled one.

``BFS_SMR_COMPILE=1 pip install .`` compiles the core's per-update and per-command modules
with mypyc (setup.py lists them; README.md, "A compiled build"). A compiled module is a C
extension, so its ``__file__`` ends in one of the interpreter's extension suffixes rather
than ``.py``. ``bfs-smr --version`` reports it, and so can a benchmark beside its figures.
"""

from __future__ import annotations

import importlib.machinery
from types import ModuleType

from . import (
    _codec,
    _dispute,
    _follower,
    _lazydeque,
    _messages,
    _reaction,
    _recovery,
    _sequencer,
    _state,
    _update,
)

# The modules setup.py's compiled build compiles (its COMPILED list, in the same order).
COMPILABLE: tuple[ModuleType, ...] = (
    _codec,
    _update,
    _messages,
    _lazydeque,
    _state,
    _sequencer,
    _follower,
    _recovery,
    _dispute,
    _reaction,
)


def compiled_modules() -> tuple[str, ...]:
    """The names of the core's modules that run compiled; empty for a pure-Python install."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return tuple(m.__name__ for m in COMPILABLE if (m.__file__ or "").endswith(suffixes))


def is_compiled() -> bool:
    """Whether the core runs compiled (every module of COMPILABLE is a C extension)."""
    return len(compiled_modules()) == len(COMPILABLE)


def build_description() -> str:
    """For ``--version``: "mypyc-compiled core" or "pure Python"."""
    if is_compiled():
        return "mypyc-compiled core"
    names = compiled_modules()
    if names:
        # A partial build: only some of the modules replaced (an old or hand-made build).
        return "partly compiled core: " + ", ".join(n.rsplit(".", 1)[-1] for n in names)
    return "pure Python"
