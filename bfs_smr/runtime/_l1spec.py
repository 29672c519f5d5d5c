"""``--l1`` specifications: which L1 a node or command talks to.

- ``local:PATH`` — the shared local L1 (:mod:`adapters.local`): the embedded L1's rules
  kept in a SQLite file that several processes on one machine use, with wall-clock
  windows. Create it with ``bfs-smr l1 init``.
- ``evm:URL`` — the Vyper adjudicator through a JSON-RPC node (see docs/evm.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._crypto import Signer
from .._errors import LocalError
from .._l1 import L1Adapter

__all__ = ["L1Access", "open_l1", "open_local_l1", "parse_l1_spec"]


def parse_l1_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:WHERE``.

    Raises:
        LocalError: not ``local:PATH`` or ``evm:URL``.
    """
    kind, _, where = spec.partition(":")
    if kind in ("local", "evm") and where:
        return kind, where
    raise LocalError(f"an L1 is local:PATH or evm:URL, not {spec!r}")


def open_local_l1(spec: str) -> Any:
    """The :class:`adapters.local.LocalL1` named by a ``local:PATH`` spec.

    Raises:
        LocalError: not a local spec. L1Error: no L1 file there (run ``bfs-smr l1 init``).
    """
    kind, where = parse_l1_spec(spec)
    if kind != "local":
        raise LocalError(f"this command needs a local:PATH L1, not {spec!r}")
    from adapters.local import LocalL1

    return LocalL1(Path(where))


@dataclass(frozen=True, slots=True)
class L1Access:
    """What a node uses of its L1: an adapter acting as the node's account, and the
    challenge window it puts in the parameters of the channels it opens."""

    spec: str
    adapter: L1Adapter
    window: int


def open_l1(spec: str, signer: Signer) -> L1Access:
    """Connect to the L1 named by ``spec`` as ``signer``'s account.

    Raises:
        LocalError: a bad spec, or the L1 kind is not available in this build.
        L1Error: the L1 cannot be reached or is not a bfs-smr L1.
    """
    kind, _ = parse_l1_spec(spec)
    if kind == "local":
        chain = open_local_l1(spec)
        return L1Access(spec, chain.adapter(signer.public_key), int(chain.window))
    raise LocalError(
        "nodes run on local:PATH L1s in this release; evm:URL works with `bfs-smr demo "
        "payments --l1 evm --rpc URL` (see docs/evm.md)"
    )
