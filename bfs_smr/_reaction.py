"""The L1 reaction policy: what one party must do on L1 now. Pure: no I/O, no clock.

Every runtime (the node, the in-process pair, the demos) decides its L1 actions here, from

- :class:`ChannelFacts`: what the party knows of its channel (its index, the deposits, its
  newest doubly-signed update, the forced moves it has looked at);
- the channel's :class:`~bfs_smr.L1ChannelInfo`, **read fresh** from the L1 just before
  (``None``: the L1 knows no such channel). A view kept from an earlier look is never a
  reason to act or not to act;
- ``now``, the L1's time, read with the view;
- :class:`Intent`: what the party's owner asked for (a cooperative or unilateral close).

:func:`react` returns the actions to carry out, in order (today at most one). Carrying one
out may fail (the L1 moved on since the view was read, or it is unreachable): that changes
nothing, and the runtime looks again later and asks again. So every rule is safe against a
stale view: an action the L1 no longer accepts is refused by the L1, and a deposit is only
ever this party's own share still missing, never more.

The rules, by the channel's status on L1 (``docs/nodes.md`` has them in prose):

========== ========================================================================
not on L1  participant 0 (the opener), once the opening update is doubly signed and no
           close is asked: :class:`Open` (locks its deposit).
funding    a close (either kind) asked: :class:`Cancel` (refunds every deposit);
           otherwise this party's share not yet deposited: :class:`Deposit` of the rest.
open       newest update final, and a close asked or the final update known for
           :data:`CLOSE_GRACE` s: :class:`CloseCooperatively`; else a unilateral close
           asked: :class:`CloseUnilaterally` with the newest update.
closing    window over: :class:`Settle`. In the window: a newer update than the
           registered one, or another update than one forced at its seq:
           :class:`Refute`; a move the peer forced that is newer than any looked at:
           :class:`AdoptForced`; this party's own forced move, the dispute's newest step,
           is not on L1 (a post failed), or the registered state is this party's newest
           and awaits the move it signed already: :class:`ForceMove`.
settled,   nothing (the runtime reports the payouts from the view).
cancelled
========== ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._channel import Phase
from ._l1 import L1ChannelInfo, L1ChannelStatus
from ._update import SignedUpdate

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = [
    "CLOSE_GRACE",
    "AdoptForced",
    "Cancel",
    "ChannelFacts",
    "CloseCooperatively",
    "CloseUnilaterally",
    "Deposit",
    "ForceMove",
    "Intent",
    "L1Action",
    "Open",
    "Refute",
    "Settle",
    "channel_facts",
    "own_deposit_missing",
    "react",
]

#: Seconds after a final update is doubly signed before a party that did not ask for the
#: close submits it too (the one that asked submits at once).
CLOSE_GRACE = 3.0


# -- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelFacts:
    """What the policy needs to know of the channel, from the party's side.

    Attributes:
        index: the party's participant index (0 opens the channel on L1).
        deposits: what each participant locks (the channel parameters').
        newest: the newest doubly-signed update (``None`` before the opening update).
        forced_seen: the newest seq of a move forced on L1 that the party has taken (or
            tried to take) as its position already; -1: none.
        move_signed: the newest update's state awaits this party's move and it signed
            that move already (the peer never counter-signed): the move it may force.
        final_age: seconds since the party learned that ``newest`` is final (its own
            clock); ``None`` if it is not final.
        forced_own: the seq of the party's own forced move that is the newest step of the
            dispute (its post to L1 may have failed); -1: none.
    """

    index: int
    deposits: tuple[int, int]
    newest: SignedUpdate | None
    forced_seen: int = -1
    move_signed: bool = False
    final_age: float | None = None
    forced_own: int = -1


def channel_facts(
    chan: Channel,
    *,
    can_force: bool,
    forced_seen: int = -1,
    final_age: float | None = None,
) -> ChannelFacts:
    """The facts of ``chan`` as every runtime gives them to :func:`react`.

    Args:
        can_force: the L1 takes force moves.
        forced_seen: the newest seq of a peer's forced move the runtime looked at, beyond
            the one the channel adopted.
        final_age: see :class:`ChannelFacts`.
    """
    newest = chan.committed
    if newest is not None:
        forced_seen = max(forced_seen, chan.force_base[0].seq)
    pending = chan.pending_force
    return ChannelFacts(
        index=chan.index,
        deposits=chan.params.deposits,
        newest=newest,
        forced_seen=forced_seen,
        move_signed=can_force and _move_signed(chan),
        final_age=final_age,
        forced_own=-1 if pending is None or not can_force else pending[0].seq,
    )


def _move_signed(chan: Channel) -> bool:
    """The newest state waits for this party's move, and it signed one already (an
    in-flight proposal the peer never counter-signed); not once a dispute runs."""
    if chan.phase is Phase.DISPUTE or chan.state is None:
        return False
    return chan.app.to_move(chan.state) == chan.index and bool(chan.in_flight())


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """What the party's owner asked for.

    Attributes:
        close: close cooperatively (a final update is being agreed, or is).
        unilateral: close on L1 with the newest doubly-signed update.
    """

    close: bool = False
    unilateral: bool = False


# -- outputs (what to send to L1) -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Open:
    """Register the channel on L1 and lock this party's deposit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    """Lock ``amount`` more of this party's deposit."""

    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseCooperatively:
    """Pay out the doubly-signed final ``update`` at once."""

    update: SignedUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseUnilaterally:
    """Register ``update`` (doubly signed) and start the window."""

    update: SignedUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class Refute:
    """Replace the registered update with ``update``, in the window."""

    update: SignedUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle:
    """The window is over: pay out the registered update."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceMove:
    """Post the move this party signed already and the peer never counter-signed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptForced:
    """Take ``update``, a move the peer forced on L1, as the position to answer."""

    update: SignedUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Refund every deposit of a channel that is not fully funded."""


L1Action = (
    Open
    | Deposit
    | CloseCooperatively
    | CloseUnilaterally
    | Refute
    | Settle
    | ForceMove
    | AdoptForced
    | Cancel
)


# -- the policy -----------------------------------------------------------------------


def react(
    facts: ChannelFacts, view: L1ChannelInfo | None, now: int, intent: Intent
) -> list[L1Action]:
    """The L1 actions this party must take now, in order.

    Args:
        facts: the channel as the party knows it.
        view: the channel on L1, read just before (``None``: not on L1).
        now: the L1's time, read with ``view``.
        intent: what the owner asked for.

    Returns:
        The actions, possibly none. Each may fail on L1 without harm; ask again later.

    Raises:
        ValueError: ``view`` has a status this policy does not know.
    """
    if view is None:
        return _not_on_l1(facts, intent)
    handler = _BY_STATUS.get(view.status)
    if handler is None:  # a status added to L1ChannelStatus without a rule here
        raise ValueError(f"no L1 reaction rule for status {view.status!r}")
    return handler(facts, view, now, intent)


def own_deposit_missing(facts: ChannelFacts, view: L1ChannelInfo) -> int:
    """How much of this party's own deposit the L1 view does not show yet.

    With ``view.deposited`` the answer is exact. Without it (an adapter that reports only
    the total): the opener's whole deposit is locked by the open itself, and the other
    party's missing part is what the total lacks, capped at its own share.
    """
    due = facts.deposits[facts.index]
    if view.deposited is not None:
        return max(0, due - view.deposited[facts.index])
    if facts.index == 0:
        return 0
    return max(0, min(due, sum(facts.deposits) - view.locked))


def _not_on_l1(facts: ChannelFacts, intent: Intent) -> list[L1Action]:
    if facts.index == 0 and facts.newest is not None and not (intent.close or intent.unilateral):
        return [Open()]
    return []


def _funding(facts: ChannelFacts, view: L1ChannelInfo, now: int, intent: Intent) -> list[L1Action]:
    if intent.close or intent.unilateral:
        return [Cancel()]
    missing = own_deposit_missing(facts, view)
    return [Deposit(amount=missing)] if missing > 0 else []


def _open(facts: ChannelFacts, view: L1ChannelInfo, now: int, intent: Intent) -> list[L1Action]:
    newest = facts.newest
    if newest is None:
        return []  # nothing doubly signed to close with
    if newest.update.final and (
        intent.close
        or intent.unilateral
        or (facts.final_age is not None and facts.final_age >= CLOSE_GRACE)
    ):
        return [CloseCooperatively(update=newest)]
    if intent.unilateral:
        return [CloseUnilaterally(update=newest)]
    return []


def _closing(facts: ChannelFacts, view: L1ChannelInfo, now: int, intent: Intent) -> list[L1Action]:
    if view.deadline is not None and now >= view.deadline:
        return [Settle()]
    newest, forced = facts.newest, view.forced
    registered = -1 if view.registered_seq is None else view.registered_seq
    if newest is not None and (
        newest.seq > registered
        # A doubly-signed update beats another one forced at its seq.
        or (
            forced is not None
            and forced.seq == newest.seq == registered
            and forced.update.entry_hash() != newest.update.entry_hash()
        )
    ):
        return [Refute(update=newest)]
    if (
        forced is not None
        and newest is not None
        and forced.seq > facts.forced_seen
        and forced.update.commands
        and forced.update.commands[0].actor != facts.index
    ):
        return [AdoptForced(update=forced)]
    on_l1 = max(registered, -1 if forced is None else forced.seq)
    if facts.forced_own >= 0 and facts.forced_own == on_l1 + 1:
        return [ForceMove()]  # its own forced move is not on L1: post it (again)
    if newest is not None and view.registered_seq == newest.seq and facts.move_signed:
        return [ForceMove()]
    return []


def _finished(facts: ChannelFacts, view: L1ChannelInfo, now: int, intent: Intent) -> list[L1Action]:
    return []


_BY_STATUS = {
    L1ChannelStatus.FUNDING: _funding,
    L1ChannelStatus.OPEN: _open,
    L1ChannelStatus.CLOSING: _closing,
    L1ChannelStatus.SETTLED: _finished,
    L1ChannelStatus.CANCELLED: _finished,
}
