"""The watchtower daemon: it keeps nodes' sealed entries, and acts on L1 once a close
reveals one.

A tower holds, for each node and channel, one fixed-size sealed entry (:mod:`._seal`) that
it cannot read. It watches the L1's events; a unilateral close of a channel that commits to
a watch secret publishes that secret, and the tower then reads every entry filed under
the channel's locator, keeps the newest doubly-signed update among them, and does on L1
what :func:`bfs_smr.react` says a party holding that update does: refute a stale close,
and settle when the window ends. It signs nothing, so it can do nothing a party's own node
would not do (docs/watchtower.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bfs_smr._codec import decode, encode
from bfs_smr._errors import BfsSmrError, CodecError, L1Error, LocalError
from bfs_smr._l1 import L1ChannelStatus
from bfs_smr._reaction import ChannelFacts, Intent, Refute, Settle, react
from bfs_smr._update import ChannelParams, SignedUpdate
from bfs_smr.plugins import L1Connection, connect_l1
from bfs_smr.runtime import transport
from bfs_smr.runtime._l1calls import L1Thread, backoff
from bfs_smr.runtime._logging import get_logger
from bfs_smr.runtime.store._datadir import parse_hostport
from bfs_smr.runtime.tower._dir import TowerDir
from bfs_smr.runtime.tower._protocol import (
    MAX_SLOT,
    MIN_SLOT,
    VERSION,
    Ack,
    Put,
    Query,
    Refused,
    Seqs,
    TowerProtocolError,
    Welcome,
    parse_from_node,
)
from bfs_smr.runtime.tower._seal import SLOT_SIZE, entry_size, locator, unseal
from bfs_smr.runtime.tower._store import Case, TowerStore

__all__ = ["MAX_ENTRIES_PER_CLIENT", "Tower", "TowerConfig"]

_log = get_logger("bfs_smr.tower")

#: Entries one node may keep at a tower, unless told otherwise.
MAX_ENTRIES_PER_CLIENT = 100_000
#: Entries the tower keeps for all nodes together, unless told otherwise: node ids cost
#: nothing, so the per-node quota alone does not bound its disk (about 21 GB at the default
#: slot).
MAX_ENTRIES = 10_000_000
#: Links kept at once; a node has one (a new one from the same node replaces it).
MAX_LINKS = 1024
#: Refused frames a link may send before the tower drops it.
MAX_REFUSALS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class TowerConfig:
    """How a tower runs.

    Attributes:
        listen: ``HOST:PORT`` to accept nodes on (port 0: any free port).
        l1: the L1 spec, as given to ``--l1``.
        allow: if given, only these node ids may keep entries here.
        slot: the plaintext bytes of every entry (the same for all; see :mod:`._seal`).
        max_entries_per_client: entries one node may keep here.
        max_entries: entries all nodes together may keep here.
        poll_interval: seconds between looks at the L1.
        transport: the links' limits.
    """

    listen: str
    l1: str
    allow: frozenset[bytes] | None = None
    slot: int = SLOT_SIZE
    max_entries_per_client: int = MAX_ENTRIES_PER_CLIENT
    max_entries: int = MAX_ENTRIES
    poll_interval: float = 0.2
    transport: transport.TransportConfig = field(default_factory=transport.TransportConfig)

    def __post_init__(self) -> None:
        parse_hostport(self.listen)
        if type(self.slot) is not int or not MIN_SLOT <= self.slot <= MAX_SLOT:
            raise LocalError(f"--slot must be {MIN_SLOT} to {MAX_SLOT:,} bytes")
        if self.max_entries_per_client < 1:
            raise LocalError("--max-entries-per-client must be at least 1")
        if self.max_entries < 1:
            raise LocalError("--max-entries must be at least 1")

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_hostport(self.listen)


@dataclass(eq=False)
class _Watched:
    """A channel the tower acts for: its case, decoded, and when to look again."""

    case: Case
    params: ChannelParams
    update: SignedUpdate
    failures: int = 0
    retry_at: float = 0.0
    closed_seen: float = field(default_factory=time.monotonic)


class Tower:
    """A watchtower.

    Args:
        data_dir: made with ``bfs-smr tower init``.
        config: where it listens, its L1, its limits.

    Attributes (once :meth:`run` has started it):
        tower_id: its identity on links (what nodes give as ``--tower ID@HOST:PORT``).
        port: the port it accepts nodes on.
    """

    def __init__(self, data_dir: Path | str, config: TowerConfig) -> None:
        self.config = config
        self.dir = TowerDir(data_dir)
        self.identity = self.dir.identity()
        self.tower_id = self.identity.public_key
        self.port = 0
        self.entry_size = entry_size(config.slot)
        self.links: dict[bytes, transport.Link] = {}
        self.refusals: dict[str, int] = {}  # reason → count, for operators and tests
        self.watched: dict[bytes, _Watched] = {}
        self._refused: dict[bytes, int] = {}  # refused frames on each node's current link
        self._counts: dict[bytes, int] = {}  # entries each node keeps here
        self._counts_loaded = False
        self._stopping = asyncio.Event()
        self._thread = L1Thread()
        self._since = 0
        self._total = 0  # entries held, for all nodes (kept in step with the store)
        self.store: TowerStore
        self.l1: L1Connection

    def stop(self) -> None:
        """Ask the tower to shut down (safe from a signal handler)."""
        self._stopping.set()

    async def run(self, ready: Callable[[Tower], None] | None = None) -> None:
        """Run until :meth:`stop`."""
        self.dir.lock()
        try:
            await self._run(ready)
        finally:
            self.dir.unlock()

    async def _run(self, ready: Callable[[Tower], None] | None) -> None:
        config = self.config
        self.l1 = await self._thread.call(connect_l1, config.l1, self.identity, self.dir.l1_key)
        self.store = TowerStore(self.dir.path)
        self._since = self.store.since()
        self._total = self.store.total()
        for case in self.store.cases():
            self._watch_case(case)
        host, port = config.listen_address
        allow = None if config.allow is None else config.allow.__contains__
        try:
            server = await transport.serve(
                host, port, self.identity, self._on_link, allow=allow, config=config.transport
            )
        except OSError as exc:
            self.store.close()
            raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = server.sockets[0].getsockname()[1]
        _log.info(
            "tower started",
            tower_id=self.tower_id.hex(),
            listen=f"{host}:{self.port}",
            l1=config.l1,
            entries=self.store.total(),
            cases=len(self.watched),
        )
        watcher = asyncio.create_task(self._watch())
        if ready is not None:
            ready(self)
        try:
            await asyncio.wait(
                [watcher, asyncio.create_task(self._stopping.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if watcher.done():
                watcher.result()  # a failure of the watcher stops the tower, loudly
        finally:
            _log.info("tower stopping")
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            server.close()
            for link in list(self.links.values()):
                link.close("the tower is stopping")
            self._thread.shutdown()
            self.store.close()
            _log.info("tower stopped")

    # -- nodes ------------------------------------------------------------------------

    def _on_link(self, link: transport.Link) -> None:
        old = self.links.pop(link.peer_id, None)
        if old is not None:
            old.close("replaced by a new link from the same node")
        if len(self.links) >= MAX_LINKS:
            link.close(f"the tower serves {MAX_LINKS} links at most")
            return
        self.links[link.peer_id] = link
        self._refused.pop(link.peer_id, None)
        link.closed.add_done_callback(lambda _f: self._forget(link))
        link.set_receiver(self._on_frames)
        link.send(Welcome(VERSION, self.config.slot).encode())

    def _forget(self, link: transport.Link) -> None:
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]

    def _refuse(self, link: transport.Link, reason: str) -> None:
        key = reason.split(":", maxsplit=1)[0][:60]
        self.refusals[key] = self.refusals.get(key, 0) + 1
        _log.info("tower refused a frame", peer=link.peer_id.hex(), reason=reason)

    def _on_frames(self, link: transport.Link, frames: list[bytes]) -> None:
        """One read's frames: their puts are made durable together (one fsync), then every
        frame is answered, in order."""
        client = link.peer_id
        replies: list[bytes | Query] = []  # a query is answered once the puts are in
        rows: list[tuple[bytes, bytes, int, bytes]] = []
        pending: dict[bytes, int] = {}  # locator → seq put in this batch
        fresh: set[bytes] = set()  # locators new for this node in this batch
        refused = 0
        for frame in frames:
            try:
                msg = parse_from_node(frame, self.entry_size)
            except TowerProtocolError as exc:
                self._refuse(link, str(exc))
                replies.append(Refused(None, str(exc)).encode())
                refused += 1
                continue
            if isinstance(msg, Query):
                replies.append(msg)
                continue
            reason = self._check_put(client, msg, pending, fresh)
            if reason is not None:
                self._refuse(link, reason)
                replies.append(Refused(msg.locator, reason).encode())
                refused += 1
                continue
            if pending.get(msg.locator, -1) < msg.seq:
                pending[msg.locator] = msg.seq
                rows.append((client, msg.locator, msg.seq, msg.entry))
            replies.append(Ack(msg.locator, msg.seq).encode())
        if rows:
            self.store.put_many(rows)  # a store failure closes the link: nothing is acked
            self._counts[client] = self._entries_of(client) + len(fresh)
            self._total += len(fresh)
            self._read_late(rows)
        link.send_many(r if isinstance(r, bytes) else self._answer(client, r) for r in replies)
        if refused:
            self._refused[client] = count = self._refused.get(client, 0) + refused
            if count > MAX_REFUSALS:
                link.close("too many refused frames")

    def _check_put(
        self, client: bytes, put: Put, pending: dict[bytes, int], fresh: set[bytes]
    ) -> str | None:
        """Why a put is refused, or None (a put of a new entry is then added to
        ``fresh``). An equal seq is taken again (a resend after a lost ack), and changes
        nothing. Its cost does not grow with the entries a node keeps: one indexed read."""
        have = pending.get(put.locator)
        if have is None:
            have = self.store.seq_of(client, put.locator)
        if have is None:
            most = self.config.max_entries_per_client
            if self._entries_of(client) + len(fresh) >= most:
                return f"quota: this tower keeps at most {most:,} entries for one node"
            if self._total + len(fresh) >= self.config.max_entries:
                return f"full: this tower keeps at most {self.config.max_entries:,} entries"
            fresh.add(put.locator)
            return None
        if put.seq < have:
            return f"older: the entry is at seq {have}; an entry never goes back"
        return None

    def _entries_of(self, client: bytes) -> int:
        """Entries ``client`` keeps here (every node's count is read once, then kept)."""
        if self._counts_loaded is False:
            self._counts.update(self.store.counts())
            self._counts_loaded = True
        return self._counts.get(client, 0)

    def _answer(self, client: bytes, query: Query) -> bytes:
        return Seqs(tuple(self.store.seq_of(client, loc) for loc in query.locators)).encode()

    def _read_late(self, rows: list[tuple[bytes, bytes, int, bytes]]) -> None:
        """Puts for a channel whose close is on L1 already: read them now (the secret is
        public), and act on a newer update at once."""
        for _client, loc, seq, entry in rows:
            for case in self.store.case_at(loc):
                w = self.watched.get(case.channel)
                if w is None or case.done or seq <= w.update.seq:
                    continue
                found = self._read(case.secret, [(b"", seq, entry)], case.channel)
                if found is not None:
                    self._keep(w, found[1])

    # -- L1 ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        failures = 0
        adapter = self.l1.adapter
        while True:
            try:
                events = await self._thread.call(adapter.events, self._since)
                cases: list[Case] = []
                for event in events:
                    if event.reveal is not None:
                        case = self._open_case(event.channel_id, event.reveal)
                        if case is not None:
                            cases.append(case)
                if events:
                    self._since = events[-1].index + 1
                    self.store.save_cases(cases, self._since)
                    for case in cases:
                        self._watch_case(case)
                for w in list(self.watched.values()):
                    if time.monotonic() >= w.retry_at:
                        await self._act(w)
                if failures:
                    _log.info("L1 reachable again", after_failures=failures)
                failures = 0
            except L1Error as exc:
                failures += 1
                _log.warning("L1 unavailable: retrying", error=str(exc), failures=failures)
            await asyncio.sleep(backoff(self.config.poll_interval, failures))

    def _read(
        self, secret: bytes, entries: list[tuple[bytes, int, bytes]], channel: bytes
    ) -> tuple[ChannelParams, SignedUpdate] | None:
        """The newest update among ``entries`` that decrypts under ``secret``, is of
        ``channel`` (the one whose close revealed ``secret``: whoever knows ``secret`` may
        file another channel committed to it, at any seq), commits to ``secret`` on this L1,
        and is doubly signed."""
        fmt = self.l1.adapter.format
        best: tuple[ChannelParams, SignedUpdate] | None = None
        for _client, seq, entry in entries:
            try:
                params, update = unseal(secret, seq, entry)
            except ValueError:
                continue  # not this channel's, or garbage: nothing to act on
            if params.channel_id != channel:
                continue  # another channel committed to the same secret: not this close's
            if params.l1 != fmt.domain or params.watch != fmt.watch_commitment(secret):
                continue
            if not update.verify(params, fmt):
                continue
            if best is None or update.seq > best[1].seq:
                best = (params, update)
        return best

    def _open_case(self, channel: bytes, secret: bytes) -> Case | None:
        loc = locator(secret)
        if any(c.channel == channel for c in self.store.case_at(loc)):
            return None  # (a close read again after a restart)
        found = self._read(secret, self.store.entries_at(loc), channel)
        if found is None:
            return None
        params, update = found
        _log.info(
            "a channel this tower holds is closing on L1",
            channel=params.channel_id.hex(),
            seq=update.seq,
        )
        return Case(
            params.channel_id,
            loc,
            secret,
            encode(params.to_value()),
            update.encoded(),
            False,
        )

    def _watch_case(self, case: Case) -> None:
        try:
            params = ChannelParams.from_value(decode(case.params))
            update = SignedUpdate.from_value(decode(case.update))
        except (CodecError, ValueError, TypeError, LocalError) as exc:
            _log.error("a case in the store is damaged", channel=case.channel.hex(), error=str(exc))
            return
        self.l1.adapter.track(params)
        self.watched[case.channel] = _Watched(case, params, update)

    def _keep(self, w: _Watched, update: SignedUpdate) -> None:
        w.update = update
        w.case.update = update.encoded()
        self.store.save_cases([w.case])
        w.retry_at = 0.0
        _log.info(
            "newer update for a closing channel", channel=w.case.channel.hex(), seq=update.seq
        )

    async def _act(self, w: _Watched) -> None:
        adapter = self.l1.adapter
        call = self._thread.call
        cid = w.case.channel
        try:
            view = await call(adapter.channel, cid)
            now = await call(adapter.now)
            if view.status in (L1ChannelStatus.SETTLED, L1ChannelStatus.CANCELLED):
                w.case.done = True
                self.store.save_cases([w.case])
                del self.watched[cid]
                _log.info("channel settled on L1", channel=cid.hex(), payouts=view.payouts)
                return
            facts = ChannelFacts(index=0, deposits=w.params.deposits, newest=w.update)
            for action in react(facts, view, now, Intent()):
                if isinstance(action, Refute):
                    await call(adapter.refute, action.update)
                    _log.warning(
                        "stale close refuted",
                        channel=cid.hex(),
                        registered_seq=view.registered_seq,
                        seq=action.update.seq,
                        seconds_since_close_seen=round(time.monotonic() - w.closed_seen, 3),
                    )
                elif isinstance(action, Settle):
                    payouts = await call(adapter.settle, cid)
                    _log.info("settled on L1", channel=cid.hex(), payouts=payouts)
                # A tower signs nothing: it never forces or adopts a move.
            w.failures = 0
        except BfsSmrError as exc:
            w.failures += 1
            w.retry_at = time.monotonic() + backoff(self.config.poll_interval, w.failures)
            _log.warning("L1 action failed", channel=cid.hex(), reason=str(exc))
