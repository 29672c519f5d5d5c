"""A node's links to its peers: listening, dialling, and routing what arrives on them.

One link per peer over the authenticated, encrypted transport
(:mod:`bfs_smr.runtime.transport`), re-dialled with backoff, each (re)connect followed by
a resync of every channel on it. Frames are those of :mod:`._nodemsg`: channel messages go
to their channel, node messages (account, open, open-reply) are answered here or handed
on. A malformed frame or node message closes that link with a logged reason. Faults
inside a channel stay in that channel: a channel message the channel refuses (a
``RemoteViolation``) makes the node drop that channel's messages on this link until the
next one, with a logged reason, while the link's other channels go on; a message for a
channel the peer is not in, or for one settled on L1, is ignored.

Links from strangers (peers without a channel on L1 with this node, that it does not
dial) are capped and ended when idle: identities cost nothing to make.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from bfs_smr._crypto import Signer
from bfs_smr._errors import BfsSmrError, CodecError, RemoteViolation
from bfs_smr._update import ChannelParams
from bfs_smr.runtime import transport
from bfs_smr.runtime._logging import Logger, bind_ids, get_logger
from bfs_smr.runtime.node import _nodemsg as nodemsg
from bfs_smr.runtime.node._channels import NodeChannel, fail_all, retrieve
from bfs_smr.runtime.node._effects import EffectExecutor
from bfs_smr.runtime.node._tasks import Background
from bfs_smr.runtime.store import StoreError
from bfs_smr.runtime.store._datadir import parse_hostport

__all__ = ["FLUSH_EVERY", "STRANGER_IDLE", "OpenAnswer", "PeerLinks"]

#: Channel frames of one read handled before their effects are carried out (one fsync).
#: Measured with ``bfs-smr bench``: 8 beat 2, 4, 16 and "the whole read" at window 16.
FLUSH_EVERY = 8
#: Seconds a stranger's link may stay up without a channel opened on it.
STRANGER_IDLE = 60.0

#: Answers a peer's open: ``(peer, the peer's announced account, params as sent)`` →
#: ``(channel id or b"", refusal reason or None)``.
OpenAnswer = Callable[[bytes, "bytes | None", Any], Awaitable[tuple[bytes, str | None]]]

#: Marks, among a link's distrusted channel ids, that a message for a channel the peer is
#: not in was already logged.
_FOREIGN = b""

_log = get_logger("bfs_smr.node")


class _Misbehaviour(Exception):
    """A peer broke the rules on a link: close that link with this reason."""


class PeerLinks:
    """The node's links, one per peer.

    Args:
        signer: the node's transport identity.
        chans: the node's channels by id.
        links: the live link to each peer (kept here; shared with the effects).
        addresses: where to dial each peer this node dials (it adds those it opens
            channels with).
        account: this node's channel key on its L1, announced first on every link.
        domain: the L1's domain (an account for another L1 is noted as None).
        account_size: the size of a channel key on this L1.
        allow: if not None, the only peers that may connect (besides those dialled).
        max_stranger_links: links from strangers kept at once.
        effects: carries out the channels' effects.
        transport_config: the links' transport settings, when serving and dialling.
        background: runs the answers to opens.
        answer_open: decides a peer's open.
        stopping: set once the node is stopping (no more re-dialling).
        refused: told the reason (a label of the node's metrics) of each frame or
            connection refused.
    """

    def __init__(
        self,
        signer: Signer,
        chans: dict[bytes, NodeChannel],
        links: dict[bytes, transport.Link],
        addresses: dict[bytes, str],
        *,
        account: bytes,
        domain: bytes,
        account_size: int,
        allow: frozenset[bytes] | None,
        max_stranger_links: int,
        transport_config: transport.TransportConfig,
        effects: EffectExecutor,
        background: Background,
        answer_open: OpenAnswer,
        stopping: asyncio.Event,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self._refused = refused or _ignore
        self.signer = signer
        self.node_id: bytes = signer.public_key
        self.chans = chans
        self.addresses = addresses
        self.account = account
        self.domain = domain
        self.account_size = account_size
        self.allow = allow
        self.max_stranger_links = max_stranger_links
        self.transport = transport_config
        self.effects = effects
        self.background = background
        self._answer_open = answer_open
        self._stopping = stopping
        self.links = links
        # Strangers' links, oldest first, each with the timer that ends it if still idle.
        self._strangers: dict[transport.Link, asyncio.TimerHandle] = {}
        self._dialed_by: dict[transport.Link, bytes] = {}
        # Per link: the channels whose messages it no longer delivers (see _on_frames).
        self._distrusted: dict[transport.Link, set[bytes]] = {}
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        self._dialing: dict[bytes, asyncio.Task[transport.Link]] = {}
        self._open_replies: dict[bytes, asyncio.Future[str | None]] = {}
        # What each peer said its channel key on our L1 is (None: it is on another L1).
        self._peer_accounts: dict[bytes, bytes | None] = {}
        self._account_waiters: dict[bytes, list[asyncio.Future[bytes | None]]] = {}

    # -- listening and closing ----------------------------------------------------------

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Accept peers on ``host:port``.

        Raises:
            OSError: cannot listen there.
        """
        return await transport.serve(
            host,
            port,
            self.signer,
            self._on_incoming,
            allow=self.allowed,
            on_refused=self._on_refused,
            config=self.transport,
        )

    def _on_refused(self, address: str, reason: str) -> None:
        _log.warning("connection refused", peer_address=address, reason=reason)
        self._refused("peer_connection")

    async def close(self) -> None:
        """Close every link and stop dialling."""
        for link in list(self.links.values()):
            link.close("node shutting down")
        dialers = list(self._dialers.values())
        for task in dialers:
            task.cancel()
        await asyncio.gather(*dialers, return_exceptions=True)

    def allowed(self, peer: bytes) -> bool:
        if peer == self.node_id:
            return False
        return self.allow is None or peer in self.allow or peer in self.addresses

    def _on_incoming(self, link: transport.Link) -> None:
        known = self._known_peers()
        if link.peer_id not in known:
            self._admit_stranger(link, known)
        self._attach(link, dialed_by=link.peer_id)

    # -- strangers ------------------------------------------------------------------------

    def _known_peers(self) -> set[bytes]:
        """Peers this node dials, or shares a channel with that is on L1: a stranger can
        make a channel here for free, but not fund it on L1."""
        known = {c.peer for c in self.chans.values() if c.l1_status is not None}
        known.update(self.addresses)
        return known

    def _admit_stranger(self, link: transport.Link, known: set[bytes]) -> None:
        """Count a link from a stranger; evict the oldest one over the cap."""
        for old in [k for k in self._strangers if k.closed.done() or k.peer_id in known]:
            self._strangers.pop(old).cancel()  # gone, or known since
        while len(self._strangers) >= self.max_stranger_links:
            oldest = next(iter(self._strangers))
            self._strangers.pop(oldest).cancel()
            oldest.close(f"too many links from peers without a channel ({self.max_stranger_links})")
        self._strangers[link] = self._stranger_timer(link)
        link.closed.add_done_callback(lambda _: self._forget_stranger(link))

    def _stranger_timer(self, link: transport.Link) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(STRANGER_IDLE, self._stranger_idle, link)

    def _forget_stranger(self, link: transport.Link) -> None:
        timer = self._strangers.pop(link, None)
        if timer is not None:
            timer.cancel()

    def _stranger_idle(self, link: transport.Link) -> None:
        if link not in self._strangers:
            return
        if link.peer_id in self._known_peers():
            del self._strangers[link]
        elif any(c.peer == link.peer_id for c in self.chans.values()):
            self._strangers[link] = self._stranger_timer(link)  # not on L1 yet: still counted
        else:
            link.close(f"no channel opened within {STRANGER_IDLE:g} s")

    # -- links up and down ----------------------------------------------------------------

    def _attach(self, link: transport.Link, *, dialed_by: bytes) -> None:
        peer = link.peer_id
        old = self.links.get(peer)
        if old is not None and not old.closed.done():
            old_dialer = self._dialed_by.get(old, peer)
            # Both sides dialled at once: keep the link dialled by the smaller id, on both.
            if old_dialer != dialed_by and old_dialer < dialed_by:
                link.close("a link to this peer exists")
                return
            old.close("replaced by a newer link")
        self.links[peer] = link
        self._dialed_by[link] = dialed_by
        link.closed.add_done_callback(lambda fut: self._on_closed(link, fut))
        _peer_log(link).info("link up")
        # Resync before taking any frame from the new link: a HELLO the peer sent as soon as
        # its side was up may already be buffered, and handled before our own resync it
        # would be forgotten (our resync waits for a HELLO that came already: a stall).
        link.send(nodemsg.account_frame(self.domain, self.account))
        for c in self.chans.values():
            if c.peer == peer and c.payouts is None:  # a settled channel has nothing to sync
                c.chan.resync()
                self.effects.flush(c)
        link.set_receiver(self._on_frames)

    def _on_closed(self, link: transport.Link, fut: asyncio.Future[str]) -> None:
        self._dialed_by.pop(link, None)
        self._distrusted.pop(link, None)
        peer = link.peer_id
        reason = fut.result() if not fut.cancelled() else "cancelled"
        if self.links.get(peer) is link:
            del self.links[peer]
            _peer_log(link).info("link down", reason=reason)
            if not self._stopping.is_set():
                self.ensure_dialer(peer)

    # -- dialling -------------------------------------------------------------------------

    def ensure_dialer(self, peer: bytes) -> None:
        """Keep dialling ``peer`` (with backoff) until a link to it is up."""
        if peer in self.addresses and peer not in self._dialers and peer not in self.links:
            task = asyncio.get_running_loop().create_task(self._dial_loop(peer))
            self._dialers[peer] = task
            task.add_done_callback(lambda _: self._dialers.pop(peer, None))

    async def _dial_loop(self, peer: bytes) -> None:
        delay = 0.05
        log = get_logger("bfs_smr.node", peer=peer)
        while not self._stopping.is_set() and peer not in self.links:
            try:
                await self._dial(peer)
                return
            except (OSError, BfsSmrError, TimeoutError) as exc:
                log.debug("dial failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _dial(self, peer: bytes) -> transport.Link:
        """Dial ``peer``; concurrent callers share one attempt (one link per peer)."""
        pending = self._dialing.get(peer)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._dial_once(peer))
            self._dialing[peer] = pending
            pending.add_done_callback(lambda _: self._dialing.pop(peer, None))
            # Its callers may all have given up (a timeout): the transport logs a failure.
            pending.add_done_callback(retrieve)
        return await asyncio.shield(pending)

    async def _dial_once(self, peer: bytes) -> transport.Link:
        host, port = parse_hostport(self.addresses[peer])
        link = await transport.dial(host, port, self.signer, peer, config=self.transport)
        self._attach(link, dialed_by=self.node_id)
        return self.links.get(peer, link)

    async def link_to(self, peer: bytes) -> transport.Link:
        """The link to ``peer``, dialled if there is none."""
        link = self.links.get(peer)
        if link is not None and not link.closed.done():
            return link
        return await self._dial(peer)

    # -- frames from peers --------------------------------------------------------------

    def _on_frames(self, link: transport.Link, frames: list[bytes]) -> None:
        touched: dict[bytes, NodeChannel] = {}
        handled = 0
        effects = self.effects
        # Channel frames still arriving on a link that a newer one replaced are dropped, as
        # if that link had been cut: the new link's resync covers them.
        current = self.links.get(link.peer_id) is link
        try:
            for data in frames:
                kind = data[0] if data else -1
                if kind == nodemsg.CHANNEL_FRAME:
                    c = self._channel_for(link, bytes(data[1:33])) if current else None
                    if c is None:
                        continue
                    try:
                        c.chan.receive(bytes(data[33:]))
                    except RemoteViolation as exc:
                        self._distrust(link, c, exc.reason)
                    touched[c.cid] = c  # a refused ENTRIES may have adopted some entries
                    handled += 1
                    if handled % FLUSH_EVERY == 0:
                        # Hand the peer work while this side goes on: without this the two
                        # nodes take turns on a long read instead of working at once.
                        effects.flush_many(touched.values(), may_wait=True)
                        touched.clear()
                elif kind == nodemsg.NODE_FRAME:
                    self._on_node_message(link, bytes(data[1:]))
                else:
                    raise _Misbehaviour(f"unknown frame kind {kind}")
        except _Misbehaviour as exc:
            self._refused("peer_protocol")
            _peer_log(link).warning("peer broke the protocol", reason=str(exc))
            link.close(str(exc))
        except StoreError as exc:  # from a flush in the loop: nothing of that step went out
            effects.store_failed(exc)
            return
        try:
            effects.flush_many(touched.values(), may_wait=True)  # one fsync for the rest
        except StoreError as exc:
            effects.store_failed(exc)

    def _channel_for(self, link: transport.Link, cid: bytes) -> NodeChannel | None:
        """The channel a frame on ``link`` is for, or None if the node ignores it.

        Ignored, never a reason to close the link (the link carries other channels): a
        channel the peer is not in (a node restored without it, or a stranger probing),
        one settled on L1 (nothing is left to say about it), and one whose messages this
        link no longer delivers after the peer broke its protocol.
        """
        c = self.chans.get(cid)
        seen = self._distrusted.setdefault(link, set())
        if c is None or c.peer != link.peer_id:
            self._refused("peer_foreign_channel")
            if _FOREIGN not in seen:  # warn once per link: a stream of these costs no log
                seen.add(_FOREIGN)
                bind_ids(_peer_log(link), channel=cid).warning(
                    "ignored a message for a channel this peer is not in"
                )
            return None
        if c.payouts is not None or cid in seen:
            return None
        return c

    def _distrust(self, link: transport.Link, c: NodeChannel, reason: str) -> None:
        """The peer broke the channel's protocol: stop taking this channel's messages on
        this link. The channel keeps its newest doubly-signed update (the recourse on L1);
        the next link resyncs it from there, which gives a peer that was merely confused
        (a bug, a restore) another chance. The link's other channels go on."""
        self._distrusted.setdefault(link, set()).add(c.cid)
        self._refused("peer_channel")
        c.log.warning("peer broke the protocol on a channel", reason=reason, seq=c.chan.seq)
        # Tell whoever waits why, rather than let them time out on a peer that is up.
        fail_all(
            c,
            f"the peer broke this channel's protocol ({reason[:200]}); pending commands may "
            "still complete after a reconnect, or close the channel with --unilateral",
        )

    # -- node messages --------------------------------------------------------------------

    def _on_node_message(self, link: transport.Link, data: bytes) -> None:
        try:
            msg = nodemsg.parse_node_message(data)
        except CodecError as exc:
            raise _Misbehaviour(f"malformed node message: {exc.reason}") from None
        if type(msg) is nodemsg.Account:
            same_l1 = msg.domain == self.domain
            if same_l1 and len(msg.key) != self.account_size:
                raise _Misbehaviour("an account of the wrong size for this L1")
            account = msg.key if same_l1 else None
            self._peer_accounts[link.peer_id] = account
            for waiter in self._account_waiters.pop(link.peer_id, []):
                if not waiter.done():
                    waiter.set_result(account)
        elif type(msg) is nodemsg.Open:
            self.background.spawn(self._on_open(link, msg.params))
        else:
            assert type(msg) is nodemsg.OpenReply
            fut = self._open_replies.pop(msg.channel_id, None)
            if fut is None:
                raise _Misbehaviour("an open reply nobody asked for")
            if not fut.done():
                fut.set_result(msg.reason)

    async def _on_open(self, link: transport.Link, value: Any) -> None:
        peer = link.peer_id
        cid, reason = await self._answer_open(peer, self._peer_accounts.get(peer), value)
        if not link.closed.done():
            link.send(nodemsg.open_reply_frame(cid, reason))

    async def account_of(self, peer: bytes) -> bytes | None:
        """The channel key ``peer`` announced on its link (None: another L1)."""
        if peer in self._peer_accounts:
            return self._peer_accounts[peer]
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._account_waiters.setdefault(peer, []).append(fut)
        return await fut

    async def ask_open(
        self, peer: bytes, link: transport.Link, params: ChannelParams, timeout: float
    ) -> str | None:
        """Send the open and wait for the peer's answer: None if it accepted, else its
        reason. A link replaced or cut before the answer came (both nodes dialled at once,
        a restart) loses it: the open goes again on the next link, and the peer answers a
        repeated open of a channel it took as it did the first time.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
        """
        reply: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._open_replies[params.channel_id] = reply
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frame = nodemsg.open_frame(params.to_value())
        while True:
            with contextlib.suppress(BfsSmrError):  # closed already: wait for the next link
                link.send(frame)
            waiting: set[asyncio.Future[Any]] = {reply, link.closed}
            await asyncio.wait(
                waiting,
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if reply.done():
                return reply.result()
            if not link.closed.done():
                raise TimeoutError
            link = await asyncio.wait_for(self.link_to(peer), max(0.0, deadline - loop.time()))


def _peer_log(link: transport.Link) -> Logger:
    return get_logger("bfs_smr.node", peer=link.peer_id)


def _ignore(_reason: str) -> None:
    pass
