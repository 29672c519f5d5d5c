"""The embedded L1: a complete in-process Layer 1 that enforces docs/design.md §5 for real.

:class:`MemoryL1` is the chain: accounts with balances, channels with locked deposits, a
controllable clock, an event stream and a transaction counter. Each party talks to it
through its own :class:`MemoryAdapter`, which transacts as that party's account (like a
web3 client bound to one key). Signatures are verified "on chain" with the same Ed25519
scheme and digest the channel protocol signs with; force moves run the app's Python rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bfs_smr import (
    ChannelParams,
    CodecError,
    Ed25519,
    L1Adapter,
    L1ChannelInfo,
    L1ChannelStatus,
    L1Error,
    L1Event,
    L1EventKind,
    L1Format,
    LocalError,
    SignedUpdate,
    StateMachine,
    Update,
    hash_bytes,
)
from bfs_smr._errors import CommandRejected
from bfs_smr.plugins import load_app

__all__ = ["ChannelRecord", "MemoryAdapter", "MemoryFormat", "MemoryL1"]

_DIGEST_TAG = b"bfs-smr/memory-l1/update/v1"


class MemoryFormat(L1Format):
    """Ed25519 over BLAKE2b(tag ‖ domain ‖ canonical update)."""

    def __init__(self, domain: bytes) -> None:
        if not 0 < len(domain) < 256:
            raise LocalError("an L1 domain is 1 to 255 bytes")
        self.domain = domain
        self.scheme = Ed25519()
        self._prefix = _DIGEST_TAG + bytes([len(domain)]) + domain

    def digest(self, update: Update, body: bytes) -> bytes:
        return hash_bytes(self._prefix + body)


@dataclass(slots=True)
class ChannelRecord:
    """What the embedded L1 keeps of one channel; its rules change it in place.

    A subclass that keeps the L1's state elsewhere (:mod:`bfs_smr.adapters.local` keeps it
    in SQLite) stores and rebuilds these through :class:`MemoryL1`'s storage hooks.

    Attributes:
        params: the channel's parameters, as opened.
        deposited: what each participant has locked so far.
        status: where the channel is in its life on L1.
        registered: the update registered by a unilateral close, refute or force move.
        registered_by_force: whether a force move registered it (signed by one party).
        deadline: when the challenge window ends (L1 time), while closing.
        payouts: what was paid out, once settled.
    """

    params: ChannelParams
    deposited: list[int]
    status: L1ChannelStatus
    registered: SignedUpdate | None = None
    registered_by_force: bool = False
    deadline: int | None = None
    payouts: tuple[int, int] | None = None


class MemoryL1:
    """The embedded L1's state.

    Args:
        chain_id: distinguishes this L1 from others (part of every channel id).
        time: the clock's starting value, in seconds. Advance it with :meth:`advance`.
        apps: resolves ``(name, version)`` to an app, for force moves. Default: the
            installed apps.
    """

    def __init__(
        self,
        *,
        chain_id: str = "local",
        time: int = 0,
        apps: Callable[[str, int], StateMachine[Any]] | None = None,
    ) -> None:
        self.format = MemoryFormat(b"memory:" + chain_id.encode())
        self._time = time
        self._apps = apps or load_app
        self._balances: dict[bytes, int] = {}
        self._channels: dict[bytes, ChannelRecord] = {}
        self._events: list[L1Event] = []

    # -- chain administration (not transactions) --------------------------------------

    def mint(self, account: bytes, amount: int) -> None:
        """Credit ``amount`` to ``account`` out of thin air (a test faucet)."""
        if type(amount) is not int or amount < 0:
            raise LocalError("amount must be a non-negative integer")
        self._credit(account, amount)

    def advance(self, seconds: int) -> None:
        """Move the L1 clock forward."""
        if seconds < 0:
            raise LocalError("time only moves forward")
        self._time += seconds

    def now(self) -> int:
        return self._time

    def balance(self, account: bytes) -> int:
        return self._balance_of(account)

    @property
    def transactions(self) -> int:
        """Accepted state-changing transactions (rejected ones change nothing)."""
        return self._event_count()  # each accepted transaction logs exactly one event

    def total_supply(self) -> int:
        """All value on this L1: balances plus what is locked in unsettled channels."""
        locked = sum(
            sum(c.deposited)
            for c in self._channels.values()
            if c.status is not L1ChannelStatus.SETTLED
        )
        return sum(self._balances.values()) + locked

    def adapter(self, account: bytes) -> MemoryAdapter:
        """A client that transacts as ``account`` (a public key)."""
        return MemoryAdapter(self, account)

    def events(self, since: int = 0) -> list[L1Event]:
        return self._events[max(since, 0) :]

    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        ch = self._get(channel_id)
        return L1ChannelInfo(
            channel_id=channel_id,
            status=ch.status,
            # once paid out (settled) or refunded (cancelled) nothing is locked any more
            locked=0 if ch.status is L1ChannelStatus.SETTLED else sum(ch.deposited),
            registered_seq=None if ch.registered is None else ch.registered.seq,
            deadline=ch.deadline,
            payouts=ch.payouts,
            forced=ch.registered if ch.registered_by_force else None,
            deposited=(ch.deposited[0], ch.deposited[1]),
        )

    # -- transactions ------------------------------------------------------------------

    def open(self, sender: bytes, params: ChannelParams) -> bytes:
        if params.l1 != self.format.domain:
            raise L1Error("channel parameters name another L1")
        cid = params.channel_id
        if self._find(cid) is not None:
            raise L1Error("a channel with this id exists already (use a fresh nonce)")
        if sender not in params.participants:
            raise L1Error("only a participant can open the channel")
        if params.locked == 0:  # nothing to pay out: it would only take a channel id
            raise L1Error("a channel must lock some value")
        index = params.participants.index(sender)
        amount = params.deposits[index]
        self._debit(sender, amount)
        deposited = [0, 0]
        deposited[index] = amount
        ch = ChannelRecord(params=params, deposited=deposited, status=L1ChannelStatus.FUNDING)
        if deposited == list(params.deposits):
            ch.status = L1ChannelStatus.OPEN
        self._add(cid, ch)
        self._done(L1EventKind.OPENED, cid)
        return cid

    def deposit(self, sender: bytes, channel_id: bytes, amount: int) -> None:
        ch = self._get(channel_id)
        if ch.status is not L1ChannelStatus.FUNDING:
            raise L1Error(f"channel is {ch.status.value}, not funding")
        if sender not in ch.params.participants:
            raise L1Error("only a participant can deposit")
        index = ch.params.participants.index(sender)
        missing = ch.params.deposits[index] - ch.deposited[index]
        if type(amount) is not int or amount <= 0 or amount > missing:
            raise L1Error(f"deposit must be a positive amount up to the {missing} still due")
        self._debit(sender, amount)
        ch.deposited[index] += amount
        if ch.deposited == list(ch.params.deposits):
            ch.status = L1ChannelStatus.OPEN
        self._done(L1EventKind.DEPOSITED, channel_id)

    def cooperative_close(self, sender: bytes, update: SignedUpdate) -> tuple[int, int]:
        ch = self._get(update.update.channel_id)
        if ch.status not in (L1ChannelStatus.OPEN, L1ChannelStatus.CLOSING):
            raise L1Error(f"channel is {ch.status.value}")
        if not update.update.final:
            raise L1Error("a cooperative close needs a final update")
        self._check_doubly_signed(ch, update)
        self._check_newer(ch, update)
        return self._pay(ch, update.update)

    def unilateral_close(
        self, sender: bytes, update: SignedUpdate, reveal: bytes | None = None
    ) -> int:
        ch = self._get(update.update.channel_id)
        if ch.status is not L1ChannelStatus.OPEN:
            raise L1Error(f"channel is {ch.status.value}, not open")
        self._check_doubly_signed(ch, update)
        shown = self._check_reveal(ch, reveal)
        if update.update.final:  # I8: a doubly-signed final update closes at once
            self._pay(ch, update.update)
            return self.now()
        ch.status = L1ChannelStatus.CLOSING
        ch.registered = update
        ch.registered_by_force = False
        ch.deadline = self.now() + ch.params.challenge_window
        self._done(L1EventKind.CLOSING_STARTED, update.update.channel_id, ch, reveal=shown)
        return ch.deadline

    def _check_reveal(self, ch: ChannelRecord, reveal: bytes | None) -> bytes | None:
        """The watch secret a unilateral close must publish, checked against the channel's
        commitment (``None`` for a channel without one: nothing to publish)."""
        if not ch.params.watch:
            return None
        if (
            type(reveal) is not bytes
            or len(reveal) != 32
            or self.format.watch_commitment(reveal) != ch.params.watch
        ):
            raise L1Error("a unilateral close must reveal the channel's watch secret")
        return reveal

    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        ch = self._get(update.update.channel_id)
        self._check_in_window(ch)
        self._check_doubly_signed(ch, update)
        self._check_newer(ch, update)
        if update.update.final:
            self._pay(ch, update.update)
            return
        ch.registered = update  # the window is not reset: closing cannot be stalled
        ch.registered_by_force = False
        self._done(L1EventKind.REFUTED, update.update.channel_id, ch)

    def force_move(self, sender: bytes, state: bytes, update: SignedUpdate) -> int:
        u = update.update
        ch = self._get(u.channel_id)
        self._check_in_window(ch)
        reg = ch.registered
        assert reg is not None
        params = ch.params
        app = self._apps(params.app, params.app_version)
        try:
            current = app.decode_state(state)
        except (CodecError, ValueError, TypeError) as exc:
            raise L1Error(f"state does not decode: {exc}") from None
        if app.state_hash(current) != reg.update.state_hash:
            raise L1Error("state is not the registered update's state")
        mover = app.to_move(current)
        if mover is None:
            raise L1Error(f"{app.name} has no turns; nothing to force")
        if u.seq != reg.seq + 1 or u.prev_hash != reg.update.entry_hash():
            raise L1Error("a force move must directly follow the registered update")
        if u.app_id != params.app_id or u.final:
            raise L1Error("a force move names the channel's app and is not final")
        if len(u.commands) != 1 or u.commands[0].actor != mover:
            raise L1Error("a force move is exactly one command by the party to move")
        if not update.verify(params, self.format, require=(mover,)):
            raise L1Error("a force move must be signed by the party to move")
        try:
            new = app.apply(current, u.commands[0].command, mover)
        except CommandRejected as exc:
            raise L1Error(f"illegal move: {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - an app tripping on hostile input
            raise L1Error(f"illegal move: malformed command ({type(exc).__name__})") from None
        if app.state_hash(new) != u.state_hash:
            raise L1Error("state hash does not match the move")
        if tuple(app.checked_outcome(new, params)) != u.outcome:
            raise L1Error("outcome does not match the move")
        ch.registered = update
        ch.registered_by_force = True
        ch.deadline = self.now() + params.challenge_window  # the other side gets a window
        self._done(L1EventKind.FORCE_MOVED, u.channel_id, ch)
        return ch.deadline

    def cancel(self, sender: bytes, channel_id: bytes) -> None:
        ch = self._get(channel_id)
        if ch.status is not L1ChannelStatus.FUNDING:
            raise L1Error(
                f"channel is {ch.status.value}; only a channel still funding is cancelled"
            )
        if sender not in ch.params.participants:
            raise L1Error("only a participant can cancel")
        for account, amount in zip(ch.params.participants, ch.deposited, strict=True):
            self._credit(account, amount)
        ch.deposited = [0, 0]
        ch.status = L1ChannelStatus.CANCELLED
        self._done(L1EventKind.CANCELLED, channel_id)

    def settle(self, sender: bytes, channel_id: bytes) -> tuple[int, int]:
        ch = self._get(channel_id)
        if ch.status is not L1ChannelStatus.CLOSING:
            raise L1Error(f"channel is {ch.status.value}, not closing")
        assert ch.deadline is not None and ch.registered is not None
        if (now := self.now()) < ch.deadline:
            raise L1Error(f"the window is still open until {ch.deadline} (now {now})")
        return self._pay(ch, ch.registered.update)

    # -- helpers -----------------------------------------------------------------------

    def _get(self, channel_id: bytes) -> ChannelRecord:
        ch = self._find(channel_id)
        if ch is None:
            raise L1Error("no such channel")
        return ch

    def _debit(self, account: bytes, amount: int) -> None:
        have = self._balance_of(account)
        if amount > have:
            raise L1Error(f"insufficient funds: {amount} needed, {have} unlocked")
        self._set_balance(account, have - amount)

    def _credit(self, account: bytes, amount: int) -> None:
        self._set_balance(account, self._balance_of(account) + amount)

    def _check_doubly_signed(self, ch: ChannelRecord, signed: SignedUpdate) -> None:
        u = signed.update
        if u.app_id != ch.params.app_id:
            raise L1Error("update names another app")
        if u.outcome[0] + u.outcome[1] != sum(ch.deposited):
            raise L1Error("outcome does not pay out exactly the locked value")
        if not signed.verify(ch.params, self.format):
            raise L1Error("update is not signed by both participants")

    def _check_newer(self, ch: ChannelRecord, signed: SignedUpdate) -> None:
        reg = ch.registered
        if reg is None:
            return
        if signed.seq > reg.seq or (signed.seq == reg.seq and ch.registered_by_force):
            return
        raise L1Error(f"seq {signed.seq} is not newer than the registered seq {reg.seq}")

    def _check_in_window(self, ch: ChannelRecord) -> None:
        if ch.status is not L1ChannelStatus.CLOSING:
            raise L1Error(f"channel is {ch.status.value}, not closing")
        assert ch.deadline is not None
        if self.now() >= ch.deadline:
            raise L1Error("the window has ended")

    def _pay(self, ch: ChannelRecord, update: Update) -> tuple[int, int]:
        for account, amount in zip(ch.params.participants, update.outcome, strict=True):
            self._credit(account, amount)
        ch.status = L1ChannelStatus.SETTLED
        ch.payouts = update.outcome
        ch.registered = None
        ch.deadline = None
        self._done(L1EventKind.SETTLED, update.channel_id, ch)
        return update.outcome

    def _done(
        self,
        kind: L1EventKind,
        channel_id: bytes,
        ch: ChannelRecord | None = None,
        *,
        reveal: bytes | None = None,
    ) -> None:
        seq = deadline = payouts = None
        if ch is not None:
            seq = ch.registered.seq if ch.registered is not None else None
            deadline, payouts = ch.deadline, ch.payouts
        self._add_event(
            L1Event(
                index=self._event_count(),
                kind=kind,
                channel_id=channel_id,
                time=self.now(),
                seq=seq,
                deadline=deadline,
                payouts=payouts if kind is L1EventKind.SETTLED else None,
                reveal=reveal,
            )
        )

    # -- storage: what a subclass overrides to keep the state elsewhere (adapters/local) --

    def _balance_of(self, account: bytes) -> int:
        return self._balances.get(account, 0)

    def _set_balance(self, account: bytes, amount: int) -> None:
        self._balances[account] = amount

    def _find(self, channel_id: bytes) -> ChannelRecord | None:  # the rules change it in place
        return self._channels.get(channel_id)

    def _add(self, channel_id: bytes, ch: ChannelRecord) -> None:
        self._channels[channel_id] = ch

    def _event_count(self) -> int:
        return len(self._events)

    def _add_event(self, event: L1Event) -> None:
        self._events.append(event)


class MemoryAdapter(L1Adapter):
    """One party's client of a :class:`MemoryL1`, transacting as ``account``."""

    supports_force_move = True

    def __init__(self, chain: MemoryL1, account: bytes) -> None:
        self.chain = chain
        self.format = chain.format
        self._account = account

    @property
    def account(self) -> bytes:
        return self._account

    def open(self, params: ChannelParams) -> bytes:
        return self.chain.open(self._account, params)

    def deposit(self, channel_id: bytes, amount: int) -> None:
        self.chain.deposit(self._account, channel_id, amount)

    def cooperative_close(self, update: SignedUpdate) -> tuple[int, int]:
        return self.chain.cooperative_close(self._account, update)

    def unilateral_close(self, update: SignedUpdate, reveal: bytes | None = None) -> int:
        return self.chain.unilateral_close(self._account, update, reveal)

    def refute(self, update: SignedUpdate) -> None:
        self.chain.refute(self._account, update)

    def force_move(
        self, state: bytes, update: SignedUpdate, base: SignedUpdate | None = None
    ) -> int:
        return self.chain.force_move(self._account, state, update)

    def cancel(self, channel_id: bytes) -> None:
        self.chain.cancel(self._account, channel_id)

    def settle(self, channel_id: bytes) -> tuple[int, int]:
        return self.chain.settle(self._account, channel_id)

    def channel(self, channel_id: bytes) -> L1ChannelInfo:
        return self.chain.channel(channel_id)

    def events(self, since: int = 0) -> list[L1Event]:
        return self.chain.events(since)

    def now(self) -> int:
        return self.chain.now()

    def balance(self, account: bytes | None = None) -> int:
        return self.chain.balance(self._account if account is None else account)
