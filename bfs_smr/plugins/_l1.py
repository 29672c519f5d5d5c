"""L1 plug-ins: what ``--l1 SCHEME:REST`` names, and how it is found.

An L1 plug-in is the entry point of one kind of L1 for the runtime and the command line.
It is found by its scheme in the ``bfs_smr.l1`` entry-point group (the bundled ``local``
and ``evm`` are registered there exactly like a third party's, in pyproject.toml), or
through :func:`register_l1` for code that is not installed as a package. Each entry point
loads a *factory*: a callable that takes the text after ``SCHEME:`` and returns an
:class:`L1Plugin`. A factory should only parse that text; connecting is the plug-in's
:meth:`L1Plugin.connect`, so that loading a plug-in stays cheap.

See docs/l1-adapters.md for a walk through a third-party adapter package.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeAlias

from bfs_smr import L1Adapter, LocalError, Signer

__all__ = [
    "L1_GROUP",
    "KeyProvider",
    "L1Connection",
    "L1Factory",
    "L1Plugin",
    "available_l1s",
    "connect_l1",
    "load_l1",
    "register_l1",
]

L1_GROUP = "bfs_smr.l1"

#: Returns a node's 32-byte secp256k1 key, made on first use (``DataDir.l1_key``).
KeyProvider: TypeAlias = Callable[[], bytes]

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True, slots=True)
class L1Connection:
    """What a node uses of its L1: the result of :meth:`L1Plugin.connect`.

    Attributes:
        adapter: an :class:`bfs_smr.L1Adapter` acting as the node's account.
        signer: the key the node signs channel updates with, in the scheme of the
            adapter's format; its public key is the node's identity in channel
            parameters (and its account on this L1).
        window: the challenge window of the channels the node opens, and the least it
            accepts in channels opened with it.
    """

    adapter: L1Adapter
    signer: Signer
    window: int


class L1Plugin(abc.ABC):
    """One L1, as ``--l1 SCHEME:REST`` names it: what the node and the CLI need of it.

    :meth:`connect` and :meth:`parse_account` are required. ``bfs-smr l1 init``,
    ``l1 balance`` and ``l1 fund`` call :meth:`init`, :meth:`balance` and :meth:`fund`,
    which by default say that this L1 does not support them.

    Every method raises :class:`bfs_smr.LocalError` for what the caller got wrong (a bad
    argument, a missing extra) and :class:`bfs_smr.L1Error` for what the L1 refused or
    could not do (unreachable, not set up); both with a one-line message, which the CLI
    prints as it is.
    """

    @abc.abstractmethod
    def connect(
        self, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
    ) -> L1Connection:
        """Connect a node to this L1.

        Args:
            identity: the node's Ed25519 identity (its transport key; an L1 that verifies
                Ed25519 may make it the node's account and channel key).
            l1_key: the node's secp256k1 key, for an L1 that wants one (called only then).
            window: the challenge window the node's operator asked for, or None for this
                L1's default. The plug-in refuses one its L1 cannot honour.

        Returns:
            The adapter acting as the node's account, its channel signer and its window.
        """

    @abc.abstractmethod
    def parse_account(self, text: str) -> bytes:
        """An account on this L1 as written on the command line (``l1 fund ACCOUNT``).

        Raises:
            LocalError: ``text`` is not an account of this L1; the message says what is.
        """

    def format_account(self, account: bytes) -> str:
        """How the CLI prints an account (default: hex)."""
        return account.hex()

    def init(self, *, window: int | None = None, chain_id: str | None = None) -> dict[str, Any]:
        """Create this L1 (a file, a contract deployment) for ``bfs-smr l1 init``.

        Running it again must not harm what is there: refuse with an error, or report the
        existing L1 unchanged.

        Args:
            window: the default challenge window, in seconds, for an L1 that keeps one.
            chain_id: a name for a new chain, for an L1 that takes one.

        Returns:
            Plain facts about the L1 for the command's output (the CLI adds ``l1``).
        """
        raise LocalError("this L1 does not support l1 init")

    def balance(self, account: bytes) -> int:
        """``account``'s unlocked balance, for ``bfs-smr l1 balance``."""
        raise LocalError("this L1 does not support l1 balance")

    def fund(self, account: bytes, amount: int) -> None:
        """Credit ``amount`` to ``account`` from a faucet, for ``bfs-smr l1 fund``."""
        raise LocalError("this L1 does not support l1 fund")


#: What a ``bfs_smr.l1`` entry point loads: the text after ``SCHEME:`` → the plug-in.
L1Factory: TypeAlias = Callable[[str], L1Plugin]

_explicit: dict[str, L1Factory] = {}


def register_l1(scheme: str, factory: L1Factory) -> L1Factory:
    """Make ``--l1 SCHEME:REST`` use ``factory`` (for code not installed as a package).

    An explicit registration wins over an entry point of the same scheme.

    Raises:
        LocalError: ``scheme`` is not a lowercase letter then letters, digits, ``+-.``;
            or ``factory`` is not callable.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise LocalError(f"an L1 scheme is a lowercase word like 'local', not {scheme!r}")
    if not callable(factory):
        raise LocalError("register_l1 takes a callable: the text after SCHEME: → L1Plugin")
    _explicit[scheme] = factory
    return factory


def _entry_points(scheme: str | None = None) -> list[EntryPoint]:
    found = entry_points(group=L1_GROUP)
    return [ep for ep in found if scheme is None or ep.name == scheme]


def _load(ep: EntryPoint) -> L1Factory:
    try:
        factory = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not a crash
        raise LocalError(f"the {ep.name!r} L1 plug-in ({ep.value}) does not load: {exc}") from None
    if not callable(factory):
        raise LocalError(f"the {ep.name!r} L1 plug-in ({ep.value}) is not callable")
    return factory  # type: ignore[no-any-return]


def available_l1s() -> dict[str, L1Factory]:
    """Every L1 scheme that can be used, with its factory (explicit registrations win).

    An entry point that fails to load is left out; :func:`load_l1` of its scheme says why.
    """
    found: dict[str, L1Factory] = {}
    for ep in _entry_points():
        with contextlib.suppress(LocalError):
            found.setdefault(ep.name, _load(ep))
    found.update(_explicit)
    return found


def _known() -> str:
    names = {ep.name for ep in _entry_points()} | set(_explicit)
    return ", ".join(sorted(names)) or "none"


def load_l1(spec: str) -> L1Plugin:
    """The plug-in for ``spec`` (``SCHEME:REST``): its factory called with ``REST``.

    Loads only the plug-in ``SCHEME`` names; the factory parses ``REST`` but connects to
    nothing.

    Raises:
        LocalError: not ``SCHEME:REST``, no plug-in has that scheme (the message lists
            those that do), the plug-in does not load, or it refuses ``REST`` (any
            exception of its factory is reported so, in one line).
    """
    scheme, colon, rest = spec.partition(":")
    if not colon or not scheme:
        raise LocalError(f"an L1 is SCHEME:WHERE (schemes: {_known()}), not {spec!r}")
    factory = _explicit.get(scheme)
    if factory is None:
        eps = _entry_points(scheme)
        if not eps:
            raise LocalError(f"unknown L1 {scheme!r} in {spec!r} (available: {_known()})")
        factory = _load(eps[0])
    try:
        plugin = factory(rest)
    except LocalError:
        raise
    except Exception as exc:  # noqa: BLE001 - a third party's bug becomes one clear line
        raise LocalError(
            f"the {scheme!r} L1 plug-in failed on {rest!r}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(plugin, L1Plugin):
        raise LocalError(
            f"the {scheme!r} L1 plug-in returned {type(plugin).__name__}, not an L1Plugin"
        )
    return plugin


def connect_l1(
    spec: str, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
) -> L1Connection:
    """Connect a node to the L1 named by ``spec``: :func:`load_l1` then
    :meth:`L1Plugin.connect`.

    Raises:
        LocalError: a bad spec or window, or the plug-in is not available.
        L1Error: the L1 cannot be reached or is not set up.
    """
    return load_l1(spec).connect(identity, l1_key, window)
