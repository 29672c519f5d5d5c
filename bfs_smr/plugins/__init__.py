"""Finding apps and L1 adapters by name.

Apps are found through the ``bfs_smr.apps`` entry-point group (the bundled ones are
registered exactly like third-party ones, in pyproject.toml) or through
:func:`register_app` for code that is not installed as a package.

L1s are found the same way, by the scheme of ``--l1 SCHEME:REST``, in the ``bfs_smr.l1``
group or through :func:`register_l1`; an entry point loads a factory that turns ``REST``
into an :class:`L1Plugin` (see :mod:`bfs_smr.plugins._l1` and docs/l1-adapters.md).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._errors import LocalError
from bfs_smr.plugins._l1 import (
    L1_GROUP,
    KeyProvider,
    L1Connection,
    L1Factory,
    L1Plugin,
    available_l1s,
    connect_l1,
    load_l1,
    register_l1,
)

__all__ = [
    "L1_GROUP",
    "KeyProvider",
    "L1Connection",
    "L1Factory",
    "L1Plugin",
    "available_apps",
    "available_l1s",
    "connect_l1",
    "load_app",
    "load_l1",
    "register_app",
    "register_l1",
]

APP_GROUP = "bfs_smr.apps"


_explicit: dict[str, type[StateMachine[Any]]] = {}


def register_app(cls: type[StateMachine[Any]]) -> type[StateMachine[Any]]:
    """Make ``cls`` loadable by its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        raise LocalError("register_app takes a StateMachine subclass")
    _explicit[cls.name] = cls
    return cls


def _scan_apps() -> tuple[dict[str, type[StateMachine[Any]]], dict[str, str]]:
    """The installed apps by name, and why each broken app plug-in is unusable."""
    found: dict[str, type[StateMachine[Any]]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=APP_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken plug-in must not hide the others
            broken[ep.name] = f"its plug-in ({ep.value}) does not load: {type(exc).__name__}: {exc}"
            continue
        if isinstance(cls, type) and issubclass(cls, StateMachine):
            found[ep.name] = cls
        else:
            broken[ep.name] = f"its plug-in ({ep.value}) is not a StateMachine subclass"
    return found, broken


def available_apps() -> dict[str, type[StateMachine[Any]]]:
    """Every app that can be loaded, by name (explicit registrations win). A plug-in that
    does not load is left out; :func:`load_app` of its name says why."""
    found, _ = _scan_apps()
    found.update(_explicit)
    return found


def load_app(name: str, version: int | None = None) -> StateMachine[Any]:
    """An instance of the app called ``name``.

    Raises:
        LocalError: no such app, or it is not the requested version.
    """
    cls = _explicit.get(name)
    if cls is None:
        found, broken = _scan_apps()
        if name in broken:
            raise LocalError(f"app {name!r} is installed but unusable: {broken[name]}")
        cls = found.get(name)
        if cls is None:
            known = ", ".join(sorted(found.keys() | _explicit.keys())) or "none"
            raise LocalError(f"unknown app {name!r} (available: {known})")
    if version is not None and cls.version != version:
        raise LocalError(f"app {name!r} is version {cls.version}, the channel needs {version}")
    return cls()
