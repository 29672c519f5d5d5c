"""A local L1 that several processes share: the embedded L1's rules, persisted in SQLite.

:class:`LocalL1` is :class:`bfs_smr.adapters.memory.MemoryL1` (the very same rule methods, not a
copy) with its state in one SQLite file and a wall clock, so channel nodes running as
separate OS processes on one machine share one chain (``--l1 local:PATH``). It is for
demos, tests and local development, not a blockchain: whoever can write the file is the L1.
::

    chain = LocalL1.create("l1.sqlite3", window=60)  # once; refuses an existing file
    chain = LocalL1("l1.sqlite3")                    # in each process, as often as needed
    chain.mint(alice_key, 1_000)                     # a test faucet
    alice_l1 = chain.adapter(alice_key)              # an L1Adapter transacting as Alice

**Transactions.** Each of ``open``, ``deposit``, ``cooperative_close``,
``unilateral_close``, ``refute``, ``force_move``, ``cancel``, ``settle`` and ``mint`` is
one SQLite ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock, reads the clock
once (every rule in it sees that instant, and event times follow event order), loads only
the rows the rule asks for (the channel, the accounts) through MemoryL1's storage hooks,
runs MemoryL1's rule, writes back the changed rows and the appended event, and commits.
A rejected transaction (:class:`bfs_smr.L1Error`, or any exception) is rolled back and
changes nothing, as on MemoryL1. Writers from any number of processes are serialised (one
waits up to 30 s for the lock, then fails with an L1Error): no lost update, value conserved.

**Durability.** WAL mode with ``synchronous=FULL``: a transaction that returned is on
disk, and a process killed at any instant, even by ``SIGKILL`` mid-commit, leaves every
committed transaction and nothing of the one in flight. Reads (``balance``, ``channel``,
``events``, ``total_supply``, ``transactions``) take no write lock and each sees one
committed snapshot. Open a :class:`LocalL1` in each process (never carry one across
``fork``); threads may share one.

**Time** is ``clock()``: by default the wall clock in whole seconds, so windows and
deadlines are in seconds. :attr:`LocalL1.window` is the file's default challenge window,
which nodes put in the channel parameters they propose. Tests may inject a controllable
clock; :meth:`LocalL1.advance` is refused. Each process reads its own clock, so they
should agree on time (the wall clock does).

**Signatures** are MemoryL1's: :attr:`format` is a :class:`bfs_smr.adapters.memory.MemoryFormat`
with domain ``b"memory:" + chain_id``; the chain id is random (``local-1a2b3c4d``) unless
given, so channel ids never repeat across files.

**File layout** (schema version 1; blobs are canonical CBOR, :mod:`bfs_smr._codec`)::

    meta      key TEXT PK, value      format='bfs-smr/local-l1', version, chain_id, window
    balances  account BLOB PK,        amount as a decimal string (unbounded, as on
              amount TEXT             MemoryL1)
    channels  id BLOB PK, params,     params: ChannelParams.to_value(); status: the
              status TEXT, state      L1ChannelStatus value; state: [deposited, registered
                                      (SignedUpdate.to_value() or null), registered_by_force,
                                      deadline, payouts]
    events    idx INTEGER PK, kind,   kind: the L1EventKind value; data: [seq, deadline,
              channel, time, data     payouts] and, for a close that revealed a watch
                                      secret, the secret; events(since) returns idx >= since

Rows are decoded strictly. Every error about the file (missing, not a bfs-smr L1 file,
damaged, locked too long, unwritable) is an :class:`bfs_smr.L1Error` with a one-line
message that starts with the path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bfs_smr.adapters.memory import ChannelRecord, MemoryAdapter, MemoryFormat, MemoryL1

from bfs_smr import (
    ChannelParams,
    CodecError,
    L1ChannelInfo,
    L1ChannelStatus,
    L1Error,
    L1Event,
    L1EventKind,
    LocalError,
    SignedUpdate,
    Signer,
    StateMachine,
)
from bfs_smr._codec import decode, encode
from bfs_smr.plugins import KeyProvider, L1Connection, L1Plugin

__all__ = ["DEFAULT_WINDOW", "LocalAdapter", "LocalL1", "LocalL1Plugin"]

#: The challenge window of a new L1 file unless told otherwise, in seconds.
DEFAULT_WINDOW = 60

FORMAT = "bfs-smr/local-l1"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30

_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL)",
    "CREATE TABLE balances (account BLOB PRIMARY KEY, amount TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE channels (id BLOB PRIMARY KEY, params BLOB NOT NULL, status TEXT NOT NULL,"
    " state BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE events (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, channel BLOB NOT NULL,"
    " time INTEGER NOT NULL, data BLOB NOT NULL)",
]

#: What decoding a damaged row raises.
_DAMAGE = (CodecError, ValueError, TypeError, KeyError, IndexError, LocalError)

Apps = Callable[[str, int], StateMachine[Any]]


def _wall_clock() -> int:
    return int(time.time())


class LocalL1(MemoryL1):
    """The embedded L1's rules on a SQLite file that several processes share.

    Args:
        path: an L1 file made by :meth:`create`.
        clock: L1 time in seconds. Default: the wall clock, ``int(time.time())``.
        apps: resolves ``(name, version)`` to an app, for force moves. Default: the
            installed apps.

    Raises:
        L1Error: the file is missing, is not a bfs-smr L1 file, or cannot be opened.
    """

    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        window: int = DEFAULT_WINDOW,
        chain_id: str | None = None,
        clock: Callable[[], int] | None = None,
        apps: Apps | None = None,
    ) -> LocalL1:
        """Create a new L1 file at ``path`` and open it.

        Args:
            window: the default challenge window in seconds, for nodes' channel params.
            chain_id: names this L1 (in every channel id and signature domain). Default:
                random, like ``local-1a2b3c4d``.

        Raises:
            L1Error: ``path`` exists already or cannot be created.
            LocalError: ``window`` is not a positive integer, or ``chain_id`` is not 1 to
                248 bytes.
        """
        if type(window) is not int or window <= 0:
            raise LocalError("window must be a positive integer (seconds)")
        chain_id = f"local-{os.urandom(4).hex()}" if chain_id is None else chain_id
        if not chain_id:
            raise LocalError("chain_id must not be empty")
        MemoryFormat(b"memory:" + chain_id.encode())  # checks the domain's length
        path = Path(path)
        try:
            with path.open("xb"):  # exclusive: of two creators, exactly one wins
                pass
        except FileExistsError:
            raise L1Error(f"{path}: exists already (open it with LocalL1(path))") from None
        except OSError as exc:
            raise L1Error(f"{path}: cannot create the L1 file ({exc.strerror})") from None
        meta = [("format", FORMAT), ("version", SCHEMA_VERSION)]
        meta += [("chain_id", chain_id), ("window", window)]
        try:
            db = sqlite3.connect(path, isolation_level=None)
            try:  # one transaction: an opener sees an empty file or a whole one
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.Error as exc:
            path.unlink(missing_ok=True)
            raise L1Error(f"{path}: cannot create the L1 file ({exc})") from None
        return cls(path, clock=clock, apps=apps)

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int] | None = None,
        apps: Apps | None = None,
    ) -> None:
        self._path = Path(path)
        self._clock = clock or _wall_clock
        self._lock = threading.RLock()  # one transaction at a time on this connection
        #: The transaction in flight: its instant, and each channel it loaded or added
        #: (the live object the rules change, with its (status, state) row as loaded).
        self._tx_now: int | None = None
        self._tx_channels: dict[bytes, tuple[ChannelRecord, tuple[str, bytes] | None]] = {}
        if not self._path.exists():
            raise L1Error(
                f"{self._path}: no such L1 file (create one: bfs-smr l1 init --l1 local:PATH)"
            )
        if not self._path.is_file():
            raise L1Error(f"{self._path}: not a bfs-smr L1 file (not a regular file)")
        uri = self._path.resolve().as_uri() + "?mode=rw"  # never create a file here
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise L1Error(f"{self._path}: cannot open the L1 file ({exc})") from None
        try:  # check what the file is before changing anything in it
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            self._db.close()
            raise L1Error(f"{self._path}: not a bfs-smr L1 file ({exc})") from None
        if (meta.get("format"), meta.get("version")) != (FORMAT, SCHEMA_VERSION):
            self._db.close()
            found = f"format {meta.get('format')!r}, version {meta.get('version')!r}"
            raise L1Error(f"{self._path}: not a bfs-smr L1 file ({found})")
        self._query("PRAGMA journal_mode=WAL")  # as created; kept by the file
        self._query("PRAGMA synchronous=FULL")  # per connection: every commit is fsynced
        self._chain_id, self._window = str(meta["chain_id"]), int(meta["window"])
        super().__init__(chain_id=self._chain_id, apps=apps)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def chain_id(self) -> str:
        return self._chain_id

    @property
    def window(self) -> int:
        """The default challenge window, in seconds, that nodes put in channel params."""
        return self._window

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def adapter(self, account: bytes) -> LocalAdapter:
        """A client that transacts as ``account`` (a public key)."""
        return LocalAdapter(self, account)

    def now(self) -> int:
        """L1 time: the clock, read once per transaction (its rules all see that instant)."""
        return self._tx_now if self._tx_now is not None else int(self._clock())

    def advance(self, seconds: int) -> None:
        raise LocalError("a local L1 follows its clock; inject a clock to control time")

    # -- reads (no write lock; each sees one committed snapshot) ----------------------

    def events(self, since: int = 0) -> list[L1Event]:
        rows = self._query(
            "SELECT idx, kind, channel, time, data FROM events WHERE idx >= ? ORDER BY idx",
            (max(since, 0),),
        )
        return [self._event_from_row(*row) for row in rows]

    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        with self._lock:  # not mid-way through another thread's transaction
            return super().channel(channel_id)

    def total_supply(self) -> int:
        """All value on this L1: balances plus what is locked in unsettled channels."""
        with self._lock:
            self._query("BEGIN")  # one snapshot for both queries
            try:
                amounts = self._query("SELECT amount FROM balances")
                channels = self._query(
                    "SELECT id, params, status, state FROM channels WHERE status != ?",
                    (L1ChannelStatus.SETTLED.value,),
                )
            finally:
                self._query("COMMIT")
        locked = sum(sum(self._channel_from_row(*row).deposited) for row in channels)
        return sum(self._amount(amount) for (amount,) in amounts) + locked

    # -- transactions: MemoryL1's rules, each in one SQLite transaction ----------------

    def mint(self, account: bytes, amount: int) -> None:
        with self._transaction():
            super().mint(account, amount)

    def open(self, sender: bytes, params: ChannelParams) -> bytes:
        with self._transaction():
            return super().open(sender, params)

    def deposit(self, sender: bytes, channel_id: bytes, amount: int) -> None:
        with self._transaction():
            super().deposit(sender, channel_id, amount)

    def cooperative_close(self, sender: bytes, update: SignedUpdate) -> tuple[int, int]:
        with self._transaction():
            return super().cooperative_close(sender, update)

    def unilateral_close(
        self, sender: bytes, update: SignedUpdate, reveal: bytes | None = None
    ) -> int:
        with self._transaction():
            return super().unilateral_close(sender, update, reveal)

    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        with self._transaction():
            super().refute(sender, update)

    def force_move(self, sender: bytes, state: bytes, update: SignedUpdate) -> int:
        with self._transaction():
            return super().force_move(sender, state, update)

    def cancel(self, sender: bytes, channel_id: bytes) -> None:
        with self._transaction():
            super().cancel(sender, channel_id)

    def settle(self, sender: bytes, channel_id: bytes) -> tuple[int, int]:
        with self._transaction():
            return super().settle(sender, channel_id)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            if self._tx_now is not None:
                raise LocalError("local L1 transactions do not nest")
            self._query("BEGIN IMMEDIATE")  # the write lock, then the clock
            try:
                self._tx_now = int(self._clock())
                yield
                for cid, (ch, loaded) in self._tx_channels.items():
                    row = self._channel_row(ch)
                    if loaded is None:
                        params = encode(ch.params.to_value())
                        self._query("INSERT INTO channels VALUES (?, ?, ?, ?)", (cid, params, *row))
                    elif row != loaded:
                        sql = "UPDATE channels SET status = ?, state = ? WHERE id = ?"
                        self._query(sql, (*row, cid))
                self._query("COMMIT")  # WAL + synchronous=FULL: durable once this returns
            except BaseException:
                if self._db.in_transaction:  # (unless SQLite has rolled back already)
                    with suppress(sqlite3.Error):  # the file stays whole either way
                        self._db.execute("ROLLBACK")
                raise
            finally:
                self._tx_now = None
                self._tx_channels.clear()

    # -- storage hooks, called by MemoryL1's rules ---------------------------------------

    def _balance_of(self, account: bytes) -> int:
        rows = self._query("SELECT amount FROM balances WHERE account = ?", (account,))
        return self._amount(rows[0][0]) if rows else 0

    def _set_balance(self, account: bytes, amount: int) -> None:
        assert self._tx_now is not None, "balances change only in a transaction"
        self._query(
            "INSERT INTO balances VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET amount = excluded.amount",
            (account, str(amount)),
        )

    def _find(self, channel_id: bytes) -> ChannelRecord | None:
        if channel_id in self._tx_channels:
            return self._tx_channels[channel_id][0]
        sql = "SELECT id, params, status, state FROM channels WHERE id = ?"
        rows = self._query(sql, (channel_id,))
        if not rows:
            return None
        ch = self._channel_from_row(*rows[0])
        if self._tx_now is not None:  # the rules change it in place; written back on commit
            self._tx_channels[channel_id] = (ch, (rows[0][2], rows[0][3]))
        return ch

    def _add(self, channel_id: bytes, ch: ChannelRecord) -> None:
        assert self._tx_now is not None, "channels are added only in a transaction"
        self._tx_channels[channel_id] = (ch, None)

    def _event_count(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(idx) + 1, 0) FROM events")[0][0])

    def _add_event(self, event: L1Event) -> None:
        assert self._tx_now is not None, "events are added only in a transaction"
        e = event
        data = encode(
            [e.seq, e.deadline, None if e.payouts is None else list(e.payouts)]
            + ([] if e.reveal is None else [e.reveal])
        )
        row = (e.index, e.kind.value, e.channel_id, e.time, data)
        self._query("INSERT INTO events VALUES (?, ?, ?, ?, ?)", row)

    # -- rows ------------------------------------------------------------------------

    @staticmethod
    def _channel_row(ch: ChannelRecord) -> tuple[str, bytes]:
        registered = None if ch.registered is None else ch.registered.to_value()
        payouts = None if ch.payouts is None else list(ch.payouts)
        state = [list(ch.deposited), registered, ch.registered_by_force, ch.deadline, payouts]
        return ch.status.value, encode(state)

    def _channel_from_row(
        self, cid: bytes, params: bytes, status: str, state: bytes
    ) -> ChannelRecord:
        try:
            deposited, registered, by_force, deadline, payouts = decode(state)
            return ChannelRecord(
                params=ChannelParams.from_value(decode(params)),
                deposited=list(_pair(deposited)),
                status=L1ChannelStatus(status),
                registered=None if registered is None else SignedUpdate.from_value(registered),
                registered_by_force=by_force is True,
                deadline=None if deadline is None else int(deadline),
                payouts=None if payouts is None else _pair(payouts),
            )
        except _DAMAGE as exc:
            raise self._damaged(f"channel {cid.hex()}", exc) from None

    def _event_from_row(
        self, index: int, kind: str, channel_id: bytes, at: int, data: bytes
    ) -> L1Event:
        try:
            seq, deadline, payouts, *rest = decode(data)
            reveal = rest[0] if len(rest) == 1 and type(rest[0]) is bytes else None
            if len(rest) > 1 or (rest and reveal is None):
                raise ValueError("an event's data is [seq, deadline, payouts, reveal?]")
            return L1Event(
                index=index,
                kind=L1EventKind(kind),
                channel_id=channel_id,
                time=at,
                seq=None if seq is None else int(seq),
                deadline=None if deadline is None else int(deadline),
                payouts=None if payouts is None else _pair(payouts),
                reveal=reveal,
            )
        except _DAMAGE as exc:
            raise self._damaged(f"event {index}", exc) from None

    def _amount(self, text: Any) -> int:
        try:
            return int(text)
        except _DAMAGE as exc:
            raise self._damaged("a balance", exc) from None

    def _damaged(self, what: str, exc: Exception) -> L1Error:
        return L1Error(f"{self._path}: damaged L1 file: {what} does not decode ({exc})")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise L1Error(f"{self._path}: {exc}") from None


def _pair(value: Any) -> tuple[int, int]:
    first, second = value
    if type(first) is not int or type(second) is not int:
        raise TypeError("expected a pair of integers")
    return first, second


class LocalAdapter(MemoryAdapter):
    """One party's client of a :class:`LocalL1`, transacting as ``account``."""

    supports_force_move = True

    def __init__(self, chain: LocalL1, account: bytes) -> None:
        super().__init__(chain, account)
        self.chain: LocalL1 = chain


class LocalL1Plugin(L1Plugin):
    """``--l1 local:PATH``: the local L1 file at ``PATH`` (the ``local`` entry point).

    A node transacts and signs channel updates as its Ed25519 identity; its node id is its
    account. The file's window is the default and the least a node may use. ``l1 init``
    creates the file (and refuses an existing one); ``l1 fund`` is the file's faucet.

    Raises:
        LocalError: ``PATH`` is empty.
    """

    def __init__(self, where: str) -> None:
        if not where:
            raise LocalError(f"a local L1 is local:PATH, not {'local:' + where!r}")
        self.path = Path(where)
        self._chain: LocalL1 | None = None

    def chain(self) -> LocalL1:
        """The L1 file, opened on first use.

        Raises:
            L1Error: no L1 file there (create one with ``bfs-smr l1 init``), or not one.
        """
        if self._chain is None:
            self._chain = LocalL1(self.path)
        return self._chain

    def connect(
        self, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
    ) -> L1Connection:
        chain = self.chain()
        least = int(chain.window)
        if window is not None and window < least:
            raise LocalError(f"this local L1's challenge window is at least {least} s")
        return L1Connection(chain.adapter(identity.public_key), identity, window or least)

    def parse_account(self, text: str) -> bytes:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) != 32:
            raise LocalError(f"a node id is 64 hex digits, got {text!r}")
        return value

    def init(self, *, window: int | None = None, chain_id: str | None = None) -> dict[str, Any]:
        """Create the L1 file; if it exists, report it unchanged (``created`` false), as
        the EVM's ``l1 init`` does, unless it differs from the ``window`` or ``chain_id``
        asked for."""
        created = not Path(self.path).exists()
        if created:
            new_window = DEFAULT_WINDOW if window is None else window
            try:
                self._chain = LocalL1.create(self.path, window=new_window, chain_id=chain_id)
            except L1Error:
                if not Path(self.path).exists():
                    raise
                created = False  # another init made it first
        chain = self.chain()
        if not created and (
            (window is not None and window != chain.window)
            or (chain_id is not None and chain_id != chain.chain_id)
        ):
            raise LocalError(
                f"{self.path} exists already, with a {chain.window} s window and chain id "
                f"{chain.chain_id!r}: give another path for another L1"
            )
        return {"chain_id": chain.chain_id, "window": chain.window, "created": created}

    def balance(self, account: bytes) -> int:
        return self.chain().balance(account)

    def fund(self, account: bytes, amount: int) -> None:
        self.chain().mint(account, amount)
