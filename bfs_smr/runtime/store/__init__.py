"""The durable store: one SQLite database per party (runtime layer; the core does no I/O).

Why SQLite (WAL, ``synchronous=FULL``) rather than an append-only file: one transaction
updates the head, the log, pending proposals, pending requests and counters atomically,
so a crash leaves either all of a step or none of it; and reopening reads a few rows
whatever the length of the log. Measured on the CI machine (docs/durability.md): an fsync
costs ~140 µs, a SQLite commit ~210 µs, and with group commit (64 updates a transaction)
5.3 µs per update against 3.2 µs for a hand-rolled append-only file.

Write-ahead rules (I1, I3, docs/design.md §4) are kept by :meth:`Store.persist`: the driver hands it
every effect of a step *before* it sends anything or reports anything done, and it commits
them in one transaction (one fsync) — group commit that never lets a signature leave, or a
command be reported done, before its update is durable.

Damage is detected, never trusted: every row read back is decoded strictly and the head
is re-verified (both signatures, state hash) before a channel is rebuilt from it; any
failure raises :class:`StoreError` naming the file, and no signature is made from a
damaged state.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from bfs_smr._app import StateMachine
from bfs_smr._channel import Channel
from bfs_smr._codec import decode, encode, encode_signatures, item_head
from bfs_smr._crypto import Signer
from bfs_smr._errors import BfsSmrError, CodecError, LocalError
from bfs_smr._l1 import L1Format
from bfs_smr._limits import ChannelLimits
from bfs_smr._messages import (
    CommandCommitted,
    CommandFailed,
    Effect,
    PersistRequest,
    PersistUpdate,
)
from bfs_smr._update import ChannelParams, SignedUpdate

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]

SCHEMA_VERSION = 2
DB_NAME = "channels.sqlite3"
#: A log row keeps its previous hash only every this many entries; the rows between get
#: theirs by hashing the entry before (see :func:`log_row`).
CHECKPOINT = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    key INTEGER PRIMARY KEY,            -- small local key, so log rows stay small
    id BLOB NOT NULL UNIQUE,            -- the 32-byte channel id
    params BLOB NOT NULL,               -- canonical ChannelParams
    next_ref INTEGER NOT NULL,
    last_peer_ref INTEGER NOT NULL,
    head BLOB,                          -- newest doubly-signed update
    head_state BLOB                     -- its state (app encoding)
);
CREATE TABLE IF NOT EXISTS proposals (  -- signed by this party, awaiting the peer
    channel INTEGER NOT NULL, seq INTEGER NOT NULL, signed BLOB NOT NULL, state BLOB NOT NULL,
    tag BLOB NOT NULL DEFAULT x'',      -- the sequencer's tag on it (docs/protocol.md)
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (   -- the follower's requests not yet answered
    channel INTEGER NOT NULL, ref INTEGER NOT NULL, command BLOB NOT NULL, close INTEGER NOT NULL,
    PRIMARY KEY (channel, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (        -- every doubly-signed update, to serve resync
    channel INTEGER NOT NULL, seq INTEGER NOT NULL, signed BLOB NOT NULL,  -- see log_row
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peers (      -- a node's peers: who hosts each channel's other side
    id BLOB PRIMARY KEY, address TEXT   -- the peer's node id; where to dial it (if known)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_peers (
    channel INTEGER PRIMARY KEY, peer BLOB NOT NULL
);
"""


_Shared = TypeVar("_Shared", bytes, str, tuple[bytes, bytes], tuple[int, int])
#: The options of every channel that has none (read-only: it is shared).
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class StoreError(BfsSmrError):
    """The store cannot be read or written; ``path`` names the file. Nothing was lost."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class Store:
    """A party's channels on disk, in ``data_dir/channels.sqlite3``.

    An existing file is never taken as a new store: one that is empty (truncated to
    zero bytes) or lacks the store's schema is refused, not initialised, since a store
    that lost its channels would leave their funds unwatched.

    Args:
        data_dir: the party's data directory (created if missing).
        keep_log: keep every doubly-signed update (needed to serve a peer's resync or
            restore; turn off only for a party that never serves).
        create: make a new store if there is none (a node passes False: ``bfs-smr
            init`` made its store, and a missing one is a loss, not a new node).

    Raises:
        StoreError: the directory or database cannot be opened, is not a bfs-smr store,
            is empty, or (``create`` False) is missing.
    """

    def __init__(self, data_dir: Path | str, *, keep_log: bool = True, create: bool = True) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / DB_NAME
        self.keep_log = keep_log
        #: Told each commit's latency in seconds (the fsync's): the node's metrics.
        self.on_commit: Callable[[float], None] | None = None
        # One object for each value many channels' parameters repeat (the L1's domain, the
        # app's name, this node's and each peer's key), not one per channel loaded.
        self._shared: dict[Any, Any] = {}
        try:
            if not self.path.exists():
                if not create:
                    raise StoreError(self.path, f"missing; {_LOST}")
                self.dir.mkdir(parents=True, exist_ok=True)
                _create(self.path)
            elif self.path.stat().st_size == 0:
                raise StoreError(self.path, f"empty (0 bytes); {_LOST}")
            # mode=rw: SQLite must never make a file here, only open the one that is.
            uri = f"file:{urllib.parse.quote(str(self.path))}?mode=rw"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if not self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone():
                raise StoreError(self.path, "not a bfs-smr store (no schema)")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(proposals)")}
            if "tag" not in columns:  # a store from before the follower signed first
                self._db.execute("ALTER TABLE proposals ADD COLUMN tag BLOB NOT NULL DEFAULT x''")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                raise StoreError(self.path, "not a bfs-smr store (no schema version)")
            if row[0] == 1:
                self._migrate_from_1()
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(self.path, f"schema version {row[0]!r}, expected {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(self.path, _explain(exc)) from None
        except OSError as exc:
            raise StoreError(self.dir, f"cannot use the data directory: {exc.strerror}") from None

    def _migrate_from_1(self) -> None:
        """Version 1 kept whole signed updates in the log; rewrite them as :func:`log_row`
        rows, in one transaction (a crash leaves version 1 to migrate again)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute("SELECT channel, seq, signed FROM log").fetchall()
            try:
                new = [(log_row(SignedUpdate.from_value(decode(r[2]))), r[0], r[1]) for r in rows]
            except (CodecError, ValueError) as exc:
                raise StoreError(self.path, f"a log entry is damaged ({exc})") from None
            db.executemany("UPDATE log SET signed=? WHERE channel=? AND seq=?", new)
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- channels ---------------------------------------------------------------------

    def add_channel(self, params: ChannelParams) -> int:
        """Record a new channel (durably) and return its local key.

        Raises:
            LocalError: the channel is already in this store.
        """
        try:
            cur = self._db.execute(
                "INSERT INTO channels (id, params, next_ref, last_peer_ref) VALUES (?, ?, 1, 0)",
                (params.channel_id, encode(params.to_value())),
            )
        except sqlite3.IntegrityError:
            raise LocalError("this channel is already in the store") from None
        except sqlite3.Error as exc:
            raise StoreError(self.path, _explain(exc)) from None
        assert cur.lastrowid is not None
        return cur.lastrowid

    def set_peer(self, channel_id: bytes, peer: bytes, address: str | None = None) -> None:
        """Record (durably) that ``peer`` (a node id) hosts the other side of a channel, and
        where to dial it if known (a known address is never forgotten by passing None)."""
        key = self.key_of(channel_id)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO channel_peers VALUES (?, ?)", (key, peer))
            self._db.execute(
                "INSERT INTO peers VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
                "address=coalesce(excluded.address, address)",
                (peer, address),
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(self.path, _explain(exc)) from None

    def peer_of(self, channel_id: bytes) -> bytes | None:
        """The node id recorded for the channel's other side, if any."""
        rows = self._query(
            "SELECT peer FROM channel_peers JOIN channels ON channels.key = channel_peers.channel"
            " WHERE channels.id=?",
            (channel_id,),
        )
        return self._share(rows[0][0]) if rows else None

    def peer_addresses(self) -> dict[bytes, str]:
        """Every peer with a known address: node id → ``host:port``."""
        rows = self._query("SELECT id, address FROM peers WHERE address IS NOT NULL")
        return {row[0]: row[1] for row in rows}

    def channel_ids(self) -> list[bytes]:
        return [row[0] for row in self._query("SELECT id FROM channels ORDER BY key")]

    def key_of(self, channel_id: bytes) -> int:
        rows = self._query("SELECT key FROM channels WHERE id=?", (channel_id,))
        if not rows:
            raise StoreError(self.path, f"channel {channel_id.hex()} is not in this store")
        key: int = rows[0][0]
        return key

    def params(self, channel_id: bytes) -> ChannelParams:
        rows = self._query("SELECT params FROM channels WHERE id=?", (channel_id,))
        if not rows:
            raise StoreError(self.path, f"channel {channel_id.hex()} is not in this store")
        try:
            params = ChannelParams.from_value(decode(rows[0][0]))
        except (CodecError, ValueError, TypeError, LocalError) as exc:
            raise StoreError(self.path, f"channel parameters are damaged ({exc})") from None
        if params.channel_id != channel_id:
            raise StoreError(self.path, "channel parameters are damaged (id mismatch)")
        share = self._share
        first, second = params.participants
        return dataclasses.replace(
            params,
            l1=share(params.l1),
            participants=share((share(first), share(second))),
            deposits=share(params.deposits),
            app=share(params.app),
            options=params.options or _NO_OPTIONS,
        )

    def _share(self, value: _Shared) -> _Shared:
        shared: _Shared = self._shared.setdefault(value, value)
        return shared

    def load(
        self,
        channel_id: bytes,
        app: StateMachine[Any],
        fmt: L1Format,
        signer: Signer,
        *,
        limits: ChannelLimits = ChannelLimits(),
    ) -> Channel:
        """Rebuild the channel exactly as it was durably left (cost independent of the log).

        Raises:
            StoreError: a row is damaged or the rows do not fit together.
        """
        params = self.params(channel_id)
        key = self.key_of(channel_id)
        row = self._query(
            "SELECT next_ref, last_peer_ref, head, head_state FROM channels WHERE key=?", (key,)
        )[0]
        next_ref, last_peer_ref, head, head_state = row
        try:
            committed = state = None
            if head is not None:
                committed = SignedUpdate.from_value(decode(head))
                state = app.decode_state(head_state)
            proposals: list[tuple[SignedUpdate, Any] | tuple[SignedUpdate, Any, bytes]] = [
                (SignedUpdate.from_value(decode(signed)), app.decode_state(pstate), bytes(tag))
                for signed, pstate, tag in self._query(
                    "SELECT signed, state, tag FROM proposals WHERE channel=? ORDER BY seq",
                    (key,),
                )
            ]
            requests = [
                (ref, None if close else decode(command), bool(close))
                for ref, command, close in self._query(
                    "SELECT ref, command, close FROM requests WHERE channel=? ORDER BY ref", (key,)
                )
            ]
            return Channel.restore(
                params,
                app,
                fmt,
                signer,
                committed=committed,
                state=state,
                proposals=proposals,
                requests=requests,
                next_ref=next_ref,
                last_peer_ref=last_peer_ref,
                limits=limits,
            )
        except (CodecError, ValueError, TypeError, LocalError) as exc:
            reason = exc.reason if isinstance(exc, BfsSmrError) else str(exc)
            raise StoreError(
                self.path, f"channel {channel_id.hex()} is damaged: {reason}"
            ) from None

    def log_range(self, channel_id: bytes, first: int, last: int) -> list[SignedUpdate]:
        """Doubly-signed entries ``first..last`` (inclusive), to serve a peer's resync.

        Raises:
            StoreError: entries are missing (log not kept) or damaged.
        """
        key = self.key_of(channel_id)
        params = self.params(channel_id)
        start = first - first % CHECKPOINT  # the nearest row that keeps its previous hash
        rows = self._query(
            "SELECT seq, signed FROM log WHERE channel=? AND seq BETWEEN ? AND ? ORDER BY seq",
            (key, start, last),
        )
        if [r[0] for r in rows] != list(range(start, last + 1)):
            raise StoreError(self.path, f"log entries {first}..{last} are not all in the store")
        out: list[SignedUpdate] = []
        prev: bytes | None = None
        try:
            for seq, data in rows:
                signed = from_log_row(data, params, seq, prev)
                prev = signed.update.entry_hash()
                if seq >= first:
                    out.append(signed)
        except (CodecError, ValueError) as exc:
            raise StoreError(self.path, f"a log entry is damaged ({exc})") from None
        return out

    def log_size(self, channel_id: bytes) -> int:
        key = self.key_of(channel_id)
        count: int = self._query("SELECT count(*) FROM log WHERE channel=?", (key,))[0][0]
        return count

    # -- the write-ahead step ----------------------------------------------------------------

    def persist(self, key: int, effects: Iterable[Effect], channel: Channel) -> bool:
        """Make everything in ``effects`` that must be durable durable, in one transaction.

        Call before carrying out any of the effects (sending, reporting). Returns whether
        anything was written.

        Raises:
            StoreError: the write failed (disk full, read-only …); it was rolled back, so
                what was durable before still is, and nothing of this step may be sent.
        """
        return self.persist_many([(key, effects, channel)])

    def persist_many(self, steps: Iterable[tuple[int, Iterable[Effect], Channel]]) -> bool:
        """:meth:`persist` for several channels' steps in one transaction: one fsync.

        This is the group commit: a node persists everything one read from a peer (or
        one turn of its event loop) produced, then carries it all out.
        """
        rows = _Rows()
        for key, effects, channel in steps:
            rows.add(key, effects, channel, self.keep_log)
        if not rows.written:
            return False
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if rows.proposals:
                    db.executemany(
                        "INSERT OR REPLACE INTO proposals VALUES (?, ?, ?, ?, ?)", rows.proposals
                    )
                if rows.requests:
                    db.executemany(
                        "INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?)", rows.requests
                    )
                if rows.log:
                    db.executemany("INSERT OR REPLACE INTO log VALUES (?, ?, ?)", rows.log)
                if rows.heads:
                    db.executemany(
                        "DELETE FROM proposals WHERE channel=? AND seq<=?",
                        [(key, seq) for key, (_, _, seq) in rows.heads.items()],
                    )
                    db.executemany(
                        "UPDATE channels SET head=?, head_state=? WHERE key=?",
                        [(data, state, key) for key, (data, state, _) in rows.heads.items()],
                    )
                if rows.answered:
                    db.executemany("DELETE FROM requests WHERE channel=? AND ref=?", rows.answered)
                if rows.cleared:
                    db.executemany("DELETE FROM requests WHERE channel=?", rows.cleared)
                db.executemany(
                    "UPDATE channels SET next_ref=?, last_peer_ref=? WHERE key=?", rows.refs
                )
                t0 = time.perf_counter()
                db.execute("COMMIT")  # WAL + synchronous=FULL: durable when this returns
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - t0)
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(self.path, _explain(exc)) from None
        return True

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(self.path, _explain(exc)) from None


def log_row(signed: SignedUpdate) -> bytes:
    """A doubly-signed update as the log keeps it: what the channel cannot rebuild.

    ``[prev_hash | null, commands, state_hash, outcome, final, signatures]``: the channel
    id and app id are the channel's, the sequence number is the row's key, and the
    previous hash is kept only at every :data:`CHECKPOINT`-th seq (otherwise it is the
    hash of the entry before). The middle four items are cut from the update's cached
    canonical body, so nothing is encoded twice.
    """
    u = signed.update
    body = u.body()
    # The body is [channel_id, seq, prev_hash, app_id, commands, …]: skip the first four
    # (two 32-byte strings, the seq and the app id), reckoned without encoding them again.
    skip = 1 + 34 + len(item_head(0, u.seq)) + 34 + _text_size(u.app_id)
    prev = item_head(2, 32) + u.prev_hash if u.seq % CHECKPOINT == 0 else b"\xf6"
    return b"\x86" + prev + body[skip:] + encode_signatures(signed.signatures)


@functools.cache
def _text_size(text: str) -> int:
    return len(encode(text))


def from_log_row(
    data: bytes, params: ChannelParams, seq: int, prev_hash: bytes | None
) -> SignedUpdate:
    """Rebuild the signed update :func:`log_row` kept; ``prev_hash`` is the entry hash of
    the entry before, needed unless this row keeps its own.

    Raises:
        CodecError, ValueError: the row is damaged.
    """
    value = decode(data)
    if type(value) is not list or len(value) != 6:
        raise ValueError("a log row is a 6-item array")
    prev, commands, state_hash, outcome, final, signatures = value
    if prev is None:
        if prev_hash is None:
            raise ValueError(f"log row {seq} has no previous hash to link to")
        prev = prev_hash
    elif prev_hash is not None and prev != prev_hash:
        raise ValueError(f"log row {seq} does not link to the row before")
    update = [params.channel_id, seq, prev, params.app_id, commands, state_hash, outcome, final]
    return SignedUpdate.from_value([update, signatures])


class _Rows:
    """The rows one or more channels' effects write."""

    __slots__ = ("answered", "cleared", "heads", "log", "proposals", "refs", "requests", "written")

    def __init__(self) -> None:
        self.heads: dict[int, tuple[bytes, bytes, int]] = {}
        self.log: list[tuple[Any, ...]] = []
        self.proposals: list[tuple[Any, ...]] = []
        self.requests: list[tuple[Any, ...]] = []
        self.answered: list[tuple[int, int]] = []
        self.cleared: list[tuple[int]] = []
        self.refs: list[tuple[int, int, int]] = []
        self.written = False

    def add(self, key: int, effects: Iterable[Effect], channel: Channel, keep_log: bool) -> None:
        app = channel.app
        wrote = False
        # Only the follower keeps its requests here; the sequencer's own commands never
        # are, so answering them deletes nothing (a thousand no-op DELETEs per batch).
        follower = channel.index == 1
        for effect in effects:
            kind = type(effect)
            if kind is PersistUpdate:
                assert isinstance(effect, PersistUpdate)
                data = effect.update.encoded()
                seq = effect.update.seq
                if effect.committed:
                    self.heads[key] = (data, app.encode_state(effect.state), seq)
                    if keep_log:
                        self.log.append((key, seq, log_row(effect.update)))
                    if follower and effect.update.update.final:
                        # The final update answers every request, the close request
                        # included (which no other effect names): none is re-sent.
                        self.cleared.append((key,))
                else:
                    self.proposals.append(
                        (key, seq, data, app.encode_state(effect.state), effect.tag)
                    )
                wrote = True
            elif kind is PersistRequest:
                assert isinstance(effect, PersistRequest)
                command = b"" if effect.close else encode(effect.command)
                self.requests.append((key, effect.ref, command, int(effect.close)))
                wrote = True
            elif kind is CommandCommitted:
                assert isinstance(effect, CommandCommitted)
                if effect.local and follower:
                    self.answered.append((key, effect.ref))
                    wrote = True
            elif kind is CommandFailed:
                assert isinstance(effect, CommandFailed)
                if follower:
                    self.answered.append((key, effect.ref))
                    wrote = True
        if wrote:
            self.refs.append((channel.next_ref, channel.last_peer_ref, key))
            self.written = True


_LOST = "the channels kept in it are not watched without it: restore it from a backup"


def _create(path: Path) -> None:
    """Make a new, empty store at ``path`` atomically: a crash leaves no file or a whole
    store, never a half-made one that the next open would refuse."""
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        leftover.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA page_size=1024")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    finally:
        db.close()  # the last connection: checkpoints and removes the -wal file
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return f"damaged database file ({text})"
    if "full" in text:
        return f"disk full ({text})"
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return f"cannot write ({text})"
    return text
