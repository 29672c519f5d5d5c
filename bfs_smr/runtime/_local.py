"""Driving two channel parties in one process over an embedded L1.

:class:`LocalPair` is the smallest real runtime: it carries out both parties' effects in
order, delivers each party's messages to the other as bytes, keeps each party's log of
doubly-signed updates, and talks to the L1 through each party's own adapter. The demos,
the benchmark and many tests use it; tests that play an adversary drive
:class:`bfs_smr.Channel` objects directly instead.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._channel import Channel
from bfs_smr._crypto import Signer
from bfs_smr._errors import L1Error, LocalError
from bfs_smr._l1 import L1Adapter, L1ChannelInfo
from bfs_smr._limits import ChannelLimits
from bfs_smr._messages import (
    ChannelFinalized,
    CommandCommitted,
    CommandFailed,
    PersistUpdate,
    SendMessage,
    ServeLog,
)
from bfs_smr._reaction import (
    AdoptForced,
    Cancel,
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
from bfs_smr.adapters.memory import MemoryL1
from bfs_smr.plugins import load_app
from bfs_smr.runtime.store import Store

__all__ = ["LocalPair", "Party", "evm_pair", "memory_pair"]


@dataclass(eq=False)
class Party:
    """One side of a :class:`LocalPair` and what it has seen."""

    name: str
    signer: Signer
    l1: L1Adapter
    channel: Channel | None = None
    keep_log: bool = True
    log: list[SignedUpdate] = field(default_factory=list)
    inbox: deque[bytes] = field(default_factory=deque)
    committed: list[CommandCommitted] = field(default_factory=list)
    failed: list[CommandFailed] = field(default_factory=list)
    final: SignedUpdate | None = None
    commits: int = 0
    store: Store | None = None
    key: int = 0

    @property
    def chan(self) -> Channel:
        assert self.channel is not None, "channel not created yet"
        return self.channel


class LocalPair:
    """Alice (participant 0, the sequencer) and Bob (participant 1) in one process.

    Args:
        app: the app instance both run.
        alice_l1, bob_l1: each party's adapter to the same L1 (built by the caller, e.g.
            ``MemoryL1().adapter(key)``); see :meth:`new_signers` for keys.
        alice, bob: the parties' signers (their public keys must be the adapters' accounts).
        deposits: what each locks.
        options: app options.
        challenge_window: L1 window in seconds.
        keep_log: keep every doubly-signed update (for verification); off for benchmarks.
        stores: durable stores for Alice and Bob; every step is then made durable
            before anything of it is sent or reported (write-ahead, group commit).
        watch: a 32-byte watch secret the channel commits to (its parameters' ``watch``);
            a unilateral close then reveals it (docs/watchtower.md). None: no commitment.
    """

    def __init__(
        self,
        app: StateMachine[Any],
        *,
        alice: Signer,
        bob: Signer,
        alice_l1: L1Adapter,
        bob_l1: L1Adapter,
        deposits: tuple[int, int],
        options: dict[str, Any] | None = None,
        challenge_window: int = 3_600,
        nonce: int = 0,
        keep_log: bool = True,
        limits: ChannelLimits = ChannelLimits(),
        stores: tuple[Store, Store] | None = None,
        watch: bytes | None = None,
    ) -> None:
        self.app = app
        self.watch = watch
        self.params = ChannelParams(
            l1=alice_l1.format.domain,
            participants=(alice.public_key, bob.public_key),
            deposits=deposits,
            app=app.name,
            app_version=app.version,
            options=options or {},
            nonce=nonce,
            challenge_window=challenge_window,
            watch=b"" if watch is None else alice_l1.format.watch_commitment(watch),
        )
        self.alice = Party("alice", alice, alice_l1, keep_log=keep_log)
        self.bob = Party("bob", bob, bob_l1, keep_log=keep_log)
        self.limits = limits
        for i, party in enumerate((self.alice, self.bob)):
            party.channel = Channel(self.params, app, party.l1.format, party.signer, limits=limits)
            if stores is not None:
                party.store = stores[i]
                party.key = stores[i].add_channel(self.params)
        self.silenced: set[str] = set()

    @staticmethod
    def new_signers(scheme: Any) -> tuple[Signer, Signer]:
        """Two fresh random keys under ``scheme``."""
        return Signer(scheme, os.urandom(32)), Signer(scheme, os.urandom(32))

    @property
    def parties(self) -> tuple[Party, Party]:
        return (self.alice, self.bob)

    def peer(self, party: Party) -> Party:
        return self.bob if party is self.alice else self.alice

    # -- driving ----------------------------------------------------------------------

    def drain(self, party: Party) -> None:
        """Carry out ``party``'s effects in order."""
        peer = self.peer(party)
        effects = party.chan.effects()
        if party.store is not None and effects:
            party.store.persist(party.key, effects, party.chan)  # before any of it is carried out
        for effect in effects:
            kind = type(effect)
            if kind is SendMessage:
                if party.name not in self.silenced:
                    peer.inbox.append(effect.data)  # type: ignore[union-attr]
            elif kind is PersistUpdate:
                if effect.committed and party.keep_log:  # type: ignore[union-attr]
                    party.log.append(effect.update)  # type: ignore[union-attr]
            elif kind is CommandCommitted:
                party.commits += 1
                if party.keep_log:
                    party.committed.append(effect)  # type: ignore[arg-type]
            elif kind is CommandFailed:
                party.failed.append(effect)  # type: ignore[arg-type]
            elif kind is ChannelFinalized:
                party.final = effect.update  # type: ignore[union-attr]
            elif kind is ServeLog:
                first, last = effect.first_seq, effect.last_seq  # type: ignore[union-attr]
                if party.store is not None:
                    entries = party.store.log_range(self.params.channel_id, first, last)
                else:
                    entries = party.log[first : last + 1]
                party.chan.serve_log(entries)
                self.drain(party)  # the entries go out before this step's later messages

    def pump(self) -> None:
        """Deliver messages both ways until neither party has anything to say."""
        alice, bob = self.alice, self.bob
        self.drain(alice)
        self.drain(bob)
        while alice.inbox or bob.inbox:
            while bob.inbox:
                data = bob.inbox.popleft()
                if bob.name not in self.silenced:
                    bob.chan.receive(data)
            self.drain(bob)
            while alice.inbox:
                data = alice.inbox.popleft()
                if alice.name not in self.silenced:
                    alice.chan.receive(data)
            self.drain(alice)
            self.drain(bob)

    def restart(self, party: Party) -> None:
        """Simulate a crash and restart of ``party``: what was in flight to it is lost,
        and its channel is rebuilt from its durable store alone."""
        assert party.store is not None, "restart needs a durable store"
        party.store.close()
        party.store = Store(party.store.dir, keep_log=party.store.keep_log)
        party.inbox.clear()
        party.channel = party.store.load(
            self.params.channel_id, self.app, party.l1.format, party.signer, limits=self.limits
        )

    def resync(self) -> None:
        """Both parties (re)connect: exchange HELLOs and catch up."""
        self.alice.chan.resync()
        self.bob.chan.resync()
        self.pump()

    def open(self) -> None:
        """Sign the opening update both ways, then fund the channel on L1: each party
        does what the L1 policy says (Alice opens, Bob deposits his share)."""
        self.alice.chan.start()
        self.bob.chan.start()
        self.pump()
        self.react(self.alice)
        self.react(self.bob)

    def close_cooperatively(self, by: Party | None = None) -> tuple[int, int]:
        """Agree on a final update and have ``by`` (default Alice) submit it."""
        closer = by or self.alice
        closer.chan.close()
        self.pump()
        if closer.final is None:
            raise RuntimeError("the final update was not doubly signed")
        self.react(closer, Intent(close=True))
        info = self.l1_view(closer)
        assert info is not None and info.payouts is not None, "the close was not paid out"
        return info.payouts

    # -- the L1 -----------------------------------------------------------------------

    def l1_view(self, party: Party) -> L1ChannelInfo | None:
        """The channel as ``party``'s L1 shows it now (None: not on L1)."""
        try:
            return party.l1.channel(self.params.channel_id)
        except L1Error:
            return None

    def react(self, party: Party, intent: Intent | None = None) -> list[L1Action]:
        """Do on L1 what the L1 policy (the node's) says ``party`` must do now, from the
        channel's view read fresh; returns the actions carried out.

        Raises:
            L1Error: the L1 refused an action.
        """
        chan = party.chan
        facts = channel_facts(chan, can_force=party.l1.supports_force_move)
        # (final_age None: a pair submits a final update only when asked to)
        l1 = party.l1
        view = self.l1_view(party)
        actions = react(facts, view, l1.now(), intent or Intent())
        cid = self.params.channel_id
        for action in actions:
            if isinstance(action, Open):
                l1.open(self.params)
            elif isinstance(action, Deposit):
                l1.deposit(cid, action.amount)
            elif isinstance(action, CloseCooperatively):
                l1.cooperative_close(action.update)
            elif isinstance(action, CloseUnilaterally):
                l1.unilateral_close(action.update, self.watch)
            elif isinstance(action, Refute):
                l1.refute(action.update)
            elif isinstance(action, Settle):
                l1.settle(cid)
            elif isinstance(action, Cancel):
                l1.cancel(cid)
            elif isinstance(action, ForceMove):
                pending = chan.pending_force
                if pending is not None:  # signed already: posted again
                    move, base_state, base = pending
                else:
                    base, base_state = chan.force_base
                    move = chan.force_move()
                    self.drain(party)  # a new signature is durable before it goes to L1
                l1.force_move(chan.format.encode_state(chan.app, base_state), move, base)
            else:
                assert isinstance(action, AdoptForced)
                chan.adopt_forced_move(action.update)
        return actions


def memory_pair(
    app: str | StateMachine[Any],
    deposits: tuple[int, int],
    *,
    chain: MemoryL1 | None = None,
    alice: Signer | None = None,
    bob: Signer | None = None,
    options: dict[str, Any] | None = None,
    challenge_window: int = 3_600,
    nonce: int = 0,
    keep_log: bool = True,
    limits: ChannelLimits = ChannelLimits(),
    stores: tuple[Store, Store] | None = None,
    watch: bytes | None = None,
) -> tuple[MemoryL1, LocalPair]:
    """Alice and Bob on an embedded L1, each minted exactly their deposit, not yet open.

    Args:
        app: an app instance, or the name of an installed or registered app.
        deposits: what each party will lock.
        chain: the L1 to use (default: a new one).
        alice, bob: the parties' keys (default: fresh random Ed25519 keys).
        options, challenge_window, nonce, keep_log, limits, stores, watch: as for
            :class:`LocalPair`.
    """
    chain = chain or MemoryL1()
    fresh_alice, fresh_bob = LocalPair.new_signers(chain.format.scheme)
    alice, bob = alice or fresh_alice, bob or fresh_bob
    chain.mint(alice.public_key, deposits[0])
    chain.mint(bob.public_key, deposits[1])
    pair = LocalPair(
        load_app(app) if isinstance(app, str) else app,
        alice=alice,
        bob=bob,
        alice_l1=chain.adapter(alice.public_key),
        bob_l1=chain.adapter(bob.public_key),
        deposits=deposits,
        options=options,
        challenge_window=challenge_window,
        nonce=nonce,
        keep_log=keep_log,
        limits=limits,
        stores=stores,
        watch=watch,
    )
    return chain, pair


def evm_pair(
    app: str | StateMachine[Any],
    deposits: tuple[int, int],
    *,
    rpc: str | None = None,
    alice_secret: bytes | None = None,
    options: dict[str, Any] | None = None,
    challenge_window: int = 3_600,
    nonce: int = 0,
    keep_log: bool = True,
    limits: ChannelLimits = ChannelLimits(),
    stores: tuple[Store, Store] | None = None,
    watch: bytes | None = None,
) -> tuple[Any, LocalPair]:
    """Alice and Bob on the EVM adjudicator, funded with their deposits and gas, not open.

    Args:
        rpc: a node's URL (e.g. anvil); default: a fresh in-process py-evm chain.
        alice_secret: Alice's private key (default: a fresh one).
        options, challenge_window, nonce, keep_log, limits, stores, watch: as for
            :class:`LocalPair`.

    Returns:
        ``(chain, pair)`` where ``chain`` is an ``bfs_smr.adapters.evm.DevChain``.

    Raises:
        LocalError: the ``evm`` extra is not installed.
    """
    try:
        from bfs_smr.adapters.evm import DevChain, Secp256k1
    except ImportError:
        raise LocalError("the EVM L1 needs the evm extra: pip install 'bfs-smr[evm]'") from None
    chain = DevChain.rpc(rpc) if rpc else DevChain.embedded()
    secrets = (alice_secret or os.urandom(32), os.urandom(32))
    signers = [Signer(Secp256k1(), s) for s in secrets]
    adapters = [chain.adapter(s) for s in secrets]
    gas_money = 10**17
    for signer, deposit, adapter in zip(signers, deposits, adapters, strict=True):
        if adapter.balance() < deposit + gas_money:
            chain.mint(signer.public_key, deposit + gas_money)
    pair = LocalPair(
        load_app(app) if isinstance(app, str) else app,
        alice=signers[0],
        bob=signers[1],
        alice_l1=adapters[0],
        bob_l1=adapters[1],
        deposits=deposits,
        options=options,
        challenge_window=challenge_window,
        nonce=nonce,
        keep_log=keep_log,
        limits=limits,
        stores=stores,
        watch=watch,
    )
    for adapter in adapters:
        adapter.track(pair.params)  # the other party learns the channel's parameters too
    return chain, pair
