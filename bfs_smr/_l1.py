"""The L1 adapter interface.

An adapter connects channels to one Layer 1. It has two halves:

* the **format** (:class:`L1Format`): the L1's domain, its signature scheme and how an
  update is digested for signing. The sans-IO core uses only this, so every update is
  signed once, in exactly the form the L1 checks.
* the **transactions** (:class:`L1Adapter`): open, deposit, cooperative close, unilateral
  close, refute, force move, settle; the L1's events and its notion of time. These talk to
  the chain and live outside the core's no-I/O rule; the runtime calls them.

Every adapter enforces the same rules (docs/design.md §5);
:func:`bfs_smr.testing.check_l1_adapter` checks them on any adapter.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._codec import hash_bytes

if TYPE_CHECKING:
    from ._app import StateMachine
    from ._crypto import SignatureScheme
    from ._update import ChannelParams, SignedUpdate, Update

__all__ = [
    "L1Adapter",
    "L1ChannelInfo",
    "L1ChannelStatus",
    "L1Event",
    "L1EventKind",
    "L1Format",
]


class L1Format(abc.ABC):
    """How one L1 wants updates signed. Pure: no I/O."""

    #: Identifies the L1 (chain id, contract address …); part of every channel id.
    domain: bytes
    #: The signature scheme the L1 verifies.
    scheme: SignatureScheme

    @abc.abstractmethod
    def digest(self, update: Update, body: bytes) -> bytes:
        """The bytes each party signs for ``update``.

        Args:
            update: the update.
            body: ``update.body()``, passed so formats that sign the canonical encoding
                need not encode again.

        It must bind the L1 domain, the channel id, the sequence number, the state hash,
        the outcome and the final flag (I5, docs/design.md §4).
        """

    def encode_state(self, app: StateMachine[Any], state: Any) -> bytes:
        """The bytes of ``state`` this L1 is given when a move is forced on it.

        Default: the app's own canonical encoding (:meth:`StateMachine.encode_state`).
        An L1 whose rules run in another language chooses an encoding it can read (the
        EVM's is the ABI encoding of the app's :attr:`~StateMachine.state_abi`).
        """
        return app.encode_state(state)

    def state_hash(self, app: StateMachine[Any], state: Any) -> bytes:
        """The state hash every update of a channel on this L1 carries.

        It is the hash of :meth:`encode_state`, so an L1 can check a state it is given
        against a signed update. Default: :meth:`StateMachine.state_hash` (BLAKE2b-256 of
        the canonical CBOR encoding). Both parties compute it with the same format, so an
        app writes its state once and each L1 chooses how it is encoded and hashed.
        """
        return app.state_hash(state)

    def watch_commitment(self, secret: bytes) -> bytes:
        """The commitment to a channel's watch secret that :attr:`ChannelParams.watch`
        holds; an L1 checks a unilateral close's ``reveal`` against it.

        Default: BLAKE2b-256 of a fixed tag and ``secret``. An L1 that checks it in a
        contract chooses a hash it computes cheaply (the EVM's is keccak256).
        """
        return hash_bytes(b"bfs-smr/watch/v1" + secret)


class L1ChannelStatus(enum.Enum):
    """Where a channel stands on L1."""

    FUNDING = "funding"  # opened, not every deposit is in yet
    OPEN = "open"
    CLOSING = "closing"  # an update is registered and the window runs
    SETTLED = "settled"  # paid out; nothing more can happen
    CANCELLED = "cancelled"  # never fully funded; deposits refunded


@dataclass(frozen=True, slots=True, kw_only=True)
class L1ChannelInfo:
    """A snapshot of one channel on L1.

    ``forced`` is the registered update when a force move put it there (``None``
    otherwise). An adapter with ``supports_force_move`` must fill it: the other party
    adopts the move from it, and answers.

    ``deposited`` is what each participant has locked while the channel is funding or
    open (``None`` if the adapter cannot tell): a party deposits exactly its own share
    still missing, so a retried deposit never locks more than its share.
    """

    channel_id: bytes
    status: L1ChannelStatus
    locked: int
    registered_seq: int | None
    deadline: int | None
    payouts: tuple[int, int] | None
    forced: SignedUpdate | None = None
    deposited: tuple[int, int] | None = None


class L1EventKind(enum.Enum):
    OPENED = "opened"
    DEPOSITED = "deposited"
    CLOSING_STARTED = "closing_started"
    REFUTED = "refuted"
    FORCE_MOVED = "force_moved"
    SETTLED = "settled"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class L1Event:
    """Something that happened on L1 to a channel.

    Attributes:
        index: position in the L1's event stream (pass ``index + 1`` to ``events``).
        kind: what happened.
        channel_id: to which channel.
        seq: the registered sequence number, for close/refute/force-move events.
        deadline: when the window ends, for close/refute/force-move events.
        payouts: what each participant was paid, for settled events.
        time: L1 time of the event.
        reveal: the channel's watch secret, for the event of a unilateral close of a
            channel whose parameters commit to one (a watchtower's key to that channel).
    """

    index: int
    kind: L1EventKind
    channel_id: bytes
    time: int
    seq: int | None = None
    deadline: int | None = None
    payouts: tuple[int, int] | None = None
    reveal: bytes | None = None


class L1Adapter(abc.ABC):
    """One party's connection to an L1, acting as that party's account.

    Every transaction method either takes effect or raises :class:`bfs_smr.L1Error`
    with a reason and changes nothing.
    """

    #: How this L1 wants updates signed.
    format: L1Format
    #: Whether :meth:`force_move` is available (apps with turns need it to be live).
    supports_force_move: bool = False

    @property
    @abc.abstractmethod
    def account(self) -> bytes:
        """The public key this adapter transacts as."""

    def track(self, params: ChannelParams) -> bytes:
        """Learn a channel this party did not open; returns its id.

        Adapters that name a channel on L1 by its parameters (the EVM's) must be told
        them before the party deposits, closes or asks about it; nodes call this for every
        channel they hold. The default keeps nothing.
        """
        return params.channel_id

    @abc.abstractmethod
    def open(self, params: ChannelParams) -> bytes:
        """Register the channel and lock this party's deposit; returns the channel id."""

    @abc.abstractmethod
    def deposit(self, channel_id: bytes, amount: int) -> None:
        """Lock (more of) this party's deposit in an opened channel."""

    @abc.abstractmethod
    def cooperative_close(self, update: SignedUpdate) -> tuple[int, int]:
        """Close at once with a doubly-signed *final* update; returns the payouts."""

    @abc.abstractmethod
    def unilateral_close(self, update: SignedUpdate, reveal: bytes | None = None) -> int:
        """Register a doubly-signed update and start the window; returns the deadline.

        Args:
            update: the doubly-signed update.
            reveal: the channel's watch secret. Required when the channel's parameters
                commit to one (:attr:`ChannelParams.watch`): the L1 checks it against the
                commitment and publishes it in the close's event, so a watchtower holding
                the party's newest update can read it now, and not before.
        """

    @abc.abstractmethod
    def refute(self, update: SignedUpdate) -> None:
        """Replace the registered update with a newer doubly-signed one, in the window."""

    def force_move(
        self, state: bytes, update: SignedUpdate, base: SignedUpdate | None = None
    ) -> int:
        """Post the next move signed by the mover alone; returns the new deadline.

        Args:
            state: the registered update's state, as :meth:`L1Format.encode_state`
                encodes it (its hash must match the registered update's).
            update: the next update, signed by the party whose move it is.
            base: the registered update the move builds on, as the party holds it. An L1
                that keeps only a commitment to the registered update (the EVM's) needs
                it; the embedded L1 ignores it.
        """
        raise NotImplementedError("this L1 adapter does not support force moves")

    @abc.abstractmethod
    def cancel(self, channel_id: bytes) -> None:
        """Refund every deposit of a channel that never became fully funded.

        Without it, one party's deposit would be stuck if the other never deposits.
        """

    @abc.abstractmethod
    def settle(self, channel_id: bytes) -> tuple[int, int]:
        """After the window, pay out the registered outcome; returns the payouts."""

    @abc.abstractmethod
    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        """The channel as L1 sees it."""

    @abc.abstractmethod
    def events(self, since: int = 0) -> list[L1Event]:
        """Channel events with ``index >= since``, oldest first."""

    @abc.abstractmethod
    def now(self) -> int:
        """The L1's current time (seconds)."""

    @abc.abstractmethod
    def balance(self, account: bytes | None = None) -> int:
        """Spendable (unlocked) balance of ``account`` (default: this adapter's)."""
