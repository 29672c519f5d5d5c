"""The node's L1 watcher: it reads, asks the pure L1 policy, and carries out its answer.

What to do on L1 is decided by :func:`bfs_smr._reaction.react` (docs/design.md §6, "the
L1 reaction is pure"), always from the channel's L1 view read fresh just before; this
module reads, asks and carries out. Every L1 failure is an L1Error (adapters guarantee
it): logged, and the channel is looked at again after a backoff. Anything else is a bug:
the task fails and the node stops rather than run on without its L1 guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from bfs_smr._channel import Phase
from bfs_smr._errors import L1Error, LocalError, RemoteViolation
from bfs_smr._l1 import L1ChannelInfo, L1ChannelStatus
from bfs_smr._reaction import (
    AdoptForced,
    Cancel,
    ChannelFacts,
    CloseCooperatively,
    CloseUnilaterally,
    Deposit,
    ForceMove,
    Intent,
    L1Action,
    Open,
    Refute,
    Settle,
    channel_facts,
    react,
)
from bfs_smr._update import SignedUpdate
from bfs_smr.plugins import L1Connection
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import NodeChannel, fail_all
from bfs_smr.runtime.node._tasks import L1_MAX_BACKOFF, Background, L1Thread, backoff

__all__ = ["L1_MAX_BACKOFF", "L1_SWEEP_EVERY", "L1Watcher", "backoff", "needs_l1_look"]

#: Seconds between looks at every unfinished channel on L1, events or not (a safety net:
#: events and the policy's deadlines drive the looks in between).
L1_SWEEP_EVERY = 30.0


_ACTION_NAMES: dict[type, str] = {
    Open: "open",
    Deposit: "deposit",
    CloseCooperatively: "cooperative close",
    CloseUnilaterally: "unilateral close",
    Refute: "refute",
    Settle: "settle",
    ForceMove: "force move",
    AdoptForced: "adopt a forced move",
    Cancel: "cancel",
}

#: The kind each L1 action is counted as in the metrics (a forced move is counted where
#: it is submitted, in :meth:`L1Watcher.force`).
_TX_KINDS: dict[type, str] = {
    Open: "open",
    Deposit: "fund",
    CloseCooperatively: "close",
    CloseUnilaterally: "unilateral_close",
    Refute: "refute",
    Settle: "settle",
    Cancel: "cancel",
}

_log = get_logger("bfs_smr.node")


def _nothing(_kind: str) -> None:
    pass


class L1Watcher:
    """Watches the L1 for a node's channels and acts on them there.

    Args:
        l1: the node's L1.
        thread: the thread L1 calls run in.
        chans: the node's channels by id.
        flush: carries out a channel's effects now (a forced move is durable before it
            goes to L1).
        background: runs the reactions started from outside a task.
        poll_interval: seconds between looks at the L1.
        changed: told of a channel whose L1 status, deadline, registered seq or payouts
            changed at a read (the node's event hub).
        submitted: told the kind of each L1 transaction submitted (one of
            :data:`bfs_smr.runtime.node._metrics.L1_KINDS`; the node's metrics).
    """

    def __init__(
        self,
        l1: L1Connection,
        thread: L1Thread,
        chans: dict[bytes, NodeChannel],
        *,
        flush: Callable[[NodeChannel], None],
        background: Background,
        poll_interval: float,
        changed: Callable[[NodeChannel], None] | None = None,
        submitted: Callable[[str], None] | None = None,
    ) -> None:
        self._changed = changed
        self._submitted = submitted or _nothing
        self.l1 = l1
        self.thread = thread
        self.chans = chans
        self._flush = flush
        self._background = background
        self.poll_interval = poll_interval
        self._since = 0

    async def watch(self) -> None:
        """Look at the L1's events and every channel due a look, forever."""
        failures = 0
        adapter = self.l1.adapter
        self._background.spawn(self._sweep(), guards_funds=True)
        while True:
            try:
                events = await self.thread.call(adapter.events, self._since)
                touched: set[bytes] = set()
                for event in events:
                    self._since = event.index + 1
                    if event.channel_id in self.chans:
                        touched.add(event.channel_id)
                now = await self.thread.call(adapter.now)
                touched.update(cid for cid, c in self.chans.items() if needs_l1_look(c, now))
                for cid in touched:
                    with contextlib.suppress(L1Error):  # logged; looked at again after a backoff
                        await self.react(self.chans[cid])
                if failures:
                    _log.info("L1 reachable again", after_failures=failures)
                failures = 0
            except L1Error as exc:
                failures += 1
                _log.warning("L1 unavailable: retrying", error=str(exc), failures=failures)
            await asyncio.sleep(backoff(self.poll_interval, failures))

    async def _sweep(self) -> None:
        """Look at every unfinished channel on L1, one after another, then again
        :data:`L1_SWEEP_EVERY` seconds later. It runs beside :meth:`watch`: a sweep of
        thousands of channels inside its loop left the L1's events unread meanwhile (a peer
        opening channels then found them all "not on L1 yet" and was refused)."""
        while True:
            for c in [c for c in self.chans.values() if c.payouts is None]:
                if c.payouts is None:
                    with contextlib.suppress(L1Error):  # logged; looked at again after a backoff
                        await self.react(c)
            await asyncio.sleep(L1_SWEEP_EVERY)

    def react_soon(self, c: NodeChannel) -> None:
        """Look at ``c`` on L1 and act, in the background (a failure is retried)."""

        async def react_now() -> None:
            with contextlib.suppress(L1Error):  # logged; looked at again after a backoff
                await self.react(c)

        self._background.spawn(react_now(), guards_funds=True)

    async def react(self, c: NodeChannel, *, rounds: int = 3) -> L1ChannelInfo | None:
        """Read ``c`` on L1, ask the policy what to do, do it; up to ``rounds`` times while
        there is something to do. Returns the last view read (None: not on L1).

        Raises:
            L1Error: the L1 could not be read or refused an action (logged; the channel
                is looked at again after a backoff).
        """
        async with c.l1_turn():
            acting = False
            try:
                for _ in range(rounds):
                    info = await self.view(c)
                    now = await self.thread.call(self.l1.adapter.now)
                    intent = Intent(close=c.close_asked, unilateral=c.unilateral_asked)
                    actions = react(self._facts(c), info, now, intent)
                    if not actions:
                        break
                    acting = True
                    for action in actions:
                        await self._do(c, action, info)
                    acting = False
            except L1Error as exc:
                if not acting:  # (a failed action is logged with its name)
                    c.log.warning("L1 read failed", reason=str(exc))
                c.l1_failures += 1
                c.l1_retry_at = time.monotonic() + backoff(self.poll_interval, c.l1_failures)
                raise
            c.l1_failures = 0
            return info

    async def view(self, c: NodeChannel) -> L1ChannelInfo | None:
        """The channel on L1, read now, noted in ``c``; None if the L1 does not know it."""
        try:
            info = await self.thread.call(self.l1.adapter.channel, c.cid)
        except L1Error as exc:
            if c.l1_status is not None:
                raise  # it was on L1: this is the L1 failing, not a channel not there
            c.l1_read_error = str(exc)
            return None  # (an L1 failure here makes the policy's action fail too)
        c.l1_read_error = None
        before = (c.l1_status, c.l1_deadline, c.l1_registered, c.payouts)
        c.l1_status, c.l1_deadline = info.status, info.deadline
        c.l1_registered, c.l1_forced = info.registered_seq, info.forced
        status = info.status
        if status is L1ChannelStatus.OPEN:
            c.resolve_opened()
        elif status in (L1ChannelStatus.SETTLED, L1ChannelStatus.CANCELLED):
            c.payouts = info.payouts or (0, 0)
            c.resolve_settled(c.payouts)
            c.resolve_opened()
            fail_all(c, f"the channel is {status.value} on L1")
        if self._changed is not None and before != (
            c.l1_status,
            c.l1_deadline,
            c.l1_registered,
            c.payouts,
        ):
            self._changed(c)
        return info

    def _facts(self, c: NodeChannel) -> ChannelFacts:
        chan = c.chan
        newest = chan.committed
        final_age = None
        if newest is not None and newest.update.final:
            if c.finalized_at is None:
                c.finalized_at = time.monotonic()  # found final after a restart
            final_age = time.monotonic() - c.finalized_at
        return channel_facts(
            chan,
            can_force=self.l1.adapter.supports_force_move,
            forced_seen=c.forced_tried,
            final_age=final_age,
        )

    async def _do(self, c: NodeChannel, action: L1Action, info: L1ChannelInfo | None) -> None:
        """Carry out one action of the policy. Raises L1Error if the L1 refuses it."""
        adapter = self.l1.adapter
        call = self.thread.call
        name = _ACTION_NAMES[type(action)]
        try:
            if isinstance(action, Open):
                await call(adapter.open, c.chan.params)
            elif isinstance(action, Deposit):
                await call(adapter.deposit, c.cid, action.amount)
            elif isinstance(action, CloseCooperatively):
                await call(adapter.cooperative_close, action.update)
            elif isinstance(action, CloseUnilaterally):
                await call(adapter.unilateral_close, action.update, c.watch)
            elif isinstance(action, Refute):
                registered = None if info is None else info.registered_seq
                c.log.warning(
                    "stale close on L1: refuting",
                    registered_seq=registered,
                    our_seq=action.update.seq,
                )
                await call(adapter.refute, action.update)
            elif isinstance(action, Settle):
                await call(adapter.settle, c.cid)
            elif isinstance(action, Cancel):
                await call(adapter.cancel, c.cid)
            elif isinstance(action, ForceMove):
                try:
                    await self.force(c, None)
                except LocalError as exc:  # the channel cannot build the move now
                    raise L1Error(f"cannot force the move: {exc}") from None
            else:
                assert isinstance(action, AdoptForced)
                self._adopt_forced(c, action.update)
                return
        except L1Error as exc:
            c.log.warning(f"L1 {name} failed", reason=str(exc))
            raise
        if type(action) in _TX_KINDS:
            self._submitted(_TX_KINDS[type(action)])
        c.log.info(f"L1 {name}")

    def _adopt_forced(self, c: NodeChannel, forced: SignedUpdate) -> None:
        """Take the peer's move forced on L1 as the position to answer; each one once."""
        chan = c.chan
        c.forced_tried = forced.seq
        try:
            chan.adopt_forced_move(forced)
        except RemoteViolation as exc:
            c.log.warning("cannot adopt the move forced on L1", seq=forced.seq, reason=exc.reason)
            return
        to_move = chan.app.to_move(chan.force_base[1])
        c.log.info(
            "adopted a move forced on L1",
            seq=forced.seq,
            to_move=None if to_move is None else "this node" if to_move == chan.index else "peer",
        )

    async def force(self, c: NodeChannel, command: Any) -> tuple[int, int]:
        """Force a move on L1: the one this node already signed (``command`` None), or a new
        one. Returns the forced seq and the new deadline.

        Raises:
            L1Error: the L1 refused the move (or could not be reached).
        """
        if not self.l1.adapter.supports_force_move:
            raise LocalError("this L1 does not support force moves")
        pending = c.chan.pending_force
        if command is None and pending is not None:
            update, base_state, base = pending  # signed already: posted again
        else:
            base, base_state = c.chan.force_base
            update = c.chan.force_move(command)
            self._flush(c)  # a new signature is durable before it goes to L1
        state = c.chan.format.encode_state(c.chan.app, base_state)
        c.log.info("forcing a move on L1", seq=update.seq)
        deadline = await self.thread.call(self.l1.adapter.force_move, state, update, base)
        self._submitted("force_move")
        # What the L1 now holds (until the next look reads it): the move, its deadline.
        c.l1_registered, c.l1_forced, c.l1_deadline = update.seq, update, deadline
        return update.seq, deadline


def needs_l1_look(c: NodeChannel, now: int) -> bool:
    """Whether to look at this channel on L1 before its next event: a failed action to
    retry, or a rule of the policy that time alone can make due. (Only when to look: what
    to do is decided from the view read then.)"""
    if c.payouts is not None:
        return False
    if c.l1_failures:
        return time.monotonic() >= c.l1_retry_at
    if c.close_asked or c.unilateral_asked:
        return True
    if c.l1_status is L1ChannelStatus.CLOSING:
        return (c.l1_deadline or 0) <= now  # the window is over: settle
    if c.l1_status is L1ChannelStatus.OPEN:
        return c.chan.phase is Phase.CLOSED  # a final update to submit
    # Signed, not yet on L1: the opener opens it. The other party has nothing to do until
    # it is on L1, which an event tells (polling each one a stranger opened cost CPU).
    return c.l1_status is None and c.chan.committed is not None and c.chan.index == 0
