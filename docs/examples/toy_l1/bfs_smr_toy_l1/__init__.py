"""A toy L1 for bfs-smr: the embedded L1's rules, kept in one JSON file.

``--l1 toy:PATH`` names the file. Every process that opens it (two nodes, the ``bfs-smr
l1`` commands) sees one chain: each transaction takes an exclusive ``flock`` on
``PATH.lock``, reads the whole file, runs :class:`bfs_smr.adapters.memory.MemoryL1`'s
rule, and replaces the file atomically (write a temporary file, fsync, rename). A rule
that refuses (``L1Error``) writes nothing. Time is the wall clock, in whole seconds.

It is a toy: the file is rewritten whole on every transaction, and whoever can write it
is the L1. What it shows is the plug-in: :class:`ToyL1Plugin` is all bfs-smr needs.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bfs_smr.adapters.memory import ChannelRecord, MemoryL1

from bfs_smr import (
    ChannelParams,
    L1ChannelInfo,
    L1ChannelStatus,
    L1Error,
    L1Event,
    L1EventKind,
    LocalError,
    SignedUpdate,
    Signer,
    decode,
    encode,
)
from bfs_smr.plugins import KeyProvider, L1Connection, L1Plugin

__all__ = ["ToyL1", "ToyL1Plugin"]

FORMAT = "bfs-smr-toy-l1/1"


class ToyL1(MemoryL1):
    """The embedded L1's rules on a JSON file that several processes share.

    Raises:
        L1Error: no toy L1 file at ``path``, or not a readable one.
    """

    @classmethod
    def create(cls, path: Path, *, window: int, chain_id: str | None = None) -> ToyL1:
        """Write a new, empty L1 file (refusing an existing one) and open it."""
        if type(window) is not int or window <= 0:
            raise LocalError("window must be a positive integer (seconds)")
        doc = {
            "format": FORMAT,
            "chain_id": chain_id or f"toy-{os.urandom(4).hex()}",
            "window": window,
            "balances": {},
            "channels": {},
            "events": [],
        }
        try:
            with path.open("x") as f:  # of two creators, exactly one wins
                json.dump(doc, f)
        except FileExistsError:
            raise L1Error(f"{path}: exists already") from None
        except OSError as exc:
            raise L1Error(f"{path}: cannot create ({exc.strerror})") from None
        return cls(path)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._mutex = threading.RLock()  # one session at a time per process, too
        self._tx_now: int | None = None
        doc = self._read()
        self.window = int(doc["window"])
        self.chain_id = str(doc["chain_id"])
        super().__init__(chain_id=self.chain_id)
        self._load(doc)

    # -- sessions: lock, read the file, run, write it back ------------------------------

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[None]:
        with self._mutex, self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            self._load(self._read())
            self._tx_now = int(time.time())  # every rule in it sees one instant
            try:
                yield
                if write:
                    self._write()
            finally:
                self._tx_now = None

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise L1Error(f"{self.path}: no toy L1 (bfs-smr l1 init --l1 toy:PATH)") from None
        except (OSError, ValueError) as exc:
            raise L1Error(f"{self.path}: not a toy L1 file ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise L1Error(f"{self.path}: not a toy L1 file")
        return doc

    def _write(self) -> None:
        doc = {
            "format": FORMAT,
            "chain_id": self.chain_id,
            "window": self.window,
            "balances": {a.hex(): amount for a, amount in self._toy_balances.items()},
            "channels": {c.hex(): _record_out(r) for c, r in self._toy_channels.items()},
            "events": [_event_out(e) for e in self._toy_events],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # readers see the old file or the new one, never half

    def _load(self, doc: dict[str, Any]) -> None:
        self._toy_balances = {bytes.fromhex(a): int(n) for a, n in doc["balances"].items()}
        self._toy_channels = {bytes.fromhex(c): _record_in(r) for c, r in doc["channels"].items()}
        self._toy_events = [_event_in(i, e) for i, e in enumerate(doc["events"])]

    # -- MemoryL1's storage hooks, over the loaded document -----------------------------

    def _balance_of(self, account: bytes) -> int:
        return self._toy_balances.get(account, 0)

    def _set_balance(self, account: bytes, amount: int) -> None:
        self._toy_balances[account] = amount

    def _find(self, channel_id: bytes) -> ChannelRecord | None:
        return self._toy_channels.get(channel_id)

    def _add(self, channel_id: bytes, ch: ChannelRecord) -> None:
        self._toy_channels[channel_id] = ch

    def _event_count(self) -> int:
        return len(self._toy_events)

    def _add_event(self, event: L1Event) -> None:
        self._toy_events.append(event)

    # -- time, reads and transactions, each in a session --------------------------------

    def now(self) -> int:
        return self._tx_now if self._tx_now is not None else int(time.time())

    def advance(self, seconds: int) -> None:
        raise LocalError("a toy L1 follows the wall clock")

    def balance(self, account: bytes) -> int:
        with self._session(write=False):
            return super().balance(account)

    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        with self._session(write=False):
            return super().channel(channel_id)

    def events(self, since: int = 0) -> list[L1Event]:
        with self._session(write=False):
            return self._toy_events[max(since, 0) :]

    def mint(self, account: bytes, amount: int) -> None:
        with self._session(write=True):
            super().mint(account, amount)

    def open(self, sender: bytes, params: ChannelParams) -> bytes:
        with self._session(write=True):
            return super().open(sender, params)

    def deposit(self, sender: bytes, channel_id: bytes, amount: int) -> None:
        with self._session(write=True):
            super().deposit(sender, channel_id, amount)

    def cooperative_close(self, sender: bytes, update: SignedUpdate) -> tuple[int, int]:
        with self._session(write=True):
            return super().cooperative_close(sender, update)

    def unilateral_close(
        self, sender: bytes, update: SignedUpdate, reveal: bytes | None = None
    ) -> int:
        with self._session(write=True):
            return super().unilateral_close(sender, update, reveal)

    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        with self._session(write=True):
            super().refute(sender, update)

    def force_move(self, sender: bytes, state: bytes, update: SignedUpdate) -> int:
        with self._session(write=True):
            return super().force_move(sender, state, update)

    def cancel(self, sender: bytes, channel_id: bytes) -> None:
        with self._session(write=True):
            super().cancel(sender, channel_id)

    def settle(self, sender: bytes, channel_id: bytes) -> tuple[int, int]:
        with self._session(write=True):
            return super().settle(sender, channel_id)


def _pair(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _record_out(r: ChannelRecord) -> dict[str, Any]:
    return {
        "params": encode(r.params.to_value()).hex(),
        "deposited": list(r.deposited),
        "status": r.status.value,
        "registered": None if r.registered is None else encode(r.registered.to_value()).hex(),
        "by_force": r.registered_by_force,
        "deadline": r.deadline,
        "payouts": None if r.payouts is None else list(r.payouts),
    }


def _record_in(d: dict[str, Any]) -> ChannelRecord:
    registered = d["registered"]
    return ChannelRecord(
        params=ChannelParams.from_value(decode(bytes.fromhex(d["params"]))),
        deposited=[int(x) for x in d["deposited"]],
        status=L1ChannelStatus(d["status"]),
        registered=None
        if registered is None
        else SignedUpdate.from_value(decode(bytes.fromhex(registered))),
        registered_by_force=d["by_force"] is True,
        deadline=d["deadline"],
        payouts=_pair(d["payouts"]),
    )


def _event_out(e: L1Event) -> dict[str, Any]:
    return {
        "kind": e.kind.value,
        "channel": e.channel_id.hex(),
        "time": e.time,
        "seq": e.seq,
        "deadline": e.deadline,
        "payouts": None if e.payouts is None else list(e.payouts),
        "reveal": None if e.reveal is None else e.reveal.hex(),
    }


def _event_in(index: int, d: dict[str, Any]) -> L1Event:
    return L1Event(
        index=index,
        kind=L1EventKind(d["kind"]),
        channel_id=bytes.fromhex(d["channel"]),
        time=d["time"],
        seq=d["seq"],
        deadline=d["deadline"],
        payouts=_pair(d["payouts"]),
        reveal=None if d.get("reveal") is None else bytes.fromhex(d["reveal"]),
    )


class ToyL1Plugin(L1Plugin):
    """``--l1 toy:PATH``: what the ``toy`` entry point of ``bfs_smr.l1`` returns.

    A node transacts and signs as its Ed25519 identity (the toy verifies Ed25519, like
    the embedded L1), so it needs no second key; its node id is its account.
    """

    def __init__(self, where: str) -> None:
        if not where:
            raise LocalError("a toy L1 is toy:PATH")
        self.path = Path(where)

    def connect(
        self, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
    ) -> L1Connection:
        chain = ToyL1(self.path)
        if window is not None and window < chain.window:
            raise LocalError(f"this toy L1's challenge window is at least {chain.window} s")
        return L1Connection(chain.adapter(identity.public_key), identity, window or chain.window)

    def parse_account(self, text: str) -> bytes:
        try:
            account = bytes.fromhex(text)
        except ValueError:
            account = b""
        if len(account) != 32:
            raise LocalError(f"a toy L1 account is a node id (64 hex digits), got {text!r}")
        return account

    def init(self, *, window: int | None = None, chain_id: str | None = None) -> dict[str, Any]:
        chain = ToyL1.create(self.path, window=window or 60, chain_id=chain_id)
        return {"chain_id": chain.chain_id, "window": chain.window}

    def balance(self, account: bytes) -> int:
        return ToyL1(self.path).balance(account)

    def fund(self, account: bytes, amount: int) -> None:
        ToyL1(self.path).mint(account, amount)
