"""The channel node: one asyncio daemon per party, hosting many channels with many peers.

A node owns a data directory (:mod:`bfs_smr.runtime._datadir`): its identity, its durable
store, and its control secret. It

- listens for peers and dials them over the authenticated, encrypted transport
  (:mod:`bfs_smr.runtime.transport`), one link per peer, re-dialled with backoff, each
  (re)connect followed by a resync of every channel on it;
- runs each channel's sans-IO :class:`bfs_smr.Channel`, carrying out its effects with the
  write-ahead rule (persist, then send, then report);
- watches the L1 for its channels: funds them, refutes a stale unilateral close, settles
  when a window ends, and submits cooperative closes;
- answers the command line through a local control endpoint (:mod:`._control`).

Blocking L1 calls run in one worker thread (the adapter is used from that thread only);
everything else, including the store, runs on the event loop, so each channel's steps
happen in order.

Frames on a link (inside the transport's encryption): ``0x01 ‖ channel id ‖ message``
for a channel message, ``0x02 ‖ CBOR`` for a node message: ``["account", l1, key]`` (sent
first on every link: the key this node signs channel updates with on its L1), ``["open",
params]`` and ``["open-reply", channel, reason]``. A malformed frame or node message
closes that link with a logged reason. Faults inside a channel stay in that channel: a
channel message the channel refuses (a ``RemoteViolation``) makes the node drop that
channel's messages on this link until the next one, with a logged reason, while the
link's other channels go on; a message for a channel the peer is not in, or for one
settled on L1, is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._channel import Channel, Phase
from .._codec import check_plain, decode, encode
from .._crypto import Signer
from .._errors import (
    BfsSmrError,
    CodecError,
    CommandRejected,
    L1Error,
    LocalError,
    RemoteViolation,
)
from .._l1 import L1ChannelStatus
from .._messages import (
    ChannelFinalized,
    ChannelOpened,
    CommandCommitted,
    CommandFailed,
    Effect,
    SendMessage,
    ServeLog,
)
from .._update import ChannelParams, SignedUpdate
from . import transport
from ._control import serve_control
from ._datadir import DataDir, parse_hex_id, parse_hostport
from ._l1spec import L1Access, open_l1
from ._logging import get_logger
from ._registry import load_app
from .store import Store, StoreError, params_from_value

__all__ = ["Node"]

T = TypeVar("T")

CHANNEL_FRAME = 0x01
NODE_FRAME = 0x02
MAX_NODE_MESSAGE = 1 << 16
#: Channel frames of one read handled before their effects are carried out (one fsync).
#: Measured with ``bfs-smr bench``: 8 beat 2, 4, 16 and "the whole read" at window 16.
FLUSH_EVERY = 8
#: Most copies one ``channel pay --count`` / ``send --count`` puts in one update.
MAX_BATCH = 10_000
#: A node that asked for a cooperative close submits it; the other side submits too if the
#: channel is still unsettled this long after the final update was signed.
CLOSE_GRACE = 3.0

_log = get_logger("bfs_smr.node")


#: Marks, among a link's distrusted channel ids, that a message for a channel the peer is
#: not in was already logged.
_FOREIGN = b""


class _Misbehaviour(Exception):
    """A peer broke the rules on a link: close that link with this reason."""


class _Waiter:
    """Who waits for issued commands: a future that gets their seq once all ``left`` of
    them are committed (one for a command, one for a caller's batch), or the first
    failure. Each command is still reported on its own by the channel."""

    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[int], left: int) -> None:
        self.future = future
        self.left = left

    def committed(self, seq: int) -> None:
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(seq)

    def failed(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Chan:
    chan: Channel
    key: int
    peer: bytes
    l1_status: L1ChannelStatus | None = None
    l1_deadline: int | None = None
    l1_registered: int | None = None
    payouts: tuple[int, int] | None = None
    waiters: dict[int, _Waiter] = field(default_factory=dict)
    opened: list[asyncio.Future[None]] = field(default_factory=list)
    settled: list[asyncio.Future[tuple[int, int] | None]] = field(default_factory=list)
    close_asked: bool = False
    finalized_at: float | None = None
    l1_busy: bool = False
    funding_sent: bool = False
    forced_tried: int = -1  # the newest seq of a peer's forced move looked at

    @property
    def cid(self) -> bytes:
        return self.chan.channel_id

    @property
    def l1_text(self) -> str:
        return self.l1_status.value if self.l1_status else "none"


class Node:
    """A bfs-smr node.

    Args:
        data_dir: made with ``bfs-smr init``.
        listen: ``HOST:PORT`` to accept peers on (port 0: any free port).
        l1: the L1 spec (``local:PATH``).
        allow: if given, only these node ids may connect (the nodes this node dials
            are always allowed).
        poll_interval: seconds between looks at the L1.
        max_channels_per_peer: channels a peer may open with this node (each costs disk
            and memory even without a deposit).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        listen: str,
        l1: str,
        allow: set[bytes] | None = None,
        poll_interval: float = 0.2,
        max_in_flight: int = 64,
        max_batch: int = 64,
        max_queue: int = 10_000,
        max_channels_per_peer: int = 10_000,
        window: int | None = None,
    ) -> None:
        self.dir = DataDir(data_dir)
        self.listen = parse_hostport(listen)
        self.l1_spec = l1
        self.allow = allow
        self.poll_interval = poll_interval
        self.max_per_peer = max_channels_per_peer
        if min(max_in_flight, max_batch, max_queue) < 1:
            raise LocalError("--max-in-flight and --max-batch must be at least 1")
        self.options = {
            "max_in_flight": max_in_flight,
            "max_batch": max_batch,
            "max_queue": max_queue,
        }
        self.window = window
        self.signer = self.dir.identity()  # the transport identity; see also chan_signer
        self.node_id = self.signer.public_key
        self.chans: dict[bytes, _Chan] = {}
        self.links: dict[bytes, transport.Link] = {}
        self._dialed_by: dict[transport.Link, bytes] = {}
        # Per link: the channels whose messages it no longer delivers (see _on_frames).
        self._distrusted: dict[transport.Link, set[bytes]] = {}
        self._addresses: dict[bytes, str] = {}
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        self._dialing: dict[bytes, asyncio.Task[transport.Link]] = {}
        self._open_replies: dict[bytes, asyncio.Future[str | None]] = {}
        # What each peer said its channel key on our L1 is (None: it is on another L1).
        self._peer_accounts: dict[bytes, bytes | None] = {}
        self._account_waiters: dict[bytes, list[asyncio.Future[bytes | None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty: dict[bytes, _Chan] = {}
        self._flush_pending = False
        self._stopping = asyncio.Event()
        self._l1_pool = ThreadPoolExecutor(1, thread_name_prefix="bfs-smr-l1")
        self._since = 0
        self.port = 0
        self.l1: L1Access
        self.store: Store
        self.chan_signer: Signer
        self.account = b""

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the node to shut down gracefully (safe from a signal handler)."""
        self._stopping.set()

    async def run(self, ready: Callable[[Node], None] | None = None) -> None:
        """Run until :meth:`stop`."""
        self.dir.lock()
        try:
            await self._run(ready)
        finally:
            self.dir.unlock()

    async def _run(self, ready: Callable[[Node], None] | None) -> None:
        self.l1 = await self._l1(open_l1, self.l1_spec, self.signer, self.dir.l1_key, self.window)
        # Channel updates are signed with the L1's scheme: the identity on a local L1,
        # the secp256k1 key on the EVM. Its public key is this node's channel account.
        self.chan_signer = self.l1.signer
        self.account = self.chan_signer.public_key
        self.store = Store(self.dir.path)
        self._addresses.update(
            (peer, address) for peer, address in self.store.peer_addresses().items()
        )
        for cid in self.store.channel_ids():
            self._load(cid)
        host, port = self.listen
        server = await transport.serve(
            host, port, self.signer, self._on_incoming, allow=self._allowed, on_refused=_refused
        )
        self.port = server.sockets[0].getsockname()[1]
        control = await serve_control(self.dir.secret(), self._control)
        self.dir.write_control(
            {
                "pid": os.getpid(),
                "port": control.sockets[0].getsockname()[1],
                "listen": f"{host}:{self.port}",
                "node_id": self.node_id.hex(),
                "l1": self.l1_spec,
                "account": self.account.hex(),
            }
        )
        _log.info(
            "node started",
            node_id=self.node_id.hex(),
            listen=f"{host}:{self.port}",
            l1=self.l1_spec,
            channels=len(self.chans),
        )
        self._spawn(self._watch())
        for peer in {c.peer for c in self.chans.values() if c.payouts is None}:
            self._ensure_dialer(peer)
        if ready is not None:
            ready(self)
        try:
            await self._stopping.wait()
        finally:
            _log.info("node stopping")
            self.dir.remove_control()
            control.close()
            server.close()
            for link in list(self.links.values()):
                link.close("node shutting down")
            for task in list(self._tasks) + list(self._dialers.values()):
                task.cancel()
            await asyncio.gather(*self._tasks, *self._dialers.values(), return_exceptions=True)
            for c in self.chans.values():
                _fail_all(c, "the node shut down")
            self._l1_pool.shutdown(wait=True)
            self.store.close()
            _log.info("node stopped")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            _log.error("background task failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, StoreError):
                self.stop()  # the store cannot be written: stop rather than act on a guess

    async def _l1(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._l1_pool, fn, *args)

    def _load(self, cid: bytes) -> _Chan:
        params = self.store.params(cid)
        app = load_app(params.app, params.app_version)
        self.l1.adapter.track(params)
        chan = self.store.load(cid, app, self.l1.adapter.format, self.chan_signer, **self.options)
        peer = self.store.peer_of(cid) or params.participants[1 - chan.index]
        c = _Chan(chan=chan, key=self.store.key_of(cid), peer=peer)
        self.chans[cid] = c
        return c

    # -- links --------------------------------------------------------------------------

    def _allowed(self, peer: bytes) -> bool:
        if peer == self.node_id:
            return False
        return self.allow is None or peer in self.allow or peer in self._addresses

    def _on_incoming(self, link: transport.Link) -> None:
        self._attach(link, dialed_by=link.peer_id)

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
        _log.info("link up", peer=peer.hex()[:16])
        # Resync before taking any frame from the new link: a HELLO the peer sent as soon as
        # its side was up may already be buffered, and handled before our own resync it
        # would be forgotten (our resync waits for a HELLO that came already: a stall).
        link.send(bytes([NODE_FRAME]) + encode(["account", self._domain, self.account]))
        for c in self.chans.values():
            if c.peer == peer and c.payouts is None:  # a settled channel has nothing to sync
                c.chan.resync()
                self._flush(c)
        link.set_receiver(self._on_frames)

    def _on_closed(self, link: transport.Link, fut: asyncio.Future[str]) -> None:
        self._dialed_by.pop(link, None)
        self._distrusted.pop(link, None)
        peer = link.peer_id
        reason = fut.result() if not fut.cancelled() else "cancelled"
        if self.links.get(peer) is link:
            del self.links[peer]
            _log.info("link down", peer=peer.hex()[:16], reason=reason)
            if not self._stopping.is_set():
                self._ensure_dialer(peer)

    def _ensure_dialer(self, peer: bytes) -> None:
        if peer in self._addresses and peer not in self._dialers and peer not in self.links:
            task = asyncio.get_running_loop().create_task(self._dial_loop(peer))
            self._dialers[peer] = task
            task.add_done_callback(lambda _: self._dialers.pop(peer, None))

    async def _dial_loop(self, peer: bytes) -> None:
        delay = 0.05
        while not self._stopping.is_set() and peer not in self.links:
            try:
                await self._dial(peer)
                return
            except (OSError, BfsSmrError, TimeoutError) as exc:
                _log.debug(
                    "dial failed", peer=peer.hex()[:16], error=str(exc) or type(exc).__name__
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _dial(self, peer: bytes) -> transport.Link:
        """Dial ``peer``; concurrent callers share one attempt (one link per peer)."""
        pending = self._dialing.get(peer)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._dial_once(peer))
            self._dialing[peer] = pending
            pending.add_done_callback(lambda _: self._dialing.pop(peer, None))
        return await asyncio.shield(pending)

    async def _dial_once(self, peer: bytes) -> transport.Link:
        host, port = parse_hostport(self._addresses[peer])
        link = await transport.dial(host, port, self.signer, peer, timeout=5.0)
        self._attach(link, dialed_by=self.node_id)
        return self.links.get(peer, link)

    async def _link_to(self, peer: bytes) -> transport.Link:
        link = self.links.get(peer)
        if link is not None and not link.closed.done():
            return link
        return await self._dial(peer)

    # -- frames from peers --------------------------------------------------------------

    def _on_frames(self, link: transport.Link, frames: list[bytes]) -> None:
        touched: dict[bytes, _Chan] = {}
        handled = 0
        # Channel frames still arriving on a link that a newer one replaced are dropped, as
        # if that link had been cut: the new link's resync covers them.
        current = self.links.get(link.peer_id) is link
        try:
            for data in frames:
                kind = data[0] if data else -1
                if kind == CHANNEL_FRAME:
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
                        self._flush_many(touched.values())
                        touched.clear()
                elif kind == NODE_FRAME:
                    self._on_node_message(link, bytes(data[1:]))
                else:
                    raise _Misbehaviour(f"unknown frame kind {kind}")
        except _Misbehaviour as exc:
            _log.warning("peer broke the protocol", peer=link.peer_id.hex()[:16], reason=str(exc))
            link.close(str(exc))
        except StoreError as exc:  # from a flush in the loop: nothing of that step went out
            self._store_failed(exc)
            return
        try:
            self._flush_many(touched.values())  # one fsync for the rest of the read
        except StoreError as exc:
            self._store_failed(exc)

    def _channel_for(self, link: transport.Link, cid: bytes) -> _Chan | None:
        """The channel a frame on ``link`` is for, or None if the node ignores it.

        Ignored, never a reason to close the link (the link carries other channels): a
        channel the peer is not in (a node restored without it, or a stranger probing),
        one settled on L1 (nothing is left to say about it), and one whose messages this
        link no longer delivers after the peer broke its protocol.
        """
        c = self.chans.get(cid)
        seen = self._distrusted.setdefault(link, set())
        if c is None or c.peer != link.peer_id:
            if _FOREIGN not in seen:  # warn once per link: a stream of these costs no log
                seen.add(_FOREIGN)
                _log.warning(
                    "ignored a message for a channel this peer is not in",
                    peer=link.peer_id.hex()[:16],
                    channel=cid.hex()[:16],
                )
            return None
        if c.payouts is not None or cid in seen:
            return None
        return c

    def _distrust(self, link: transport.Link, c: _Chan, reason: str) -> None:
        """The peer broke the channel's protocol: stop taking this channel's messages on
        this link. The channel keeps its newest doubly-signed update (the recourse on L1);
        the next link resyncs it from there, which gives a peer that was merely confused
        (a bug, a restore) another chance. The link's other channels go on."""
        self._distrusted.setdefault(link, set()).add(c.cid)
        _log.warning(
            "peer broke the protocol on a channel",
            peer=link.peer_id.hex()[:16],
            channel=c.cid.hex()[:16],
            reason=reason,
            seq=c.chan.seq,
        )
        # Tell whoever waits why, rather than let them time out on a peer that is up.
        _fail_all(
            c,
            f"the peer broke this channel's protocol ({reason[:200]}); pending commands may "
            "still complete after a reconnect, or close the channel with --unilateral",
        )

    def _on_node_message(self, link: transport.Link, data: bytes) -> None:
        try:
            msg = decode(data, max_size=MAX_NODE_MESSAGE, canonical=False)
        except CodecError as exc:
            raise _Misbehaviour(f"malformed node message: {exc.reason}") from None
        if type(msg) is not list or not msg:
            raise _Misbehaviour("a node message is a non-empty array")
        kind = msg[0]
        if kind == "account" and len(msg) == 3 and type(msg[1]) is bytes and type(msg[2]) is bytes:
            same_l1 = msg[1] == self._domain
            if same_l1 and len(msg[2]) != self.chan_signer.scheme.public_key_size:
                raise _Misbehaviour("an account of the wrong size for this L1")
            account = msg[2] if same_l1 else None
            self._peer_accounts[link.peer_id] = account
            for waiter in self._account_waiters.pop(link.peer_id, []):
                if not waiter.done():
                    waiter.set_result(account)
        elif kind == "open" and len(msg) == 2:
            self._spawn(self._accept_open(link, msg[1]))
        elif kind == "open-reply" and len(msg) == 3 and type(msg[1]) is bytes:
            fut = self._open_replies.pop(msg[1], None)
            reason = msg[2]
            if fut is None or not (reason is None or type(reason) is str):
                raise _Misbehaviour("an open reply nobody asked for")
            if not fut.done():
                fut.set_result(None if reason is None else reason[:200])
        else:
            raise _Misbehaviour(f"unknown node message {str(kind)[:20]!r}")

    async def _accept_open(self, link: transport.Link, value: Any) -> None:
        cid = b""
        try:
            try:
                # The node message was decoded without the plain-data check: a float or a
                # tagged object stored here would make the store unreadable (and the node
                # unable to start), so check before anything is parsed or stored.
                check_plain(value)
                params = params_from_value(value)
            except (ValueError, TypeError, LookupError, LocalError, CodecError) as exc:
                # LookupError: e.g. participants sent as [] or {} (an index or key fails)
                raise LocalError(f"malformed channel parameters: {exc}") from None
            cid = params.channel_id
            if params.l1 != self._domain:
                raise LocalError("the channel is on another L1")
            opener = self._peer_accounts.get(link.peer_id)
            if opener is None or params.participants != (opener, self.account):
                raise LocalError(
                    "the participants must be the opener's and this node's accounts, in order"
                )
            if params.challenge_window < self.l1.window:
                raise LocalError(f"the challenge window must be at least {self.l1.window} s")
            if cid in self.chans:
                raise LocalError("this channel exists already")
            if sum(1 for c in self.chans.values() if c.peer == link.peer_id) >= self.max_per_peer:
                raise LocalError(f"this node holds {self.max_per_peer} channels with you already")
            self._check_app(params, load_app(params.app, params.app_version))
            due = params.deposits[1]
            if due:
                have = await self._l1(self.l1.adapter.balance)
                if have < due:
                    raise LocalError(f"this node cannot deposit {due} (it holds {have} on L1)")
            if cid in self.chans:
                raise LocalError("this channel exists already")
            self.store.add_channel(params)
            self.store.set_peer(cid, link.peer_id)
            self._load(cid)
            reason = None
            _log.info("channel accepted", channel=cid.hex()[:16], peer=link.peer_id.hex()[:16])
        except (LocalError, CommandRejected, ValueError, TypeError) as exc:
            reason = str(exc)
            _log.info("channel refused", peer=link.peer_id.hex()[:16], reason=reason)
        if not link.closed.done():
            link.send(bytes([NODE_FRAME]) + encode(["open-reply", cid, reason]))

    # -- carrying out a channel's effects -------------------------------------------------

    def _flush(self, c: _Chan) -> None:
        """Carry out a channel's effects now: persist, then send, then report."""
        self._flush_many([c])

    def _flush_many(self, chans: Iterable[_Chan]) -> None:
        """Carry out several channels' effects with one transaction (one fsync) for all:
        the group commit. Everything is durable before anything is sent or reported."""
        steps = [(c, effects) for c in chans if (effects := c.chan.effects())]
        if not steps:
            return
        self.store.persist_many([(c.key, effects, c.chan) for c, effects in steps])
        for c, effects in steps:
            self._carry_out(c, effects)

    def _flush_soon(self, c: _Chan) -> None:
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
            self._flush_many(chans)
        except StoreError as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: StoreError) -> None:
        # Nothing of the failed step was sent or reported; what was durable still is.
        # Acting on without a store would break the write-ahead rule: stop.
        _log.error("the store cannot be written: stopping", error=str(exc))
        self.stop()

    def _carry_out(self, c: _Chan, effects: list[Effect]) -> None:
        chan = c.chan
        prefix = bytes([CHANNEL_FRAME]) + c.cid
        frames: list[bytes] = []
        for effect in effects:
            kind = type(effect)
            if kind is SendMessage:
                frames.append(prefix + effect.data)  # type: ignore[union-attr]
            elif kind is CommandCommitted:
                assert isinstance(effect, CommandCommitted)
                waiter = c.waiters.pop(effect.ref, None) if effect.local else None
                if waiter is not None:
                    waiter.committed(effect.seq)
            elif kind is CommandFailed:
                assert isinstance(effect, CommandFailed)
                failed = c.waiters.pop(effect.ref, None)
                if failed is not None:
                    failed.failed(CommandRejected(effect.reason))
            elif kind is ChannelOpened:
                if chan.index == 0:
                    self._spawn(self._fund(c))
            elif kind is ChannelFinalized:
                c.finalized_at = time.monotonic()
                if c.close_asked:
                    self._spawn(self._submit_close(c))
            elif kind is ServeLog:
                assert isinstance(effect, ServeLog)
                self._send(c, frames)
                frames = []
                entries = self.store.log_range(c.cid, effect.first_seq, effect.last_seq)
                chan.serve_log(entries)
                self._flush(c)
        self._send(c, frames)

    def _send(self, c: _Chan, frames: list[bytes]) -> None:
        link = self.links.get(c.peer)
        if frames and link is not None and not link.closed.done():
            link.send_many(frames)  # a dropped link loses them; the resync re-sends

    # -- the L1 ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        first = True
        while True:
            try:
                events = await self._l1(self.l1.adapter.events, self._since)
                touched = set(self.chans) if first else set()
                first = False
                for event in events:
                    self._since = event.index + 1
                    if event.channel_id in self.chans:
                        touched.add(event.channel_id)
                now = await self._l1(self.l1.adapter.now)
                touched.update(cid for cid, c in self.chans.items() if _needs_l1_look(c, now))
                for cid in touched:
                    await self._sync_l1(self.chans[cid], now)
            except L1Error as exc:
                _log.warning("L1 unavailable", error=str(exc))
            await asyncio.sleep(self.poll_interval)

    async def _sync_l1(self, c: _Chan, now: int) -> None:
        """Bring the node's view of a channel's L1 state up to date and act on it."""
        try:
            info = await self._l1(self.l1.adapter.channel, c.cid)
        except L1Error:
            if c.chan.index == 0 and c.chan.committed is not None and not c.funding_sent:
                self._spawn(self._fund(c))  # signed but never funded (a crash in between)
            return
        c.l1_status, c.l1_deadline = info.status, info.deadline
        c.l1_registered = info.registered_seq
        status, newest = info.status, c.chan.committed
        if status is L1ChannelStatus.FUNDING and c.chan.index == 1 and not c.funding_sent:
            c.funding_sent = True
            missing = c.chan.params.locked - info.locked
            if missing > 0:
                await self._l1_act(c, "deposit", self.l1.adapter.deposit, c.cid, missing)
        elif status is L1ChannelStatus.OPEN:
            _resolve(c.opened, None)
            if c.chan.phase is Phase.CLOSED and c.finalized_at is None:
                c.finalized_at = time.monotonic()  # found final after a restart
            if c.chan.phase is Phase.CLOSED and (
                c.close_asked or time.monotonic() - (c.finalized_at or 0) > CLOSE_GRACE
            ):
                await self._submit_close(c)
        elif status is L1ChannelStatus.CLOSING:
            forced = info.forced
            if newest is not None and (
                newest.seq > (info.registered_seq or -1)
                # A doubly-signed update beats another one forced at its seq.
                or (
                    forced is not None
                    and forced.seq == newest.seq
                    and forced.update.entry_hash() != newest.update.entry_hash()
                )
            ):
                _log.warning(
                    "stale close on L1: refuting",
                    channel=c.cid.hex()[:16],
                    registered_seq=info.registered_seq,
                    our_seq=newest.seq,
                )
                await self._l1_act(c, "refute", self.l1.adapter.refute, newest)
            elif info.deadline is not None and now >= info.deadline:
                await self._l1_act(c, "settle", self.l1.adapter.settle, c.cid)
            elif forced is not None and self._adopt_forced(c, forced):
                pass  # the player answers with `channel send`, forced on L1 in turn
            elif info.registered_seq == c.chan.seq and _our_move_is_signed(c):
                await self._force(c, None)
        elif status in (L1ChannelStatus.SETTLED, L1ChannelStatus.CANCELLED):
            c.payouts = info.payouts or (0, 0)
            _resolve(c.settled, c.payouts)
            _resolve(c.opened, None)
            _fail_all(c, f"the channel is {status.value} on L1")

    async def _l1_act(self, c: _Chan, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if c.l1_busy:
            return None
        c.l1_busy = True
        try:
            result = await self._l1(fn, *args)
            _log.info(f"L1 {what}", channel=c.cid.hex()[:16])
            return result
        except L1Error as exc:
            _log.info(f"L1 {what} not done", channel=c.cid.hex()[:16], reason=str(exc))
            return None
        finally:
            c.l1_busy = False

    def _adopt_forced(self, c: _Chan, forced: SignedUpdate) -> bool:
        """Take the peer's move forced on L1 as the position to answer; each one once."""
        chan = c.chan
        entries = forced.update.commands
        if chan.committed is None or forced.seq <= max(chan.force_base[0].seq, c.forced_tried):
            return False
        if not entries or entries[0].actor == chan.index:
            return False  # this node's own move
        c.forced_tried = forced.seq
        try:
            chan.adopt_forced_move(forced)
        except RemoteViolation as exc:
            _log.warning(
                "cannot adopt the move forced on L1",
                channel=c.cid.hex()[:16],
                seq=forced.seq,
                reason=exc.reason,
            )
            return False
        to_move = chan.app.to_move(chan.force_base[1])
        _log.info(
            "adopted a move forced on L1",
            channel=c.cid.hex()[:16],
            seq=forced.seq,
            to_move=None if to_move is None else "this node" if to_move == chan.index else "peer",
        )
        return True

    async def _force(self, c: _Chan, command: Any) -> tuple[int, int | None]:
        """Force a move on L1: the one this node already signed (``command`` None), or a new
        one. Returns the forced seq and the new deadline (None if L1 refused it)."""
        if not self.l1.adapter.supports_force_move:
            raise LocalError("this L1 does not support force moves")
        _, base_state = c.chan.force_base
        update = c.chan.force_move(command)
        self._flush(c)  # a new signature is durable before it goes to L1
        state = c.chan.app.encode_state(base_state)
        _log.info("forcing a move on L1", channel=c.cid.hex()[:16], seq=update.seq)
        deadline = await self._l1_act(c, "force move", self.l1.adapter.force_move, state, update)
        return update.seq, deadline

    async def _fund(self, c: _Chan) -> None:
        c.funding_sent = True
        await self._l1_act(c, "open", self.l1.adapter.open, c.chan.params)
        await self._sync_l1(c, await self._l1(self.l1.adapter.now))

    async def _submit_close(self, c: _Chan) -> None:
        final = c.chan.committed
        if final is None or not final.update.final or c.l1_status is L1ChannelStatus.SETTLED:
            return
        await self._l1_act(c, "cooperative close", self.l1.adapter.cooperative_close, final)
        await self._sync_l1(c, await self._l1(self.l1.adapter.now))

    # -- control requests -----------------------------------------------------------------

    async def _control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = _OPS.get(op)
        if handler is None:
            raise LocalError(f"unknown op {op!r}")
        result: dict[str, Any] = await handler(self, args)
        return result

    def _chan_arg(self, args: dict[str, Any]) -> _Chan:
        text = str(args.get("channel", ""))
        matches = [c for cid, c in self.chans.items() if cid.hex().startswith(text.lower())]
        if not text or len(text) < 8 or not matches:
            raise LocalError(f"no channel {text!r} on this node")
        if len(matches) > 1:
            raise LocalError(f"{text!r} names {len(matches)} channels; give more digits")
        return matches[0]

    async def op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "node_id": self.node_id.hex(),
            "listen": f"{self.listen[0]}:{self.port}",
            "l1": self.l1_spec,
            "account": self.account.hex(),
            "channels": len(self.chans),
            "links": sorted(peer.hex() for peer in self.links),
            "rss_bytes": _rss(),
        }

    async def op_open(self, args: dict[str, Any]) -> dict[str, Any]:
        timeout = _number(args.get("timeout", 30.0), "timeout")
        peer = parse_hex_id(str(args.get("peer_id", "")), "peer id")
        address = str(args.get("peer", ""))
        parse_hostport(address)
        if peer == self.node_id:
            raise LocalError("a node cannot open a channel with itself")
        app = load_app(str(args.get("app", "payments")))
        deposit = _amount(args.get("deposit", 0), "deposit")
        peer_deposit = _amount(args.get("peer_deposit", 0), "peer deposit")
        options = args.get("options") or {}
        if type(options) is not dict:
            raise LocalError("options must be a JSON object")
        check_plain(options)
        have = await self._l1(self.l1.adapter.balance)
        if have < deposit:
            raise LocalError(f"this node holds {have} on L1, less than the deposit {deposit}")
        known = peer in self._addresses
        self._addresses.setdefault(peer, address)
        try:
            link = await asyncio.wait_for(self._link_to(peer), timeout)
            peer_account = await asyncio.wait_for(self._account_of(peer), timeout)
        except (OSError, TimeoutError, BfsSmrError) as exc:
            if not known:
                self._addresses.pop(peer, None)  # never re-dial an address that did not work
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise LocalError(f"cannot reach the peer at {address}: {reason}") from None
        if peer_account is None:
            raise LocalError(f"the peer is not on this node's L1 ({self.l1_spec})")
        params = ChannelParams(
            l1=self._domain,
            participants=(self.account, peer_account),
            deposits=(deposit, peer_deposit),
            app=app.name,
            app_version=app.version,
            options=options,
            nonce=secrets.randbits(63),
            challenge_window=self.l1.window,
        )
        self._check_app(params, app)
        cid = params.channel_id
        reply: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._open_replies[cid] = reply
        link.send(bytes([NODE_FRAME]) + encode(["open", params.to_value()]))
        refused = await asyncio.wait_for(reply, timeout)
        if refused is not None:
            raise LocalError(f"the peer refused the channel: {refused}")
        self.store.add_channel(params)
        self.store.set_peer(cid, peer, address)
        self._addresses[peer] = address
        c = self._load(cid)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        c.opened.append(opened)
        c.chan.start()
        self._flush(c)
        late = f"channel {cid.hex()} is not open on L1 after {timeout:g} s (L1: {c.l1_text})"
        await _wait(opened, timeout, late + "; it may open later")
        _log.info("channel opened", channel=cid.hex()[:16], peer=peer.hex()[:16])
        return self._describe(c)

    async def op_send(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        command = args.get("command")
        check_plain(command)
        if c.l1_status is L1ChannelStatus.CLOSING and c.chan.app.to_move(c.chan.state) is not None:
            seq, deadline = await self._force(c, command)  # the dispute goes on, on L1
            return {"channel": c.cid.hex(), "seq": seq, "forced": True, "deadline": deadline}
        if c.l1_status is not L1ChannelStatus.OPEN:
            raise LocalError(f"the channel is {c.l1_text} on L1; it takes no commands")
        count = int(_amount(args.get("count", 1), "count"))
        if not 1 <= count <= MAX_BATCH:
            raise LocalError(f"count must be 1 to {MAX_BATCH:,}")
        # One command, or a caller's batch of ``count`` copies: one update, all or none.
        fut = self._issue(c, command) if count == 1 else self._issue_batch(c, [command] * count)
        timeout = _number(args.get("timeout", 30.0), "timeout")
        late = f"not doubly signed within {timeout:g} s (is the peer up?)"
        seq = await _wait(fut, timeout, late + "; the command stays pending and may still complete")
        return {"channel": c.cid.hex(), "seq": seq, "count": count}

    def _issue(self, c: _Chan, command: Any) -> asyncio.Future[int]:
        """Issue ``command``; the future gets its seq once doubly signed and durable."""
        ref = c.chan.issue(command)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), 1)
        c.waiters[ref] = waiter
        self._flush_soon(c)
        return waiter.future

    def _issue_batch(self, c: _Chan, commands: list[Any]) -> asyncio.Future[int]:
        """Issue ``commands`` together; the future gets their seq (one update) once every
        one is doubly signed and durable, or the first failure."""
        refs = c.chan.issue_batch(commands)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), len(refs))
        for ref in refs:
            c.waiters[ref] = waiter
        self._flush_soon(c)
        return waiter.future

    async def _account_of(self, peer: bytes) -> bytes | None:
        """The channel key ``peer`` announced on its link (None: another L1)."""
        if peer in self._peer_accounts:
            return self._peer_accounts[peer]
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._account_waiters.setdefault(peer, []).append(fut)
        return await fut

    @property
    def _domain(self) -> bytes:
        return self.l1.adapter.format.domain

    def _check_app(self, params: ChannelParams, app: Any) -> None:
        """The app accepts these parameters (options, deposits), or raise."""
        Channel(params, app, self.l1.adapter.format, self.chan_signer)
        app.initial_state(params)

    async def op_pay(self, args: dict[str, Any]) -> dict[str, Any]:
        amount = _amount(args.get("amount"), "amount")
        return await self.op_send({**args, "command": {"pay": amount}})

    async def op_show(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        return self._describe(c)

    async def op_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channels": [self._describe(c) for c in self.chans.values()]}

    async def op_close(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        timeout = _number(args.get("timeout", 60.0), "timeout")
        unilateral = bool(args.get("unilateral", False))
        if c.payouts is None:
            done: asyncio.Future[tuple[int, int] | None] = (
                asyncio.get_running_loop().create_future()
            )
            c.settled.append(done)
            if c.l1_status is L1ChannelStatus.FUNDING:
                await self._l1_act(c, "cancel", self.l1.adapter.cancel, c.cid)
            elif c.l1_status is L1ChannelStatus.CLOSING:
                pass  # a close already runs on L1: the node settles when its window ends
            elif unilateral:
                newest = c.chan.committed
                if newest is None:
                    raise LocalError("nothing is doubly signed yet: there is nothing to close")
                if c.l1_status is L1ChannelStatus.OPEN:
                    await self._l1_act(
                        c, "unilateral close", self.l1.adapter.unilateral_close, newest
                    )
            elif c.chan.phase is not Phase.CLOSED:
                c.close_asked = True
                if c.chan.phase is not Phase.CLOSING:
                    c.chan.close()
                self._flush(c)
            else:
                c.close_asked = True
                self._spawn(self._submit_close(c))
            self._spawn(self._sync_l1(c, await self._l1(self.l1.adapter.now)))
            late = f"not paid out within {timeout:g} s (L1: {c.l1_text}); the node keeps at it"
            await _wait(done, timeout, late)
        assert c.payouts is not None
        return {"channel": c.cid.hex(), "payouts": self._by_node(c, c.payouts)}

    async def op_bench(self, args: dict[str, Any]) -> dict[str, Any]:
        """Pay 1, ``count`` times, through the same path as ``channel pay``; report the
        rate and the latency from issue to doubly signed and durable.

        ``window`` is the channel's pipelining window for the run (its ``max_in_flight``);
        ``batch`` payments go in each caller's batch; ``max_batch`` is the automatic
        batching for the run (1, the default, turns it off: one payment per update).
        Twice the window's worth of payments (or batches) are kept issued, so the
        sequencer always has the next one queued when a slot frees; a window of 1 is the
        sequential case, one payment in flight and one outstanding.
        """
        c = self._chan_arg(args)
        count = int(_amount(args.get("count", 1000), "count"))
        window = max(1, int(_amount(args.get("window", 1), "window")))
        batch = max(1, int(_amount(args.get("batch", 1), "batch")))
        auto = max(1, int(_amount(args.get("max_batch", 1), "max_batch")))
        if c.l1_status is not L1ChannelStatus.OPEN:
            raise LocalError(f"the channel is {c.l1_text} on L1; it takes no commands")
        rounds = -(-count // batch)
        latencies: list[float] = []
        left = rounds
        pay = {"pay": 1}

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                if batch == 1:
                    await self._issue(c, pay)
                else:
                    await self._issue_batch(c, [pay] * batch)
                latencies.append(time.perf_counter() - t0)

        chan = c.chan
        saved = chan.max_in_flight, chan.max_batch
        chan.max_in_flight, chan.max_batch = window, auto
        # (Bounded by the queue's size: a flood of batches gets "busy", not memory.)
        outstanding = 1 if window == 1 else max(1, min(2 * window, chan.max_queue // batch))
        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(outstanding, rounds))))
            elapsed = time.perf_counter() - start
        finally:
            chan.max_in_flight, chan.max_batch = saved
        latencies.sort()
        paid = rounds * batch
        return {
            "payments": paid,
            "window": window,
            "k": batch,
            "max_batch": auto,
            "outstanding": outstanding,
            "seconds": elapsed,
            "payments_per_second": paid / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e3,
        }

    def _describe(self, c: _Chan) -> dict[str, Any]:
        chan = c.chan
        newest = chan.committed
        phase = chan.phase.value
        if c.l1_status in (L1ChannelStatus.CLOSING, L1ChannelStatus.SETTLED):
            phase = c.l1_status.value
        # In a dispute the game goes on from the newest forced move: show that position.
        forced, state = chan.force_base if chan.phase is Phase.DISPUTE else (None, chan.state)
        to_move = None if state is None else chan.app.to_move(state)
        return {
            "channel": c.cid.hex(),
            "app": chan.params.app,
            "seq": chan.seq,
            "phase": phase,
            "l1": c.l1_status.value if c.l1_status else None,
            "peer": c.peer.hex(),
            "outcome": None if newest is None else self._by_node(c, newest.update.outcome),
            "state": None if state is None else _jsonable(decode(chan.app.encode_state(state))),
            "to_move": None
            if to_move is None
            else (self.node_id if to_move == chan.index else c.peer).hex(),
            "forced_seq": None if forced is None else forced.seq,
            "payouts": None if c.payouts is None else self._by_node(c, c.payouts),
        }

    def _by_node(self, c: _Chan, amounts: tuple[int, int]) -> dict[str, int]:
        ids = [b"", b""]
        ids[c.chan.index], ids[1 - c.chan.index] = self.node_id, c.peer
        return {ids[i].hex(): amounts[i] for i in (0, 1)}


_OPS = {name[3:]: getattr(Node, name) for name in dir(Node) if name.startswith("op_")}


def _needs_l1_look(c: _Chan, now: int) -> bool:
    """Whether the node must act on this channel's L1 state even without a new event."""
    if c.l1_status is L1ChannelStatus.CLOSING:
        return (c.l1_deadline or 0) <= now  # the window is over: settle
    if c.l1_status is L1ChannelStatus.OPEN:
        return c.chan.phase is Phase.CLOSED  # a final update to submit
    return c.l1_status is None and c.chan.committed is not None  # signed, not yet funded


def _our_move_is_signed(c: _Chan) -> bool:
    """The registered state waits for this node's move, and it signed one already."""
    chan = c.chan
    if chan.phase is Phase.DISPUTE or chan.state is None:
        return False
    in_flight = chan.in_flight()
    return chan.app.to_move(chan.state) == chan.index and bool(in_flight)


async def _wait(fut: asyncio.Future[T], timeout: float, message: str) -> T:
    """Wait for ``fut`` (left running on timeout), or raise ``LocalError(message)``."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise LocalError(message) from None


def _resolve(futures: list[asyncio.Future[Any]], value: Any) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(value)
    futures.clear()


def _fail_all(c: _Chan, reason: str) -> None:
    for waiter in c.waiters.values():
        waiter.failed(LocalError(reason))
    c.waiters.clear()


def _refused(address: str, reason: str) -> None:
    _log.warning("connection refused", peer_address=address, reason=reason)


def _amount(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise LocalError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or value <= 0:
        raise LocalError(f"{what} must be a positive number")
    return float(value)


def _jsonable(value: Any) -> Any:
    if type(value) is bytes:
        return value.hex()
    if type(value) in (list, tuple):
        return [_jsonable(v) for v in value]
    if type(value) is dict:
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _rss() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
