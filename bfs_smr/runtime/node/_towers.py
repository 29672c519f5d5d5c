"""A node's side of a watchtower: keep the tower's entry for each channel at the newest
doubly-signed update, in the background, never on a payment's path.

A committed update only marks its channel (:meth:`TowerClient.committed`, a set insert);
a task per tower, woken by it, waits :data:`COALESCE` seconds and then sends the marked
channels' newest updates, a window of puts at a time, so a channel that commits a
thousand updates meanwhile costs the tower one put, not a thousand. After every
(re)connect, of either side, the client asks the tower which seq it holds for each
channel and sends only what is newer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from bfs_smr._crypto import Signer
from bfs_smr._errors import BfsSmrError, LocalError
from bfs_smr.runtime import transport
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node._channels import NodeChannel
from bfs_smr.runtime.store._datadir import parse_hex_id, parse_hostport
from bfs_smr.runtime.tower._protocol import (
    MAX_QUERY,
    VERSION,
    Ack,
    Put,
    Query,
    Refused,
    Seqs,
    TowerProtocolError,
    Welcome,
    parse_from_tower,
)
from bfs_smr.runtime.tower._seal import locator, seal

__all__ = ["TowerClient", "parse_tower"]

_log = get_logger("bfs_smr.node")

#: Puts in flight to one tower at once.
WINDOW = 64
#: Seconds a client waits, once woken by a committed update, before it sends: updates
#: committed meanwhile go in the same put, so a channel costs a tower about 1 / COALESCE
#: puts a second at most, however fast it pays (and the node's CPU no more).
COALESCE = 0.05
#: Seconds to wait for a tower's answer before the link is taken as dead.
REPLY_TIMEOUT = 30.0
_MAX_BACKOFF = 30.0


def parse_tower(text: str) -> tuple[bytes, str]:
    """``TOWER_ID@HOST:PORT`` as ``(tower id, "HOST:PORT")``.

    Raises:
        LocalError: in the ``--tower`` flag's words.
    """
    tower_id, at, address = text.partition("@")
    if not at:
        raise LocalError(f"--tower {text!r}: give TOWER_ID@HOST:PORT")
    parse_hostport(address)
    return parse_hex_id(tower_id, "tower id"), address


class TowerClient:
    """Keeps one tower up to date for all of a node's channels.

    Args:
        tower_id: the tower's id (its transport key); a tower that cannot prove it is
            refused.
        address: ``HOST:PORT``.
        identity: the node's identity (the tower files entries under it).
        chans: the node's channels by id.
        secret_of: a channel's watch secret (None: its parameters commit to none, so a
            tower could never read it).
        transport_config: the links' limits.
    """

    def __init__(
        self,
        tower_id: bytes,
        address: str,
        identity: Signer,
        chans: Mapping[bytes, NodeChannel],
        *,
        secret_of: Callable[[NodeChannel], bytes | None],
        transport_config: transport.TransportConfig | None = None,
    ) -> None:
        self.tower_id = tower_id
        self.address = address
        self._identity = identity
        self._chans = chans
        self._secret_of = secret_of
        self._config = transport_config
        self._dirty: dict[bytes, None] = {}  # (ordered: the oldest marked goes first)
        self._wake = asyncio.Event()
        self._replies: asyncio.Queue[Welcome | Ack | Refused | Seqs | str] = asyncio.Queue()
        self._expected = 0  # answers the tower owes on the current link (a bound on the queue)
        self.acked: dict[bytes, int] = {}  # channel → seq the tower holds (-1: none)
        self.too_big: dict[bytes, int] = {}  # channel → newest seq that did not fit a slot
        self.connected = False
        self.puts = 0  # puts acknowledged, since start

    @property
    def label(self) -> str:
        return f"{self.tower_id.hex()}@{self.address}"

    def committed(self, c: NodeChannel) -> None:
        """``c`` has a new doubly-signed update: send it when the tower can take it."""
        self._dirty[c.cid] = None
        self._wake.set()

    def describe(self) -> dict[str, object]:
        """For ``status``: the tower, whether its link is up, what it lacks."""
        return {
            "tower": self.label,
            "connected": self.connected,
            "behind": self.behind(),
            "puts": self.puts,
        }

    def behind(self) -> int:
        """Channels whose newest update the tower does not hold yet (none that never fit)."""
        return sum(1 for c in self._chans.values() if self._due(c) is not None)

    async def run(self) -> None:
        """Connect, catch up and keep up, forever; reconnects with backoff."""
        failures = 0
        host, port = parse_hostport(self.address)
        while True:
            try:
                link = await transport.dial(
                    host, port, self._identity, self.tower_id, config=self._config
                )
            except (OSError, BfsSmrError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("cannot reach the tower", tower=self.label, reason=str(exc))
            else:
                try:
                    await self._session(link)
                except (TimeoutError, BfsSmrError, TowerProtocolError) as exc:
                    _log.warning("tower link lost", tower=self.label, reason=str(exc) or "timeout")
                finally:
                    self.connected = False
                    link.close("the node closed the tower link")
                failures = 1
            await asyncio.sleep(min(_MAX_BACKOFF, 0.5 * 2 ** min(failures, 6)))

    def _on_frames(self, link: transport.Link, frames: list[bytes]) -> None:
        for frame in frames:
            if self._expected <= 0:
                # A tower answers what it is asked, in order: anything more is a flood (the
                # queue would grow without bound) or would shift every later answer.
                link.close("the tower sent a frame nobody asked for")
                return
            self._expected -= 1
            try:
                self._replies.put_nowait(parse_from_tower(frame))
            except TowerProtocolError as exc:
                self._replies.put_nowait(f"the tower sent a malformed frame: {exc}")

    async def _reply(self, link: transport.Link) -> Welcome | Ack | Refused | Seqs:
        get = asyncio.ensure_future(self._replies.get())
        try:
            either: list[asyncio.Future[Any]] = [get, link.closed]
            done, _ = await asyncio.wait(
                either, timeout=REPLY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not get.done():
                get.cancel()
        if get not in done:
            raise LocalError(link.closed.result() if link.closed.done() else "no answer in time")
        reply = get.result()
        if isinstance(reply, str):
            raise LocalError(reply)
        return reply

    async def _session(self, link: transport.Link) -> None:
        self._replies = asyncio.Queue()
        self._expected = 1  # the welcome
        link.set_receiver(self._on_frames)
        welcome = await self._reply(link)
        if not isinstance(welcome, Welcome) or welcome.version != VERSION:
            raise LocalError("the tower speaks another protocol version")
        slot = welcome.slot
        await self._catch_up(link)
        self.connected = True
        _log.info("tower link up", tower=self.label, slot=slot, behind=self.behind())
        while True:
            batch = self._take()
            if not batch:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                either: list[asyncio.Future[Any]] = [waiter, link.closed]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if link.closed.done():
                    raise LocalError(link.closed.result())
                # Let the channel's next updates come first: one put then carries them
                # all. A tower lags a node by at most this, plus a round trip.
                await asyncio.sleep(COALESCE)
                continue
            await self._send_puts(link, batch, slot)

    async def _catch_up(self, link: transport.Link) -> None:
        """Ask the tower what it holds for every channel; mark the ones it lacks."""
        chans = [(c, s) for c in self._chans.values() if (s := self._watchable(c)) is not None]
        for start in range(0, len(chans), MAX_QUERY):
            part = chans[start : start + MAX_QUERY]
            self._expected += 1
            link.send(Query(tuple(locator(s) for _, s in part)).encode())
            reply = await self._reply(link)
            if not isinstance(reply, Seqs) or len(reply.seqs) != len(part):
                raise LocalError("the tower's answer to a query does not match it")
            for (c, _), seq in zip(part, reply.seqs, strict=True):
                self.acked[c.cid] = -1 if seq is None else seq
                if self._due(c) is not None:
                    self._dirty[c.cid] = None

    def _watchable(self, c: NodeChannel) -> bytes | None:
        if c.payouts is not None or c.chan.committed is None:
            return None
        return self._secret_of(c)

    def _due(self, c: NodeChannel) -> int | None:
        """The seq to send for ``c``, or None if the tower holds it (or it cannot)."""
        newest = c.chan.committed
        if newest is None or c.payouts is not None or not c.chan.params.watch:
            return None
        if newest.seq <= self.acked.get(c.cid, -1) or self.too_big.get(c.cid) == newest.seq:
            return None
        return newest.seq

    def _take(self) -> list[NodeChannel]:
        batch: list[NodeChannel] = []
        while self._dirty and len(batch) < WINDOW:
            cid = next(iter(self._dirty))
            del self._dirty[cid]
            c = self._chans.get(cid)
            if c is not None and self._due(c) is not None:
                batch.append(c)
        return batch

    async def _send_puts(self, link: transport.Link, batch: list[NodeChannel], slot: int) -> None:
        sent: list[tuple[NodeChannel, int, bytes]] = []
        frames = []
        for c in batch:
            secret = self._watchable(c)
            newest = c.chan.committed
            if secret is None or newest is None:
                continue
            entry = seal(secret, c.chan.params, newest, slot=slot)
            if entry is None:
                self.too_big[c.cid] = newest.seq
                c.log.warning(
                    "update too large for the tower's slot: the tower keeps an older one",
                    tower=self.label,
                    seq=newest.seq,
                    bytes=len(newest.encoded()),
                    slot=slot,
                )
                continue
            frames.append(Put(locator(secret), newest.seq, entry).encode())
            sent.append((c, newest.seq, locator(secret)))
        if not frames:
            return
        self._expected += len(frames)
        link.send_many(frames)
        for c, seq, loc in sent:
            reply = await self._reply(link)
            if isinstance(reply, (Ack, Refused)) and reply.locator not in (loc, None):
                raise LocalError("the tower answered a put for another entry")
            if isinstance(reply, Ack):
                if reply.seq != seq:
                    raise LocalError("the tower acknowledged another seq than it was sent")
                self.acked[c.cid] = max(self.acked.get(c.cid, -1), reply.seq)
                self.puts += 1
            elif isinstance(reply, Refused):
                c.log.warning(
                    "the tower refused an entry", tower=self.label, seq=seq, reason=reply.reason
                )
                if reply.reason.startswith("older"):
                    self.acked[c.cid] = max(self.acked.get(c.cid, -1), seq)  # it holds newer
                else:
                    self.too_big[c.cid] = seq  # (do not retry this seq)
            else:
                raise LocalError("the tower answered a put with something else")
            if (self._due(c)) is not None:
                self._dirty[c.cid] = None  # committed again meanwhile
