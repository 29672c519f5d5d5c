"""``bfs-smr tower bench``: one watchtower process serving many nodes' channels, measured.

Everything is real except the nodes' own processes: a local L1 file in a temporary
directory, a ``bfs-smr tower run`` subprocess on loopback, and ``nodes`` client identities
that dial it over the authenticated, encrypted transport and speak the tower protocol as
a node's :class:`~bfs_smr.runtime.node._towers.TowerClient` does (puts in windows of its
``WINDOW``, each waited for).

- **Bulk channels** (``channels - 1``): each is a channel between a fresh opener key and
  one of the client identities, whose parameters commit to the watch secret the node
  derives (:func:`~bfs_smr.runtime.tower.watch_secret`). Both parties' :class:`Channel`
  objects sign its opening update (seq 0) and one payment (seq 1) in process, as a
  :class:`LocalPair` on the same local L1 does; those channels are not opened on L1 (a
  tower holds entries for channels whatever their state on L1, and checks them only after
  a close). Every channel's entry is put at seq 0 (new entries), then at seq 1
  (replacements: a node's steady state).
- **The watched channel**: a :class:`LocalPair` opened on the local L1 whose holder (the
  payee, Bob) is client 0. Alice pays Bob 1 per update, ``updates`` times, every update a
  real doubly-signed one; Bob's entry is put after each of the first 10, then coalesced
  as a node does (whenever no put is in flight, the newest), and last at seq ``updates``.
  Alice then closes unilaterally with her update at seq 10 (an old backup); the tower
  must refute it with seq ``updates`` and settle when the window ends.

Measured: the entries the tower holds, its resident memory before and after the puts
(``/proc/PID/status``), the store's pages in use and ``tower.sqlite3`` with its WAL, puts/s
through the one tower (new entries and replacements) beside this disk's fsyncs/s, the row
of the watched channel's entry after 10 and after ``updates`` updates (and the store's
pages then), and the wall time from the stale close
until the refute, and until the settlement, is on L1 beside the tower's poll interval and
the window.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._crypto import Ed25519, Signer
from bfs_smr._errors import LocalError
from bfs_smr._l1 import L1ChannelStatus, L1EventKind
from bfs_smr._update import ChannelParams, SignedUpdate
from bfs_smr.adapters.local import LocalL1
from bfs_smr.plugins import load_app
from bfs_smr.runtime import transport
from bfs_smr.runtime._local import LocalPair
from bfs_smr.runtime.node._towers import WINDOW
from bfs_smr.runtime.tower import SLOT_SIZE, TowerConfig, TowerDir, entry_size, locator, seal
from bfs_smr.runtime.tower import watch_secret as derive_watch_secret
from bfs_smr.runtime.tower._protocol import (
    MAX_QUERY,
    Ack,
    Put,
    Query,
    Refused,
    Seqs,
    Welcome,
    parse_from_tower,
)
from bfs_smr.runtime.tower._store import DB_NAME
from bfs_smr.runtime.tower._tower import MAX_ENTRIES_PER_CLIENT, MAX_LINKS

__all__ = ["bench_tower", "print_tower_bench"]

#: Updates after which the watched channel's entry is read the first time.
FEW_UPDATES = 10
_HOST = "127.0.0.1"
_REPLY_TIMEOUT = 120.0


def _say(text: str) -> None:
    print(f"tower bench: {text}", file=sys.stderr, flush=True)


def _every_tenth(total: int, what: str) -> Callable[[int], None]:
    """progress(done): a stderr line at each tenth of ``total``."""
    step = max(1, total // 10)
    mark = [step]

    def progress(done: int) -> None:
        if done >= mark[0] or done == total:
            _say(f"{what}: {done:,}/{total:,}")
            while mark[0] <= done:
                mark[0] += step

    return progress


# -- the tower process -----------------------------------------------------------------


class _TowerProcess:
    """``bfs-smr tower run`` on a fresh data directory, logging JSON to a file."""

    def __init__(self, data_dir: Path, l1: str, max_entries: int) -> None:
        self.dir = data_dir
        self.tower_id = TowerDir(data_dir).init()
        self.log = data_dir / "tower.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                [sys.executable, "-m", "bfs_smr.cli", "tower", "run", "--data-dir",
                 str(data_dir), "--listen", f"{_HOST}:0", "--l1", l1, "--json",
                 "--log-json", "--log-level", "info",
                 "--max-entries-per-client", str(max_entries)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise LocalError(f"the bench's tower did not start: {self.log.read_text()[-500:]}")
        self.port = int(json.loads(line)["listen"].rsplit(":", 1)[1])

    def rss(self) -> int:
        """Resident memory of the tower process, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise LocalError("no VmRSS in /proc (the tower bench needs Linux)")

    def files(self) -> tuple[int, int]:
        """Bytes of ``tower.sqlite3`` and of its WAL."""
        db = self.dir / DB_NAME
        wal = self.dir / (DB_NAME + "-wal")
        return db.stat().st_size, wal.stat().st_size if wal.exists() else 0

    def store_bytes(self) -> int:
        """The store's size as its readers see it (pages still only in the WAL included):
        pages in use, free pages not counted."""
        pages = int(self.query("PRAGMA page_count")) - int(self.query("PRAGMA freelist_count"))
        return pages * int(self.query("PRAGMA page_size"))

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """One value from the tower's store, read on a read-only connection."""
        db = sqlite3.connect(f"file:{self.dir / DB_NAME}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchone()[0]
        finally:
            db.close()

    def row_bytes(self, client: bytes, loc: bytes) -> int:
        """The bytes one entry's row holds: its columns' lengths (TowerStore.row_bytes)."""
        return int(
            self.query(
                "SELECT length(client) + length(locator) + length(seq) + length(entry) "
                "FROM entries WHERE client = ? AND locator = ?",
                (client, loc),
            )
        )

    def log_events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                found.append(entry)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- a node's side of the tower protocol --------------------------------------------------


class _Client:
    """One node identity's link to the tower: puts and queries, answered in order."""

    def __init__(self, identity: Signer) -> None:
        self.identity = identity
        self.id = identity.public_key
        self._replies: asyncio.Queue[Welcome | Ack | Refused | Seqs] = asyncio.Queue()
        self._link: transport.Link | None = None

    @property
    def link(self) -> transport.Link:
        assert self._link is not None, "not connected"
        return self._link

    async def connect(self, port: int, tower_id: bytes) -> int:
        """Dial the tower; return the slot its welcome names."""
        self._link = await transport.dial(_HOST, port, self.identity, tower_id)
        self._link.set_receiver(self._on_frames)
        welcome = await self.reply()
        if not isinstance(welcome, Welcome):
            raise LocalError(f"the tower's first frame is not a welcome: {welcome}")
        return welcome.slot

    def _on_frames(self, _link: transport.Link, frames: list[bytes]) -> None:
        for frame in frames:
            self._replies.put_nowait(parse_from_tower(frame))  # raising closes the link

    async def reply(self) -> Welcome | Ack | Refused | Seqs:
        get = asyncio.ensure_future(self._replies.get())
        either: list[asyncio.Future[Any]] = [get, self.link.closed]
        done, _ = await asyncio.wait(
            either, timeout=_REPLY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if get not in done:
            get.cancel()
            why = self.link.closed.result() if self.link.closed.done() else "no answer in time"
            raise LocalError(f"the tower link failed: {why}")
        return get.result()

    def ready(self) -> list[Welcome | Ack | Refused | Seqs]:
        """Replies that have arrived, without waiting."""
        out = []
        while not self._replies.empty():
            out.append(self._replies.get_nowait())
        return out

    @staticmethod
    def check_ack(reply: Any, loc: bytes, seq: int) -> Ack:
        if not isinstance(reply, Ack) or reply.locator != loc or reply.seq != seq:
            raise LocalError(f"the tower did not take a put at seq {seq}: {reply}")
        return reply

    async def put(self, loc: bytes, seq: int, entry: bytes) -> None:
        self.link.send(Put(loc, seq, entry).encode())
        self.check_ack(await self.reply(), loc, seq)

    async def put_all(
        self, puts: list[tuple[bytes, bytes]], seq: int, done: Callable[[int], None]
    ) -> None:
        """Each ``(locator, frame)`` of entries at ``seq``, a window at a time, as a node
        sends them."""
        for start in range(0, len(puts), WINDOW):
            part = puts[start : start + WINDOW]
            self.link.send_many(frame for _, frame in part)
            for loc, _ in part:
                self.check_ack(await self.reply(), loc, seq)
            done(len(part))

    async def seqs(self, locators: list[bytes]) -> list[int | None]:
        """The seq the tower holds for each locator (None: nothing)."""
        out: list[int | None] = []
        for start in range(0, len(locators), MAX_QUERY):
            part = locators[start : start + MAX_QUERY]
            self.link.send(Query(tuple(part)).encode())
            reply = await self.reply()
            if not isinstance(reply, Seqs) or len(reply.seqs) != len(part):
                raise LocalError(f"the tower's answer to a query does not match it: {reply}")
            out += reply.seqs
        return out

    def close(self) -> None:
        if self._link is not None:
            self._link.close("the bench is done")


# -- channels ----------------------------------------------------------------------------


def _pair(
    app: StateMachine[Any],
    chain: LocalL1,
    opener: Signer,
    holder: Signer,
    *,
    deposit: int,
    nonce: int,
    window: int,
) -> tuple[LocalPair, bytes]:
    """A pair whose parameters commit to the watch secret both nodes derive from their keys."""
    base = ChannelParams(
        l1=chain.format.domain,
        participants=(opener.public_key, holder.public_key),
        deposits=(deposit, 0),
        app=app.name,
        app_version=app.version,
        nonce=nonce,
        challenge_window=window,
    )
    secret = derive_watch_secret(holder, opener.public_key, base)
    pair = LocalPair(
        app,
        alice=opener,
        bob=holder,
        alice_l1=chain.adapter(opener.public_key),
        bob_l1=chain.adapter(holder.public_key),
        deposits=(deposit, 0),
        challenge_window=window,
        nonce=nonce,
        keep_log=False,
        watch=secret,
    )
    if derive_watch_secret(opener, holder.public_key, pair.params) != secret:
        raise LocalError("the two parties derive different watch secrets")
    return pair, secret


def _signed_payment(pair: LocalPair) -> SignedUpdate:
    """Alice pays Bob 1: the next doubly-signed update."""
    pair.alice.chan.issue({"pay": 1})
    pair.pump()
    update = pair.bob.chan.committed
    assert update is not None and update.doubly_signed
    return update


def _signed_opening(pair: LocalPair) -> SignedUpdate:
    """Both parties sign the opening update (no L1 transaction)."""
    pair.alice.chan.start()
    pair.bob.chan.start()
    pair.pump()
    update = pair.bob.chan.committed
    if update is None or not update.doubly_signed:
        raise LocalError("the opening update was not doubly signed")
    return update


#: One bulk channel's puts: its locator, then the frames putting its entry at seq 0 and 1.
_Bulk = tuple[bytes, bytes, bytes]


def _bulk_channels(
    app: StateMachine[Any], chain: LocalL1, clients: list[_Client], count: int, window: int
) -> list[list[_Bulk]]:
    """``count`` channels, dealt round-robin to the clients: each one's opening update and
    the next (one payment), each sealed and framed as a put."""
    per_client: list[list[_Bulk]] = [[] for _ in clients]
    progress = _every_tenth(count, "channels signed and sealed")
    for i in range(count):
        k = i % len(clients)
        holder = clients[k].identity
        opener = Signer(Ed25519(), os.urandom(32))
        pair, secret = _pair(app, chain, opener, holder, deposit=1, nonce=i + 1, window=window)
        loc = locator(secret)
        frames = []
        for update in (_signed_opening(pair), _signed_payment(pair)):
            entry = seal(secret, pair.params, update)
            if entry is None:
                raise LocalError("a bulk channel's update does not fit the tower's slot")
            frames.append(Put(loc, update.seq, entry).encode())
        per_client[k].append((loc, frames[0], frames[1]))
        progress(i + 1)
    return per_client


# -- measurements ------------------------------------------------------------------------


def _fsyncs_per_second(directory: Path, count: int = 200) -> float:
    """One 4 KiB write and fsync at a time, in the bench's directory: what one durable put
    batch costs the tower at least."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = os.urandom(4096)
        start = time.perf_counter()
        for _ in range(count):
            os.pwrite(fd, block, 0)
            os.fsync(fd)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return count / seconds


@dataclass
class _Watched:
    """The watched channel: the pair, its secret and locator, Bob's client."""

    pair: LocalPair
    secret: bytes
    loc: bytes
    bob: _Client

    def newest(self) -> SignedUpdate:
        update = self.pair.bob.chan.committed
        assert update is not None
        return update

    def entry(self, update: SignedUpdate) -> bytes:
        entry = seal(self.secret, self.pair.params, update)
        if entry is None:
            raise LocalError(f"the update at seq {update.seq} does not fit the tower's slot")
        return entry

    def pay(self) -> SignedUpdate:
        return _signed_payment(self.pair)


async def _many_updates(
    w: _Watched, tower: _TowerProcess, updates: int
) -> tuple[dict[str, Any], SignedUpdate]:
    """Pay ``updates`` times; Bob's entry follows, as a node keeps it. Returns the figures
    and Alice's update at seq FEW_UPDATES (her old backup)."""
    client = w.bob
    stale: SignedUpdate | None = None
    for _ in range(FEW_UPDATES):
        update = w.pay()
        await client.put(w.loc, update.seq, w.entry(update))
        stale = w.pair.alice.chan.committed
    assert stale is not None and stale.seq == FEW_UPDATES
    [held] = await client.seqs([w.loc])
    few = {"seq": held, "row_bytes": tower.row_bytes(client.id, w.loc)}
    few["store_bytes"] = tower.store_bytes()
    few["db_bytes"], few["wal_bytes"] = tower.files()
    puts = FEW_UPDATES
    in_flight: int | None = None  # the seq of the put awaiting its ack
    acked = FEW_UPDATES
    progress = _every_tenth(updates, "updates of the watched channel")
    start = time.perf_counter()
    for seq in range(FEW_UPDATES + 1, updates + 1):
        update = w.pay()
        await asyncio.sleep(0)  # the transport reads what came in
        for reply in client.ready():
            acked = client.check_ack(reply, w.loc, -1 if in_flight is None else in_flight).seq
            in_flight = None
        if in_flight is None:  # a node puts whatever is newest once the last put is in
            client.link.send(Put(w.loc, update.seq, w.entry(update)).encode())
            in_flight = update.seq
            puts += 1
        progress(seq)
    seconds = time.perf_counter() - start
    if in_flight is not None:
        client.check_ack(await client.reply(), w.loc, in_flight)
        acked = in_flight
    newest = w.newest()
    if newest.seq != updates:
        raise LocalError(f"the watched channel is at seq {newest.seq}, not {updates}")
    if acked != updates:
        await client.put(w.loc, newest.seq, w.entry(newest))
        puts += 1
    [held] = await client.seqs([w.loc])
    many = {"seq": held, "row_bytes": tower.row_bytes(client.id, w.loc)}
    many["store_bytes"] = tower.store_bytes()
    many["db_bytes"], many["wal_bytes"] = tower.files()
    figures = {
        "few": few,
        "many": many,
        "updates": updates,
        "puts": puts,
        "update_seconds": round(seconds, 3),
        "updates_per_second": round((updates - FEW_UPDATES) / seconds, 1),
        "entry_bytes": entry_size(SLOT_SIZE),
        # A tower that keeps one blob per state (Lightning's) holds this much instead:
        "one_blob_per_update_bytes": updates * entry_size(SLOT_SIZE),
    }
    return figures, stale


async def _stale_close(
    w: _Watched, chain: LocalL1, tower: _TowerProcess, stale: SignedUpdate, window: int
) -> dict[str, Any]:
    """Alice closes with ``stale``; wall time until the tower's refute, then its settlement,
    is on L1."""
    cid = w.pair.params.channel_id
    events = chain.events()
    since = events[-1].index + 1 if events else 0
    w.pair.alice.l1.unilateral_close(stale, w.secret)
    closed = time.perf_counter()
    refuted_at: float | None = None
    refuted_seq: int | None = None
    registered_seq: int | None = None
    payouts: tuple[int, int] | None = None
    give_up = closed + window + 60
    while payouts is None:
        if time.perf_counter() > give_up:
            raise LocalError(
                "the tower did not refute and settle the stale close: "
                + tower.log.read_text()[-1000:]
            )
        for event in chain.events(since):
            since = event.index + 1
            if event.channel_id != cid:
                continue
            if event.kind is L1EventKind.CLOSING_STARTED:
                registered_seq = event.seq
            elif event.kind is L1EventKind.REFUTED and refuted_at is None:
                refuted_at, refuted_seq = time.perf_counter(), event.seq
            elif event.kind is L1EventKind.SETTLED:
                payouts = event.payouts
        if payouts is None:
            await asyncio.sleep(0.005)
    settled_at = time.perf_counter()
    view = chain.channel(cid)
    if view.status is not L1ChannelStatus.SETTLED:
        raise LocalError(f"the watched channel is {view.status.value}, not settled")
    told = tower.log_events("stale close refuted")
    return {
        "poll_interval_seconds": TowerConfig(listen=f"{_HOST}:0", l1="-").poll_interval,
        "window_seconds": window,
        "registered_seq": registered_seq,
        "refuted_seq": refuted_seq,
        "refute_seconds": None if refuted_at is None else round(refuted_at - closed, 3),
        "settle_seconds": round(settled_at - closed, 3),
        "payouts": list(payouts),
        "expected_payouts": list(w.newest().update.outcome),
        "stale_payouts": list(stale.update.outcome),
        "tower_seconds_after_seeing_close": told[0].get("seconds_since_close_seen")
        if told
        else None,
    }


# -- the whole run -----------------------------------------------------------------------


def _check(channels: int, nodes: int, updates: int, window: int) -> None:
    if nodes > channels:
        raise LocalError("--nodes must not exceed --channels: every node has a channel")
    if nodes > MAX_LINKS:
        raise LocalError(f"--nodes: a tower serves {MAX_LINKS} links at most")
    if updates <= FEW_UPDATES:
        raise LocalError(f"--updates must be more than {FEW_UPDATES}")
    if window < 2:
        raise LocalError("--window must be at least 2 s (the local L1 counts whole seconds)")


async def _run(base: Path, channels: int, nodes: int, updates: int, window: int) -> dict[str, Any]:
    app = load_app("payments")
    spec = f"local:{base / 'l1.sqlite3'}"
    chain = LocalL1.create(base / "l1.sqlite3", window=window)
    most = max(MAX_ENTRIES_PER_CLIENT, -(-channels // nodes) + 1)
    tower = _TowerProcess(base / "tower", spec, most)
    clients = [_Client(Signer(Ed25519(), os.urandom(32))) for _ in range(nodes)]
    try:
        rss_start = tower.rss()
        for client in clients:  # one at a time: a tower takes 64 handshakes per host
            slot = await client.connect(tower.port, tower.tower_id)
            if slot != SLOT_SIZE:
                raise LocalError(f"the bench's tower has slot {slot}, not {SLOT_SIZE}")
        _say(f"tower pid {tower.proc.pid} on port {tower.port}; {nodes} nodes connected")

        # The watched channel, opened on L1; Bob (client 0) puts its opening entry first.
        alice = Signer(Ed25519(), os.urandom(32))
        chain.mint(alice.public_key, updates)
        pair, secret = _pair(
            app, chain, alice, clients[0].identity, deposit=updates, nonce=0, window=window
        )
        pair.open()
        watched = _Watched(pair, secret, locator(secret), clients[0])
        opening = watched.newest()

        start = time.perf_counter()
        per_client = _bulk_channels(app, chain, clients, channels - 1, window)
        prepare_seconds = time.perf_counter() - start

        fsyncs = _fsyncs_per_second(base)
        rss_before = tower.rss()
        store_before, files_before = tower.store_bytes(), tower.files()
        await watched.bob.put(watched.loc, opening.seq, watched.entry(opening))
        rates = {}
        for seq, name in ((0, "first"), (1, "replace")):
            # first: a new entry per channel; replace: each channel's next update after it
            progress = _every_tenth(channels - 1, f"entries put ({name})")
            counted = [0]

            def done(n: int, counted: list[int] = counted, progress: Any = progress) -> None:
                counted[0] += n
                progress(counted[0])

            start = time.perf_counter()
            await asyncio.gather(
                *(
                    c.put_all([(p[0], p[1 + seq]) for p in puts], seq, done)
                    for c, puts in zip(clients, per_client, strict=True)
                )
            )
            seconds = time.perf_counter() - start
            rates[name] = {
                "puts": channels - 1,
                "seconds": round(seconds, 3),
                "per_second": round((channels - 1) / seconds, 1),
            }
        rss_after = tower.rss()
        store_after, files_after = tower.store_bytes(), tower.files()
        held = int(tower.query("SELECT COUNT(*) FROM entries"))
        answered = 0
        for i, (client, puts) in enumerate(zip(clients, per_client, strict=True)):
            want = [(loc, 1) for loc, _, _ in puts]
            if i == 0:
                want.insert(0, (watched.loc, opening.seq))
            seqs = await client.seqs([loc for loc, _ in want])
            answered += sum(1 for (_, seq), have in zip(want, seqs, strict=True) if have == seq)
        _say(f"the tower holds {held:,} entries; its answers match {answered:,} of them")
        row_bytes = tower.row_bytes(clients[0].id, watched.loc)

        constant, stale = await _many_updates(watched, tower, updates)
        _say(f"stale close at seq {stale.seq} of {updates:,}; waiting for the tower")
        refute = await _stale_close(watched, chain, tower, stale, window)
        refusals = len(tower.log_events("tower refused a frame"))
    finally:
        for client in clients:
            client.close()
        tower.stop()
        chain.close()
    # A tower stopped cleanly folds its WAL into tower.sqlite3: what the entries take at rest.
    stopped = sum(tower.files())
    return {
        "channels": channels,
        "nodes": nodes,
        "channels_held": held,
        "channels_answered": answered,
        "refusals": refusals,
        "slot_bytes": SLOT_SIZE,
        "entry_bytes": entry_size(SLOT_SIZE),
        "prepare_seconds": round(prepare_seconds, 3),
        "memory": {
            "rss_start_bytes": rss_start,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "bytes_per_channel": round((rss_after - rss_before) / channels, 1),
        },
        "disk": {
            "row_bytes": row_bytes,
            "store_bytes_before": store_before,
            "store_bytes": store_after,
            "bytes_per_channel": round((store_after - store_before) / channels, 1),
            "db_bytes": files_after[0],
            "wal_bytes": files_after[1],
            "files_bytes_before": sum(files_before),
            "stopped_bytes": stopped,
            "stopped_bytes_per_channel": round(stopped / channels, 1),
        },
        "puts": {
            **rates,
            "window": WINDOW,
            "fsyncs_per_second": round(fsyncs, 1),
        },
        "constant": constant,
        "refute": refute,
    }


def bench_tower(
    channels: int = 10_000, nodes: int = 10, *, updates: int = 100_000, window: int = 5
) -> dict[str, Any]:
    """Run the tower bench in a temporary directory; return its figures (see the module)."""
    _check(channels, nodes, updates, window)
    with tempfile.TemporaryDirectory(prefix="bfs-smr-tower-bench-") as tmp:
        return asyncio.run(_run(Path(tmp), channels, nodes, updates, window))


def print_tower_bench(result: dict[str, Any]) -> None:
    """The figures as a table, each beside what it is measured against."""
    from rich.console import Console
    from rich.table import Table

    mem, disk, puts = result["memory"], result["disk"], result["puts"]
    const, refute = result["constant"], result["refute"]
    few, many = const["few"], const["many"]
    first, replace = puts["first"], puts["replace"]
    mib = 2**20
    rows: Iterable[tuple[str, str, str]] = [
        ("channels held", f"{result['channels_held']:,}", f"{result['channels']:,} put"),
        ("nodes (links)", f"{result['nodes']:,}", ""),
        (
            "tower RSS before / after",
            f"{mem['rss_before_bytes'] / mib:,.1f} / {mem['rss_after_bytes'] / mib:,.1f} MiB",
            f"at start {mem['rss_start_bytes'] / mib:,.1f} MiB",
        ),
        (
            "memory per channel",
            f"{mem['bytes_per_channel']:,.0f} B",
            f"entry {result['entry_bytes']:,} B",
        ),
        (
            "disk per channel (store pages)",
            f"{disk['bytes_per_channel']:,.0f} B",
            f"row {disk['row_bytes']:,} B",
        ),
        (
            "disk per channel, tower stopped",
            f"{disk['stopped_bytes_per_channel']:,.0f} B",
            f"row {disk['row_bytes']:,} B",
        ),
        (
            "tower.sqlite3 / WAL (running)",
            f"{disk['db_bytes']:,} / {disk['wal_bytes']:,} B",
            f"empty store {disk['files_bytes_before']:,} B",
        ),
        (
            "puts/s, new entries / replacements",
            f"{first['per_second']:,.0f} / {replace['per_second']:,.0f}",
            f"fsyncs/s of this disk {puts['fsyncs_per_second']:,.0f}",
        ),
        (
            f"entry row after {few['seq']} / {many['seq']:,} updates",
            f"{few['row_bytes']:,} / {many['row_bytes']:,} B",
            f"one blob per update: {const['one_blob_per_update_bytes']:,} B",
        ),
        (
            f"store pages after {few['seq']} / {many['seq']:,} updates",
            f"{few['store_bytes']:,} / {many['store_bytes']:,} B",
            f"{const['puts']:,} puts, {const['updates_per_second']:,.0f} updates/s",
        ),
        (
            f"refute after stale close (seq {refute['registered_seq']} → "
            f"{refute['refuted_seq']:,})",
            f"{refute['refute_seconds']:.3f} s",
            f"tower polls every {refute['poll_interval_seconds']} s",
        ),
        (
            "settled after stale close",
            f"{refute['settle_seconds']:.3f} s",
            f"window {refute['window_seconds']} s (whole L1 seconds)",
        ),
        (
            "payouts (Alice, Bob)",
            f"{refute['payouts'][0]:,}, {refute['payouts'][1]:,}",
            f"stale close: {refute['stale_payouts'][0]:,}, {refute['stale_payouts'][1]:,}",
        ),
    ]
    table = Table(title="bfs-smr tower bench: one tower process, local L1")
    table.add_column("figure", style="bold")
    table.add_column("measured", justify="right")
    table.add_column("against")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
