"""The transport's one error type."""

from __future__ import annotations

from bfs_smr._errors import BfsSmrError

__all__ = ["TransportError"]


class TransportError(BfsSmrError):
    """The connection is unusable: the peer, the network or a timeout broke it.

    ``reason`` is one human-readable line. Nothing received after the fault is delivered.
    """
