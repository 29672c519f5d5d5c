"""The error hierarchy.

Every error says *who* is at fault:

* :class:`LocalError` — the caller misused the API. Nothing changed; fix the call.
* :class:`RemoteViolation` — the counterparty broke the protocol. Nothing it sent was
  adopted; the channel keeps its newest doubly-signed update, which the error carries as
  ``recourse`` ("close on L1 with this update").
* :class:`CommandRejected` — an app refused a command (wrong turn, overdraft …). Raised
  by app code; the framework turns it into a local error or a failed command.
* :class:`L1Error` — the L1 refused a transaction, with a reason.
* :class:`InternalError` — a bug in bfs-smr itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._update import SignedUpdate

__all__ = [
    "BfsSmrError",
    "CodecError",
    "CommandRejected",
    "InternalError",
    "L1Error",
    "LocalError",
    "LogVerificationError",
    "RemoteViolation",
]


class BfsSmrError(Exception):
    """Base class of every error bfs-smr raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalError(BfsSmrError):
    """The caller used the API wrongly; the object it called is unchanged."""


class CommandRejected(BfsSmrError):
    """An app refused a command: it is not a legal transition from this state."""


class CodecError(BfsSmrError):
    """Bytes that do not decode to a well-formed value of the expected shape."""


class RemoteViolation(BfsSmrError):
    """The counterparty broke the protocol.

    Attributes:
        reason: what it did wrong.
        recourse: the newest doubly-signed update this party holds, to close with on L1
            (``None`` before the opening update was signed, when there is nothing at stake).
    """

    def __init__(self, reason: str, recourse: SignedUpdate | None = None) -> None:
        super().__init__(reason)
        self.recourse = recourse


class LogVerificationError(BfsSmrError):
    """A signed log failed verification.

    Attributes:
        seq: the sequence number of the first entry that failed.
    """

    def __init__(self, reason: str, seq: int) -> None:
        super().__init__(f"entry {seq}: {reason}")
        self.seq = seq


class L1Error(BfsSmrError):
    """The L1 rejected a transaction; ``reason`` says why. Nothing was changed on L1."""


class InternalError(BfsSmrError):
    """A bug in bfs-smr: an internal invariant did not hold. Please report it."""
