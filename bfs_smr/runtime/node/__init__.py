"""The channel node: one asyncio daemon per party, hosting many channels with many peers.

A node owns a data directory (:mod:`bfs_smr.runtime.store._datadir`): its identity, its durable
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

from bfs_smr._channel import Channel, Phase
from bfs_smr._codec import check_plain, decode, encode
from bfs_smr._crypto import Signer
from bfs_smr._errors import (
    BfsSmrError,
    CodecError,
    CommandRejected,
    L1Error,
    LocalError,
    RemoteViolation,
)
from bfs_smr._l1 import L1ChannelInfo, L1ChannelStatus
from bfs_smr._limits import ChannelLimits
from bfs_smr._messages import (
    ChannelFinalized,
    ChannelOpened,
    CommandCommitted,
    CommandFailed,
    Effect,
    SendMessage,
    ServeLog,
)
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
from bfs_smr._update import ChannelParams, SignedUpdate
from bfs_smr.plugins import L1Connection, connect_l1, load_app
from bfs_smr.runtime import transport
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.node import _nodemsg as nodemsg
from bfs_smr.runtime.node._control import MAX_CONNECTIONS as MAX_CONTROL_CONNECTIONS
from bfs_smr.runtime.node._control import serve_control
from bfs_smr.runtime.store import Store, StoreError, params_from_value
from bfs_smr.runtime.store._datadir import DataDir, parse_hex_id, parse_hostport

__all__ = ["Node"]

T = TypeVar("T")

CHANNEL_FRAME = 0x01
NODE_FRAME = 0x02
#: Channel frames of one read handled before their effects are carried out (one fsync).
#: Measured with ``bfs-smr bench``: 8 beat 2, 4, 16 and "the whole read" at window 16.
FLUSH_EVERY = 8
#: Most copies one ``channel pay --count`` / ``send --count`` puts in one update.
MAX_BATCH = 10_000
#: Seconds between looks at every unfinished channel on L1, events or not (a safety net:
#: events and the policy's deadlines drive the looks in between).
L1_SWEEP_EVERY = 30.0
#: Longest wait before the L1 is tried again after failures (the poll interval doubles up
#: to it): short, since a refute must land inside a challenge window.
L1_MAX_BACKOFF = 2.0
#: The longest challenge window a node accepts in a channel a peer opens, unless told
#: otherwise: a longer one would let the opener lock this node's deposit for that long.
MAX_WINDOW = 30 * 86_400
#: The apps a node runs in channels others open, unless told otherwise: in a payments
#: channel that it deposits nothing into, a node can only be paid.
ACCEPT_APPS = frozenset({"payments"})
#: Links from strangers (peers that hold no channel with this node, and that it never
#: dialled) kept at once, unless told otherwise; a new one evicts the oldest. Identities
#: cost nothing to make: without a bound, anyone could hold the node's sockets with links
#: that never carry a channel. Peers with channels are not counted.
MAX_STRANGER_LINKS = 64
#: Seconds a stranger's link may stay up without a channel opened on it.
STRANGER_IDLE = 60.0
#: Channels others opened with this node that are not on L1 yet, at most: each is a store
#: row and a watch that anyone can make for free; beyond it, a new open is refused.
MAX_UNFUNDED_INBOUND = 64

_log = get_logger("bfs_smr.node")


#: Marks, among a link's distrusted channel ids, that a message for a channel the peer is
#: not in was already logged.
_FOREIGN = b""


class _Accepted(Exception):
    """An open this node took already: answer it as accepted again."""


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
        # The caller may have stopped waiting (its timeout passed): a failure that comes
        # later is still reported (the command's own CommandFailed, the shutdown), so it
        # must not also end up in the log as "Future exception was never retrieved".
        future.add_done_callback(_retrieve)

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
    close_asked: bool = False  # the owner asked for a cooperative close
    unilateral_asked: bool = False  # the owner asked for a unilateral close
    finalized_at: float | None = None
    forced_tried: int = -1  # the newest seq of a peer's forced move looked at
    # One look-and-act on L1 at a time per channel; failures in a row, and when to retry.
    l1_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    l1_failures: int = 0
    l1_retry_at: float = 0.0
    l1_read_error: str | None = None  # the last read of a channel never seen on L1 failed

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
        window: the challenge window of the channels this node opens, and the least it
            accepts (default: the L1's).
        max_window: the longest challenge window it accepts in a channel a peer opens.
        max_inbound_deposit: the most it deposits into a channel a peer opens.
        accept_apps: the apps it runs in channels peers open.
        max_control_connections: control connections served at once (see
            :func:`._control.serve_control`).
        max_stranger_links: links kept at once from peers without a channel with this
            node (see :data:`MAX_STRANGER_LINKS`).

    Raises:
        LocalError: a bad option (an unknown app, a limit out of range).
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
        max_window: int = MAX_WINDOW,
        max_inbound_deposit: int = 0,
        accept_apps: Iterable[str] = ACCEPT_APPS,
        max_control_connections: int = MAX_CONTROL_CONNECTIONS,
        max_stranger_links: int = MAX_STRANGER_LINKS,
    ) -> None:
        self.dir = DataDir(data_dir)
        self.listen = parse_hostport(listen)
        self.l1_spec = l1
        self.allow = allow
        self.poll_interval = poll_interval
        self.max_per_peer = max_channels_per_peer
        self.limits = ChannelLimits(max_in_flight, max_batch, max_queue)
        self.window = window
        # The inbound-channel policy: what a peer may ask of this node (_accept_open).
        if window is not None and window > max_window:
            raise LocalError(f"--window {window} is over --max-window {max_window}")
        if max_inbound_deposit < 0:
            raise LocalError("--max-inbound-deposit must not be negative")
        self.max_window = max_window
        self.max_inbound_deposit = max_inbound_deposit
        self.accept_apps = frozenset(accept_apps)
        for name in self.accept_apps:
            load_app(name)  # an unknown app is a typo: say so now, not at the first open
        if max_control_connections < 1:
            raise LocalError("--max-control-connections must be at least 1")
        self.max_control_connections = max_control_connections
        if max_stranger_links < 1:
            raise LocalError("--max-stranger-links must be at least 1")
        self.max_stranger_links = max_stranger_links
        # Strangers' links, oldest first, each with the timer that ends it if still idle.
        self._strangers: dict[transport.Link, asyncio.TimerHandle] = {}
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
        self.l1: L1Connection
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
        self.l1 = await self._l1(
            connect_l1, self.l1_spec, self.signer, self.dir.l1_key, self.window
        )
        # Channel updates are signed with the L1's scheme: the identity on a local L1,
        # the secp256k1 key on the EVM. Its public key is this node's channel account.
        self.chan_signer = self.l1.signer
        self.account = self.chan_signer.public_key
        if self.l1.window > self.max_window:
            raise LocalError(
                f"the challenge window of this node's channels ({self.l1.window} s, the "
                f"L1's or --window) is over --max-window ({self.max_window} s)"
            )
        # Never a new store here: ``init`` made it, and a missing or empty one is a loss.
        self.store = Store(self.dir.path, create=False)
        self._addresses.update(
            (peer, address) for peer, address in self.store.peer_addresses().items()
        )
        for cid in self.store.channel_ids():
            self._load(cid)
        host, port = self.listen
        try:
            server = await transport.serve(
                host, port, self.signer, self._on_incoming, allow=self._allowed, on_refused=_refused
            )
        except OSError as exc:
            self.store.close()
            raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = server.sockets[0].getsockname()[1]
        control = await serve_control(
            self.dir.secret(), self._control, max_connections=self.max_control_connections
        )
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
        self._spawn(self._watch(), guards_funds=True)
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

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, guards_funds: bool = False) -> None:
        """Run ``coro`` in the background. If a task that ``guards_funds`` (the L1 watch,
        L1 actions) fails, the node stops: running on without it would take payments it
        can no longer defend on L1."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, guards_funds=guards_funds))

    def _task_done(self, task: asyncio.Task[Any], *, guards_funds: bool = False) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            _log.error("background task failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, StoreError):
                self.stop()  # the store cannot be written: stop rather than act on a guess
            elif guards_funds:
                _log.error(
                    "the L1 guard cannot go on: stopping",
                    reason=f"{type(exc).__name__}: {exc}",
                )
                self.stop()

    async def _l1(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._l1_pool, fn, *args)

    def _load(self, cid: bytes) -> _Chan:
        params = self.store.params(cid)
        app = load_app(params.app, params.app_version)
        self.l1.adapter.track(params)
        chan = self.store.load(
            cid, app, self.l1.adapter.format, self.chan_signer, limits=self.limits
        )
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
        known = self._known_peers()
        if link.peer_id not in known:
            self._admit_stranger(link, known)
        self._attach(link, dialed_by=link.peer_id)

    def _known_peers(self) -> set[bytes]:
        """Peers this node dials, or shares a channel with that is on L1: a stranger can
        make a channel here for free, but not fund it on L1."""
        known = {c.peer for c in self.chans.values() if c.l1_status is not None}
        known.update(self._addresses)
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
            # Its callers may all have given up (a timeout): the transport logs a failure.
            pending.add_done_callback(_retrieve)
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
            msg = nodemsg.parse_node_message(data)
        except CodecError as exc:
            raise _Misbehaviour(f"malformed node message: {exc.reason}") from None
        if type(msg) is nodemsg.Account:
            same_l1 = msg.domain == self._domain
            if same_l1 and len(msg.key) != self.chan_signer.scheme.public_key_size:
                raise _Misbehaviour("an account of the wrong size for this L1")
            account = msg.key if same_l1 else None
            self._peer_accounts[link.peer_id] = account
            for waiter in self._account_waiters.pop(link.peer_id, []):
                if not waiter.done():
                    waiter.set_result(account)
        elif type(msg) is nodemsg.Open:
            self._spawn(self._accept_open(link, msg.params))
        else:
            assert type(msg) is nodemsg.OpenReply
            fut = self._open_replies.pop(msg.channel_id, None)
            if fut is None:
                raise _Misbehaviour("an open reply nobody asked for")
            if not fut.done():
                fut.set_result(msg.reason)

    async def _accept_open(self, link: transport.Link, value: Any) -> None:
        cid = b""
        try:
            try:
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
            if self._opened_by(cid, link.peer_id):
                raise _Accepted  # a repeated open (its answer was lost with a link)
            self._check_policy(link.peer_id, params)
            self._check_room(link.peer_id, cid)
            self._check_app(params, load_app(params.app, params.app_version))
            due = params.deposits[1]
            if due:
                have = await self._l1(self.l1.adapter.balance)
                # Opens handled meanwhile count: check the room again, and what this
                # node has promised to channels it has not funded yet.
                if self._opened_by(cid, link.peer_id):
                    raise _Accepted
                self._check_room(link.peer_id, cid)
                promised = self._promised_deposits()
                if have - promised < due:
                    raise LocalError(
                        f"this node cannot deposit {due} (it holds {have} on L1, "
                        f"{promised} of it promised to channels not yet funded)"
                    )
            self.store.add_channel(params)
            self.store.set_peer(cid, link.peer_id)
            self._load(cid)
            reason = None
            _log.info("channel accepted", channel=cid.hex()[:16], peer=link.peer_id.hex()[:16])
        except _Accepted:
            reason = None
        except (LocalError, CommandRejected, ValueError, TypeError) as exc:
            reason = str(exc)
            _log.info("channel refused", peer=link.peer_id.hex()[:16], reason=reason)
        if not link.closed.done():
            link.send(bytes([NODE_FRAME]) + encode(["open-reply", cid, reason]))

    def _opened_by(self, cid: bytes, peer: bytes) -> bool:
        """Whether ``peer`` opened this channel here already (same id, same parameters)."""
        c = self.chans.get(cid)
        return c is not None and c.peer == peer and c.chan.index == 1

    def _check_room(self, peer: bytes, cid: bytes) -> None:
        """Refuse a channel a peer opens that this node has no room for: one it holds
        already, one over ``--max-channels-per-peer``, or one over
        :data:`MAX_UNFUNDED_INBOUND` channels opened by others and not yet on L1 (each
        costs a store row and a watch for free: identities cost nothing to make)."""
        if cid in self.chans:
            raise LocalError("this channel exists already")
        if sum(1 for c in self.chans.values() if c.peer == peer) >= self.max_per_peer:
            raise LocalError(f"this node holds {self.max_per_peer} channels with you already")
        unfunded = sum(1 for c in self.chans.values() if _inbound_not_on_l1(c))
        if unfunded >= MAX_UNFUNDED_INBOUND:
            raise LocalError(
                f"this node holds {unfunded} channels others opened that are not on L1 yet; "
                "open yours on L1 first or try later"
            )

    def _promised_deposits(self) -> int:
        """What this node still owes channels others opened: their deposits not yet made
        (an upper bound: a channel in funding may have this node's deposit already)."""
        return sum(
            c.chan.params.deposits[1]
            for c in self.chans.values()
            if c.chan.index == 1
            and c.payouts is None
            and c.l1_status in (None, L1ChannelStatus.FUNDING)
        )

    def _check_policy(self, peer: bytes, params: ChannelParams) -> None:
        """The operator's inbound-channel policy: a channel a peer opens is accepted only
        from allowed peers, for accepted apps, within the window and deposit limits.

        Raises:
            LocalError: the reason, worded for the opener (who sees it after "the peer
                refused the channel: "), naming the option that sets the limit.
        """
        if self.allow is not None and peer not in self.allow:
            raise LocalError("it takes channels only from the peers it lists (--allow-peer)")
        if params.app not in self.accept_apps:
            accepted = ", ".join(sorted(self.accept_apps)) or "none"
            raise LocalError(
                f"it does not run {params.app[:40]!r} channels others open (it accepts: "
                f"{accepted[:60]}; --accept-app)"
            )
        window = params.challenge_window
        if window < self.l1.window:
            raise LocalError(f"the challenge window must be at least {self.l1.window} s")
        if window > self.max_window:
            raise LocalError(
                f"the challenge window of {window} s is over its limit of {self.max_window} s "
                "(--max-window)"
            )
        if params.deposits[1] > self.max_inbound_deposit:
            raise LocalError(
                f"it deposits at most {self.max_inbound_deposit} into a channel another node "
                f"opens, not {params.deposits[1]} (--max-inbound-deposit)"
            )

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
                self._react_soon(c)  # the opener opens it on L1
            elif kind is ChannelFinalized:
                c.finalized_at = time.monotonic()
                if c.close_asked:
                    self._react_soon(c)  # submit it now
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
    #
    # What to do on L1 is decided by the pure policy (bfs_smr._reaction.react), always from
    # the channel's L1 view read fresh just before; this section reads, asks and carries
    # out. Every L1 failure is an L1Error (adapters guarantee it): logged, and the channel
    # is looked at again after a backoff. Anything else is a bug: the task fails and
    # _task_done stops the node rather than leave it running without its L1 guard.

    async def _watch(self) -> None:
        failures = 0
        sweep_at = 0.0  # the first pass looks at every channel
        while True:
            try:
                events = await self._l1(self.l1.adapter.events, self._since)
                touched: set[bytes] = set()
                if time.monotonic() >= sweep_at:
                    touched.update(cid for cid, c in self.chans.items() if c.payouts is None)
                    sweep_at = time.monotonic() + L1_SWEEP_EVERY
                for event in events:
                    self._since = event.index + 1
                    if event.channel_id in self.chans:
                        touched.add(event.channel_id)
                now = await self._l1(self.l1.adapter.now)
                touched.update(cid for cid, c in self.chans.items() if _needs_l1_look(c, now))
                for cid in touched:
                    with contextlib.suppress(L1Error):  # logged; looked at again after a backoff
                        await self._react(self.chans[cid])
                if failures:
                    _log.info("L1 reachable again", after_failures=failures)
                failures = 0
            except L1Error as exc:
                failures += 1
                _log.warning("L1 unavailable: retrying", error=str(exc), failures=failures)
            await asyncio.sleep(_backoff(self.poll_interval, failures))

    def _react_soon(self, c: _Chan) -> None:
        """Look at ``c`` on L1 and act, in the background (a failure is retried)."""

        async def react() -> None:
            with contextlib.suppress(L1Error):  # logged; looked at again after a backoff
                await self._react(c)

        self._spawn(react(), guards_funds=True)

    async def _react(self, c: _Chan, *, rounds: int = 3) -> L1ChannelInfo | None:
        """Read ``c`` on L1, ask the policy what to do, do it; up to ``rounds`` times while
        there is something to do. Returns the last view read (None: not on L1).

        Raises:
            L1Error: the L1 could not be read or refused an action (logged; the channel
                is looked at again after a backoff).
        """
        async with c.l1_lock:
            acting = False
            try:
                for _ in range(rounds):
                    info = await self._l1_view(c)
                    now = await self._l1(self.l1.adapter.now)
                    intent = Intent(close=c.close_asked, unilateral=c.unilateral_asked)
                    actions = react(self._facts(c), info, now, intent)
                    if not actions:
                        break
                    acting = True
                    for action in actions:
                        await self._l1_do(c, action, info)
                    acting = False
            except L1Error as exc:
                if not acting:  # (a failed action is logged with its name)
                    _log.warning("L1 read failed", channel=c.cid.hex()[:16], reason=str(exc))
                c.l1_failures += 1
                c.l1_retry_at = time.monotonic() + _backoff(self.poll_interval, c.l1_failures)
                raise
            c.l1_failures = 0
            return info

    async def _l1_view(self, c: _Chan) -> L1ChannelInfo | None:
        """The channel on L1, read now, noted in ``c``; None if the L1 does not know it."""
        try:
            info = await self._l1(self.l1.adapter.channel, c.cid)
        except L1Error as exc:
            if c.l1_status is not None:
                raise  # it was on L1: this is the L1 failing, not a channel not there
            c.l1_read_error = str(exc)
            return None  # (an L1 failure here makes the policy's action fail too)
        c.l1_read_error = None
        c.l1_status, c.l1_deadline = info.status, info.deadline
        c.l1_registered = info.registered_seq
        status = info.status
        if status is L1ChannelStatus.OPEN:
            _resolve(c.opened, None)
        elif status in (L1ChannelStatus.SETTLED, L1ChannelStatus.CANCELLED):
            c.payouts = info.payouts or (0, 0)
            _resolve(c.settled, c.payouts)
            _resolve(c.opened, None)
            _fail_all(c, f"the channel is {status.value} on L1")
        return info

    def _facts(self, c: _Chan) -> ChannelFacts:
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

    async def _l1_do(self, c: _Chan, action: L1Action, info: L1ChannelInfo | None) -> None:
        """Carry out one action of the policy. Raises L1Error if the L1 refuses it."""
        adapter = self.l1.adapter
        name = _ACTION_NAMES[type(action)]
        cid = c.cid.hex()[:16]
        try:
            if isinstance(action, Open):
                await self._l1(adapter.open, c.chan.params)
            elif isinstance(action, Deposit):
                await self._l1(adapter.deposit, c.cid, action.amount)
            elif isinstance(action, CloseCooperatively):
                await self._l1(adapter.cooperative_close, action.update)
            elif isinstance(action, CloseUnilaterally):
                await self._l1(adapter.unilateral_close, action.update)
            elif isinstance(action, Refute):
                registered = None if info is None else info.registered_seq
                _log.warning(
                    "stale close on L1: refuting",
                    channel=cid,
                    registered_seq=registered,
                    our_seq=action.update.seq,
                )
                await self._l1(adapter.refute, action.update)
            elif isinstance(action, Settle):
                await self._l1(adapter.settle, c.cid)
            elif isinstance(action, Cancel):
                await self._l1(adapter.cancel, c.cid)
            elif isinstance(action, ForceMove):
                try:
                    await self._force(c, None)
                except LocalError as exc:  # the channel cannot build the move now
                    raise L1Error(f"cannot force the move: {exc}") from None
            else:
                assert isinstance(action, AdoptForced)
                self._adopt_forced(c, action.update)
                return
        except L1Error as exc:
            _log.warning(f"L1 {name} failed", channel=cid, reason=str(exc))
            raise
        _log.info(f"L1 {name}", channel=cid)

    def _adopt_forced(self, c: _Chan, forced: SignedUpdate) -> None:
        """Take the peer's move forced on L1 as the position to answer; each one once."""
        chan = c.chan
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
            return
        to_move = chan.app.to_move(chan.force_base[1])
        _log.info(
            "adopted a move forced on L1",
            channel=c.cid.hex()[:16],
            seq=forced.seq,
            to_move=None if to_move is None else "this node" if to_move == chan.index else "peer",
        )

    async def _force(self, c: _Chan, command: Any) -> tuple[int, int]:
        """Force a move on L1: the one this node already signed (``command`` None), or a new
        one. Returns the forced seq and the new deadline.

        Raises:
            L1Error: the L1 refused the move (or could not be reached).
        """
        if not self.l1.adapter.supports_force_move:
            raise LocalError("this L1 does not support force moves")
        pending = c.chan.pending_force
        if command is None and pending is not None:
            update, base_state = pending  # signed already: posted again
        else:
            _, base_state = c.chan.force_base
            update = c.chan.force_move(command)
            self._flush(c)  # a new signature is durable before it goes to L1
        state = c.chan.app.encode_state(base_state)
        _log.info("forcing a move on L1", channel=c.cid.hex()[:16], seq=update.seq)
        deadline = await self._l1(self.l1.adapter.force_move, state, update)
        return update.seq, deadline

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
        refused = await self._ask_open(peer, link, params, reply, timeout)
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

    async def _ask_open(
        self,
        peer: bytes,
        link: transport.Link,
        params: ChannelParams,
        reply: asyncio.Future[str | None],
        timeout: float,
    ) -> str | None:
        """Send the open and wait for the peer's answer. A link replaced or cut before the
        answer came (both nodes dialled at once, a restart) loses it: the open goes again
        on the next link, and the peer answers a repeated open of a channel it took as it
        did the first time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frame = bytes([NODE_FRAME]) + encode(["open", params.to_value()])
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
            link = await asyncio.wait_for(self._link_to(peer), max(0.0, deadline - loop.time()))

    async def op_send(self, args: dict[str, Any]) -> dict[str, Any]:
        c = self._chan_arg(args)
        command = args.get("command")
        check_plain(command)
        if c.l1_status is not L1ChannelStatus.OPEN:
            await self._l1_view(c)  # decide from the L1 now, not from an older look
        if c.l1_status is L1ChannelStatus.CLOSING and c.chan.app.to_move(c.chan.state) is not None:
            async with c.l1_lock:  # the dispute goes on, on L1
                seq, deadline = await self._force(c, command)
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
            if unilateral:
                c.unilateral_asked = True
            else:
                c.close_asked = True
            # What to do depends on the channel's L1 status read now, never on the status
            # noted at the last look (stale after a restart, or right after an open).
            try:
                info = await self._react(c)
            except L1Error as exc:
                raise L1Error(f"L1 refused or unreachable: {exc}; the node retries") from None
            self._check_close_underway(c, info, unilateral)
            late = f"not paid out within {timeout:g} s (L1: {c.l1_text}"
            if c.l1_status is L1ChannelStatus.CLOSING and c.l1_deadline is not None:
                late += f", window ends at {c.l1_deadline}"
            await _wait(done, timeout, late + "); the node keeps at it")
        assert c.payouts is not None
        return {"channel": c.cid.hex(), "payouts": self._by_node(c, c.payouts)}

    def _check_close_underway(self, c: _Chan, info: L1ChannelInfo | None, unilateral: bool) -> None:
        """After the L1 reaction to a close request: start the off-chain part of a
        cooperative close, or raise if the close cannot go on."""
        if info is None:
            why = f" ({c.l1_read_error})" if c.l1_read_error else ""
            raise LocalError(f"the channel is not on L1{why}: nothing is locked to close")
        if info.status is not L1ChannelStatus.OPEN or c.payouts is not None:
            return  # cancelled, closing (a window runs), or paid out
        if unilateral:
            # The policy closed with the newest update unless there is none.
            raise LocalError("nothing is doubly signed yet: there is nothing to close")
        if c.chan.phase not in (Phase.CLOSED, Phase.CLOSING):
            c.chan.close()
            self._flush(c)

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

_OPS = {name[3:]: getattr(Node, name) for name in dir(Node) if name.startswith("op_")}


def _needs_l1_look(c: _Chan, now: int) -> bool:
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


def _backoff(poll: float, failures: int) -> float:
    """Seconds to wait before trying the L1 again after ``failures`` in a row."""
    if not failures:
        return poll
    delay = min(L1_MAX_BACKOFF, poll * 2.0 ** min(failures, 16))
    return delay * (0.75 + random.random() / 2)


def _inbound_not_on_l1(c: _Chan) -> bool:
    """A channel another node opened with this one that L1 has not seen yet."""
    return c.chan.index == 1 and c.payouts is None and c.l1_status is None


async def _wait(fut: asyncio.Future[T], timeout: float, message: str) -> T:
    """Wait for ``fut`` (left running on timeout), or raise ``LocalError(message)``."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise LocalError(message) from None


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved; whoever awaits it still gets it


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
