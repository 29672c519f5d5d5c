"""Carrying out channels' effects with the write-ahead rule: persist, then send, then report.

Several channels' effects are made durable in one transaction (one fsync): the group
commit. Commands issued in one turn of the event loop share it (:meth:`flush_soon`), and
so do the channel frames of one read from a link (the links flush them together).

A read whose effects send nothing (a follower taking a COMMIT: persist, then report) may
wait up to :data:`QUIET_DELAY` seconds for the next flush, and share its fsync: in the
follower-signs-first flow the next PROPOSE follows a COMMIT at once, and it, not the
COMMIT's own write, is on the payer's path (docs/protocol.md). Nothing leaves and nothing
is reported before the write, so the write-ahead rule holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bfs_smr._channel import Phase
from bfs_smr._errors import CommandRejected, LocalError
from bfs_smr._messages import (
    ChannelFinalized,
    ChannelOpened,
    CommandCommitted,
    CommandFailed,
    Effect,
    PersistUpdate,
    SendMessage,
    ServeLog,
)
from bfs_smr.runtime import transport
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import NodeChannel, Waiter, retrieve
from bfs_smr.runtime.node._nodemsg import CHANNEL_FRAME
from bfs_smr.runtime.store import Store, StoreError

__all__ = ["QUIET_DELAY", "EffectExecutor"]

#: Longest a read's effects that send nothing wait to share the next flush's fsync.
QUIET_DELAY = 0.002

#: Effects a step may hold and still wait: nothing sent, nothing asked of the store or L1.
_QUIET = frozenset({PersistUpdate, CommandCommitted, CommandFailed})

_log = get_logger("bfs_smr.node")


class EffectExecutor:
    """Persists, sends and reports what channels ask for, and tracks who waits.

    Args:
        store: where effects are made durable.
        links: the live link to each peer (frames for a peer without one are dropped:
            the next link's resync sends them again).
        l1_due: called for a channel that has something to do on L1 now (opened, or
            finalized after its owner asked to close).
        stop: asks the node to stop (the store cannot be written).
        committed: called for a channel whose newest doubly-signed update changed, once
            it is durable and its effects carried out, with the commands (both parties')
            this step committed; it must only take note (the node tells its towers, its
            event hub and its metrics).
    """

    def __init__(
        self,
        store: Store,
        links: Mapping[bytes, transport.Link],
        *,
        l1_due: Callable[[NodeChannel], None],
        stop: Callable[[], None],
        committed: Callable[[NodeChannel, list[CommandCommitted]], None] | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self._l1_due = l1_due
        self._stop = stop
        self._committed = committed
        self._dirty: dict[bytes, NodeChannel] = {}
        self._flush_pending = False
        #: Quiet steps waiting for the next flush (QUIET_DELAY), oldest first.
        self._quiet: list[tuple[NodeChannel, list[Effect]]] = []
        self._quiet_timer: asyncio.TimerHandle | None = None

    def flush(self, c: NodeChannel) -> None:
        """Carry out a channel's effects now: persist, then send, then report."""
        self.flush_many([c])

    def flush_many(self, chans: Iterable[NodeChannel], *, may_wait: bool = False) -> None:
        """Carry out several channels' effects with one transaction (one fsync) for all:
        the group commit. Everything is durable before anything is sent or reported.

        ``may_wait``: if no step sends anything, keep them for the next flush (at most
        :data:`QUIET_DELAY` seconds), to share its fsync.
        """
        steps = [(c, effects) for c in chans if (effects := c.chan.effects())]
        if may_wait and steps and all(type(e) in _QUIET for _, es in steps for e in es):
            self._quiet += steps
            if self._quiet_timer is None:
                loop = asyncio.get_running_loop()
                self._quiet_timer = loop.call_later(QUIET_DELAY, self._flush_quiet)
            return
        if self._quiet:  # first, in order: a channel's effects are carried out in order
            steps, self._quiet = self._quiet + steps, []
            if self._quiet_timer is not None:
                self._quiet_timer.cancel()
                self._quiet_timer = None
        if not steps:
            return
        self.store.persist_many([(c.key, effects, c.chan) for c, effects in steps])
        for c, effects in steps:
            self._carry_out(c, effects)
        for c, effects in steps:
            newest = c.chan.committed
            if newest is not None and newest.seq != c.told_seq:
                # Durable and sent: the channel holds it, likely idle, but seldom encodes
                # it again (its encoding is as large again as the update).
                newest.update.forget_body()
                if self._committed is not None:
                    c.told_seq = newest.seq
                    done = [e for e in effects if type(e) is CommandCommitted]
                    self._committed(c, done)

    def _flush_quiet(self) -> None:
        self._quiet_timer = None
        try:
            self.flush_many(())
        except StoreError as exc:
            self.store_failed(exc)

    def flush_soon(self, c: NodeChannel) -> None:
        """Flush ``c`` at the end of this turn of the event loop, with every other channel
        touched in it: commands issued together share one fsync."""
        self._dirty[c.cid] = c
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_pending = False
        chans, self._dirty = list(self._dirty.values()), {}
        try:
            self.flush_many(chans)
        except StoreError as exc:
            self.store_failed(exc)

    def store_failed(self, exc: StoreError) -> None:
        """A flush failed: nothing of the failed step was sent or reported; what was
        durable still is. Acting on without a store would break the write-ahead rule:
        stop."""
        _log.error("the store cannot be written: stopping", error=str(exc))
        self._stop()

    def issue(self, c: NodeChannel, command: Any) -> asyncio.Future[int]:
        """Issue ``command``; the future gets its seq once doubly signed and durable."""
        ref = c.chan.issue(command)
        waiter = Waiter(asyncio.get_running_loop().create_future(), 1)
        c.add_waiter(ref, waiter)
        self.flush_soon(c)
        return waiter.future

    def issue_batch(self, c: NodeChannel, commands: list[Any]) -> asyncio.Future[int]:
        """Issue ``commands`` together; the future gets their seq (one update) once every
        one is doubly signed and durable, or the first failure."""
        refs = c.chan.issue_batch(commands)
        waiter = Waiter(asyncio.get_running_loop().create_future(), len(refs))
        for ref in refs:
            c.add_waiter(ref, waiter)
        self.flush_soon(c)
        return waiter.future

    def _carry_out(self, c: NodeChannel, effects: list[Effect]) -> None:
        chan = c.chan
        prefix = bytes([CHANNEL_FRAME]) + c.cid
        frames: list[bytes] = []
        for effect in effects:
            kind = type(effect)
            if kind is SendMessage:
                frames.append(prefix + effect.data)  # type: ignore[union-attr]
            elif kind is CommandCommitted:
                assert isinstance(effect, CommandCommitted)
                waiter = c.pop_waiter(effect.ref) if effect.local else None
                if waiter is not None:
                    waiter.committed(effect.seq)
            elif kind is CommandFailed:
                assert isinstance(effect, CommandFailed)
                failed = c.pop_waiter(effect.ref)
                if failed is not None:
                    failed.failed(CommandRejected(effect.reason))
                elif c.close_asked and chan.phase is Phase.OPEN:
                    self._close_denied(c, effect.reason)
            elif kind is ChannelOpened:
                self._l1_due(c)  # the opener opens it on L1
            elif kind is ChannelFinalized:
                c.finalized_at = time.monotonic()
                if c.close_asked:
                    self._l1_due(c)  # submit it now
            elif kind is ServeLog:
                assert isinstance(effect, ServeLog)
                self._send(c, frames)
                frames = []
                entries = self.store.log_range(c.cid, effect.first_seq, effect.last_seq)
                chan.serve_log(entries)
                self.flush(c)
        self._send(c, frames)

    @staticmethod
    def _close_denied(c: NodeChannel, reason: str) -> None:
        """The sequencer denied this follower's cooperative close: whoever waits for it
        hears why at once (it would otherwise wait for a payout that never comes)."""
        c.close_asked = False
        c.log.warning("the peer denied the cooperative close", reason=reason)
        settled, c.settled = c.settled, None
        for fut in settled or ():
            if not fut.done():
                fut.add_done_callback(retrieve)  # (its caller may have stopped waiting)
                fut.set_exception(LocalError(f"the peer denied the cooperative close: {reason}"))

    def _send(self, c: NodeChannel, frames: list[bytes]) -> None:
        link = self.links.get(c.peer)
        if frames and link is not None and not link.closed.done():
            link.send_many(frames)  # a dropped link loses them; the resync re-sends
