"""The build backend: setuptools', plus mypy for the opt-in compiled build.

``pip install .`` builds the pure-Python package, needing nothing beyond setuptools. With
``BFS_SMR_COMPILE=1`` in the environment, setup.py compiles the core's hot modules with
mypyc, which ships inside mypy's wheel: this backend then asks pip to put mypy into the
isolated build environment, so the one command works without a mypy installed beforehand
(README.md, "A compiled build"). A C compiler and Python's headers must be there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the other PEP 517/660 hooks, unchanged)

# The mypy whose mypyc compiles the core (the test extra's floor), and the core's own two
# dependencies, whose type information the strict type check mypyc starts with reads.
_COMPILE_REQUIRES = ["mypy>=1.10", "cbor2>=5.6", "pynacl>=1.5"]


def compile_requested() -> bool:
    """Whether the environment asks for the compiled build (setup.py reads the same)."""
    return os.environ.get("BFS_SMR_COMPILE", "").strip() not in ("", "0")


@contextlib.contextmanager
def _not_compiling() -> Iterator[None]:
    """setuptools runs setup.py to list requirements (before mypy is installed) and to
    write metadata: those runs must not compile, only the wheel's build."""
    saved = os.environ.get("BFS_SMR_COMPILE")
    os.environ["BFS_SMR_COMPILE"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BFS_SMR_COMPILE"]
        else:
            os.environ["BFS_SMR_COMPILE"] = saved


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _not_compiling():
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    return [*requires, *_COMPILE_REQUIRES] if compile_requested() else requires


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    with _not_compiling():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


# An editable install stays pure Python, whatever the environment says: compiled modules
# built in place would sit beside the sources and shadow them, so an edit to a .py file
# would silently not run. Every editable hook runs as for a pure build.


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _not_compiling():
        return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    with _not_compiling():
        return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    if compile_requested():
        print("bfs-smr: BFS_SMR_COMPILE ignored: an editable install is pure Python")
    with _not_compiling():
        return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
