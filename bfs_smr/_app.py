"""The state machine base class that every app subclasses.

An app is pure and deterministic: the same ``apply`` runs at the proposer, at the
counterparty, and on L1 when a move is forced, so it must not read clocks, files or
randomness. Commands arrive as plain CBOR data from a possibly hostile peer: ``apply``
must validate them and raise :class:`CommandRejected` for anything it does not accept.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._codec import decode, encode, hash_bytes
from ._errors import CommandRejected, InternalError

if TYPE_CHECKING:
    from ._update import ChannelParams

__all__ = ["StateMachine", "plain_json", "reject"]

S = TypeVar("S")


class StateMachine(abc.ABC, Generic[S]):
    """Base class of apps: the rules of one kind of channel.

    Subclasses set :attr:`name` and :attr:`version` and implement
    :meth:`initial_state`, :meth:`apply` and :meth:`outcome`. The other hooks have
    working defaults. States are immutable values; the default codec needs them to be
    plain data (ints, strings, bytes, bools, None, tuples/lists and dicts of those).
    """

    #: Registered name, bound into every signed update.
    name: ClassVar[str]
    #: Version, bound into every signed update; bump it when the rules change.
    version: ClassVar[int] = 1
    #: The state's type in the Ethereum ABI, e.g. ``"(uint8[9],uint8,uint256,uint256)"``,
    #: for L1s whose on-chain rules read states (the EVM: docs/evm.md). ``None``: the app
    #: has no rules on such an L1, so moves cannot be forced there.
    state_abi: ClassVar[str | None] = None
    #: The app's rules contract on L1s that run rules on chain, by L1 scheme: a compiled
    #: artifact as a package resource ``"package:path"``, e.g.
    #: ``{"evm": "bfs_smr.apps:contracts/TicTacToe.json"}``. Without one, moves cannot be
    #: forced on that L1 (docs/writing-an-app.md).
    l1_rules: ClassVar[Mapping[str, str]] = {}

    @abc.abstractmethod
    def initial_state(self, params: ChannelParams) -> S:
        """The state at seq 0, from the channel parameters (deposits, options).

        Raises:
            CommandRejected: the parameters make no sense for this app.
        """

    @abc.abstractmethod
    def apply(self, state: S, command: Any, actor: int) -> S:
        """Return the state after ``actor`` (0 or 1) issues ``command``.

        Raises:
            CommandRejected: the command is malformed or not allowed here.
        """

    @abc.abstractmethod
    def outcome(self, state: S) -> tuple[int, int]:
        """What each participant is paid if the channel closes in ``state``.

        Must sum to exactly the locked total (the framework checks, I4, docs/design.md §4).
        """

    def is_final(self, state: S) -> bool:
        """Whether no further command can apply (a finished game). Default: never."""
        return False

    def may_close(self, state: S) -> bool:
        """Whether both parties should agree to a cooperative close in ``state``.

        Default: always (the outcome is fair at every step, as for payments). Games
        return :meth:`is_final`: mid-game, closing is done through L1 and force moves.
        """
        return True

    def to_move(self, state: S) -> int | None:
        """Whose move it is (0 or 1), or ``None`` if the app has no turns.

        Apps with turns enable force moves on L1.
        """
        return None

    def present(self, state: S, party: int) -> dict[str, Any]:
        """A JSON-able view of ``state`` for participant ``party`` (0 the opener, 1 the
        follower), for people and programs: ``channel show``, the node's API, its page.

        Only what ``state`` holds, seen from ``party``'s side ("mine", "you"); the node
        adds the rest (seq, phase, deadlines). Must not raise for any state the app
        produced. Default: ``{"state": ...}``, the state as plain JSON (bytes as hex).
        """
        return {"state": plain_json(decode(self.encode_state(state)))}

    def encode_state(self, state: S) -> bytes:
        """Canonical bytes of ``state`` (override for a custom encoding)."""
        return encode(state)

    def decode_state(self, data: bytes) -> S:
        """Inverse of :meth:`encode_state` (override together with it).

        Raises:
            CodecError: the bytes are not a state of this app.
        """
        value = decode(data)
        return self.state_from_value(value)

    def state_from_value(self, value: Any) -> S:
        """Turn decoded plain data back into a state. Default: lists become tuples."""
        return _tuplify(value)  # type: ignore[no-any-return]

    # Framework helpers; not meant to be overridden.

    def state_hash(self, state: S) -> bytes:
        """Hash of the canonical encoding of ``state``."""
        return hash_bytes(self.encode_state(state))

    def checked_outcome(self, state: S, params: ChannelParams) -> tuple[int, int]:
        """:meth:`outcome`, checked to pay exactly the locked total.

        Raises:
            InternalError: the app's outcome breaks conservation (a bug in the app).
        """
        out = self.outcome(state)
        if (
            len(out) != 2
            or any(type(x) is not int or x < 0 for x in out)
            or out[0] + out[1] != params.locked
        ):
            raise InternalError(
                f"app {self.name!r} produced outcome {out!r}, which does not pay "
                f"exactly the locked {params.locked}"
            )
        return (out[0], out[1])

    @property
    def app_id(self) -> str:
        return f"{self.name}/{self.version}"


def plain_json(value: Any) -> Any:
    """``value`` (plain decoded data) as JSON can hold it: bytes as hex, tuples as lists,
    map keys as strings."""
    if type(value) is bytes:
        return value.hex()
    if type(value) in (list, tuple):
        return [plain_json(v) for v in value]
    if type(value) is dict:
        return {str(k): plain_json(v) for k, v in value.items()}
    return value


def _tuplify(value: Any) -> Any:
    if type(value) is list:
        return tuple(_tuplify(v) for v in value)
    if type(value) is dict:
        return {k: _tuplify(v) for k, v in value.items()}
    return value


def reject(reason: str) -> CommandRejected:
    """Shorthand for apps: ``raise reject("not your turn")``."""
    return CommandRejected(reason)
