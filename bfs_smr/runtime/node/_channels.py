"""What a node keeps about each channel beside the sans-IO :class:`bfs_smr.Channel`.

:class:`NodeChannel` is the record every part of the node shares: the channel itself, its
peer, what the node last read of it on L1, who waits for what, and its bound logger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bfs_smr._app import StateMachine
from bfs_smr._channel import Channel
from bfs_smr._crypto import Signer
from bfs_smr._errors import LocalError
from bfs_smr._l1 import L1ChannelStatus
from bfs_smr._limits import ChannelLimits
from bfs_smr._update import ChannelParams, SignedUpdate
from bfs_smr.plugins import L1Connection, load_app
from bfs_smr.runtime._logging import Logger, get_logger
from bfs_smr.runtime.store import Store
from bfs_smr.runtime.tower._seal import watch_commitment_for, watch_secret

__all__ = [
    "ChannelLoader",
    "NodeChannel",
    "Waiter",
    "check_app",
    "fail_all",
    "resolve",
    "retrieve",
    "wait",
]

T = TypeVar("T")


class Waiter:
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
        future.add_done_callback(retrieve)

    def committed(self, seq: int) -> None:
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(seq)

    def failed(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False, slots=True)
class NodeChannel:
    """One channel as the node holds it. Its containers are made when first needed and
    dropped once empty (:meth:`wait_opened`, :meth:`l1_turn`, ``waiters``): a node holds
    thousands of idle channels (docs/performance.md, memory per idle channel)."""

    chan: Channel
    key: int
    peer: bytes
    l1_status: L1ChannelStatus | None = None
    l1_deadline: int | None = None
    l1_registered: int | None = None
    l1_forced: SignedUpdate | None = None  # the update a force move registered on L1
    payouts: tuple[int, int] | None = None
    #: Who waits for the channel's own commands, by ref (None: nobody).
    waiters: dict[int, Waiter] | None = None
    #: Who waits for it to open, and to be paid out, on L1 (None: nobody).
    opened: list[asyncio.Future[None]] | None = None
    settled: list[asyncio.Future[tuple[int, int] | None]] | None = None
    close_asked: bool = False  # the owner asked for a cooperative close
    unilateral_asked: bool = False  # the owner asked for a unilateral close
    finalized_at: float | None = None
    forced_tried: int = -1  # the newest seq of a peer's forced move looked at
    # One look-and-act on L1 at a time per channel (see l1_turn); failures in a row, and
    # when to retry.
    _l1_lock: asyncio.Lock | None = None
    _l1_users: int = 0
    l1_failures: int = 0
    l1_retry_at: float = 0.0
    l1_read_error: str | None = None  # the last read of a channel never seen on L1 failed
    # The channel's watch secret (None: its parameters commit to none): a unilateral
    # close reveals it, and towers file the channel's entries under it.
    watch: bytes | None = None
    told_seq: int = -1  # the newest committed seq the towers and events were told of

    @asynccontextmanager
    async def l1_turn(self) -> AsyncIterator[None]:
        """Hold the channel's turn on L1: one look-and-act at a time. The lock exists
        only while someone holds or waits for it."""
        lock = self._l1_lock
        if lock is None:
            lock = self._l1_lock = asyncio.Lock()
        self._l1_users += 1
        try:
            async with lock:
                yield
        finally:
            self._l1_users -= 1
            if self._l1_users == 0:
                self._l1_lock = None

    def add_waiter(self, ref: int, waiter: Waiter) -> None:
        if self.waiters is None:
            self.waiters = {}
        self.waiters[ref] = waiter

    def pop_waiter(self, ref: int) -> Waiter | None:
        waiters = self.waiters
        if waiters is None:
            return None
        waiter = waiters.pop(ref, None)
        if not waiters:
            self.waiters = None
        return waiter

    def wait_opened(self, fut: asyncio.Future[None]) -> None:
        """``fut`` gets None once the channel is open on L1."""
        if self.opened is None:
            self.opened = []
        self.opened.append(fut)

    def wait_settled(self, fut: asyncio.Future[tuple[int, int] | None]) -> None:
        """``fut`` gets the payouts once the channel is paid out on L1."""
        if self.settled is None:
            self.settled = []
        self.settled.append(fut)

    def stop_waiting_settled(self, fut: asyncio.Future[tuple[int, int] | None]) -> None:
        if self.settled is not None:
            self.settled.remove(fut)
            if not self.settled:
                self.settled = None

    def resolve_opened(self) -> None:
        if self.opened is not None:
            resolve(self.opened, None)
            self.opened = None

    def resolve_settled(self, payouts: tuple[int, int] | None) -> None:
        if self.settled is not None:
            resolve(self.settled, payouts)
            self.settled = None

    @property
    def cid(self) -> bytes:
        return self.chan.channel_id

    @property
    def log(self) -> Logger:
        """A logger bound to this channel and its peer (made when a line is logged:
        holding one per idle channel cost about 1.5 KB each)."""
        return get_logger("bfs_smr.node", channel=self.chan.channel_id, peer=self.peer)

    @property
    def l1_text(self) -> str:
        return self.l1_status.value if self.l1_status else "none"


class ChannelLoader:
    """Loads a channel from the store into the node's table of channels.

    Args:
        chans: the node's channels by id (each one loaded is added).
        store: the node's store.
        l1: the node's L1 (its adapter tracks every channel loaded).
        signer: the key channel updates are signed with.
        limits: each channel's limits.
        identity: the node's identity, from which each channel's watch secret is derived
            with the peer's (None: channels are loaded without one).
    """

    def __init__(
        self,
        chans: dict[bytes, NodeChannel],
        store: Store,
        l1: L1Connection,
        signer: Signer,
        limits: ChannelLimits,
        *,
        identity: Signer | None = None,
    ) -> None:
        self.chans = chans
        self.store = store
        self.l1 = l1
        self.signer = signer
        self.limits = limits
        self.identity = identity
        #: Told of each channel loaded from now on (the node's event hub: a new channel).
        self.loaded: Callable[[NodeChannel], None] | None = None
        # One instance of each app for all channels (apps are pure: docs/writing-an-app.md).
        self._apps: dict[tuple[str, int | None], StateMachine[Any]] = {}

    def __call__(self, cid: bytes) -> NodeChannel:
        """Load channel ``cid``.

        Raises:
            LocalError: it is on another L1 than the node's.
            StoreError: its rows are damaged.
        """
        params = self.store.params(cid)
        if params.l1 != self.l1.adapter.format.domain:
            # Its signatures are in another L1's domain: not damage, the wrong --l1.
            raise LocalError(
                f"channel {cid.hex()} is on another L1 than this node's; start the "
                "node with the --l1 its channels were opened on"
            )
        app = self.app(params.app, params.app_version)
        self.l1.adapter.track(params)
        chan = self.store.load(cid, app, self.l1.adapter.format, self.signer, limits=self.limits)
        peer = params.participants[1 - chan.index]
        recorded = self.store.peer_of(cid)
        if recorded is not None and recorded != peer:
            peer = recorded  # (the peer's node id is not its account on every L1)
        c = NodeChannel(chan=chan, key=self.store.key_of(cid), peer=peer)
        if params.watch and self.identity is not None:
            c.watch = watch_secret(self.identity, peer, params)
            if self.l1.adapter.format.watch_commitment(c.watch) != params.watch:
                c.watch = None  # (a store from another node: it could never close alone)
                c.log.error("this node cannot derive the channel's watch secret")
        self.chans[c.cid] = c  # (the id object the channel holds: one, not two)
        if self.loaded is not None:
            self.loaded(c)
        return c

    def app(self, name: str, version: int | None = None) -> StateMachine[Any]:
        """:func:`~bfs_smr.plugins.load_app`, made once for each name and version: apps
        are pure, so one instance serves every channel (and looking up the installed
        plug-ins again for each channel cost time and memory)."""
        app = self._apps.get((name, version))
        if app is None:
            app = self._apps[name, version] = load_app(name, version)
        return app

    def watch_commitment(self, peer: bytes, params: ChannelParams) -> bytes:
        """What ``params.watch`` is for a channel this node holds with ``peer``."""
        assert self.identity is not None, "a node loads channels with its identity"
        return watch_commitment_for(self.l1.adapter.format, self.identity, peer, params)


def check_app(params: ChannelParams, app: Any, l1: L1Connection, signer: Signer) -> None:
    """The app accepts these parameters (options, deposits), or raise."""
    Channel(params, app, l1.adapter.format, signer)
    app.initial_state(params)


async def wait(fut: asyncio.Future[T], timeout: float, message: str) -> T:
    """Wait for ``fut`` (left running on timeout), or raise ``LocalError(message)``."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise LocalError(message) from None


def retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved; whoever awaits it still gets it


def resolve(futures: list[asyncio.Future[Any]], value: Any) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(value)
    futures.clear()


def fail_all(c: NodeChannel, reason: str) -> None:
    waiters, c.waiters = c.waiters, None
    for waiter in (waiters or {}).values():
        waiter.failed(LocalError(reason))
