"""Random interleavings of both parties' commands and messages (I1, I3, I4, I6, I8).

Both parties issue commands at arbitrary moments; each message is delivered one at a time,
FIFO per direction (as over TCP), with the two directions and new commands interleaved
arbitrarily by Hypothesis. After every step no two different updates are doubly signed at
one sequence number, each party has signed at most one update per sequence number (read
off the signatures that actually left it), and the two logs never fork. At the end, after
everything is delivered and the channel closed, both replicas agree, both logs verify,
every outcome conserves the locked value, every command issued was committed or failed
exactly once, and the embedded L1 pays out exactly the final outcome.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

import pytest
from bfs_smr.adapters.memory import MemoryL1
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bfs_smr import (
    Channel,
    ChannelFinalized,
    ChannelLimits,
    ChannelOpened,
    ChannelParams,
    CommandCommitted,
    CommandFailed,
    CommandRejected,
    Ed25519,
    L1ChannelStatus,
    LocalError,
    PersistUpdate,
    Phase,
    RemoteViolation,
    SendMessage,
    SignedUpdate,
    Signer,
    Update,
    verify_log,
)
from bfs_smr._limits import MAX_IN_FLIGHT
from bfs_smr._messages import Accept, Commit, Propose, Signed, parse_message
from bfs_smr.runtime import load_app

ALICE, BOB = 0, 1
WINDOW = 50

#: Enough for every proposal of a run to be in flight at once: the sequencer never queues.
UNBOUNDED = 10_000


class Interleavings(RuleBasedStateMachine):
    """Alice (sequencer) and Bob (follower) over a MemoryL1, driven in random order."""

    APP = "payments"
    #: the sequencer's pipelining window and batch size, drawn per run from these
    IN_FLIGHT: tuple[int, ...] = (1, 2, 3, MAX_IN_FLIGHT)
    BATCH: tuple[int, ...] = (1, 2, 3)
    #: how many commands may wait for a window slot (beyond: "busy" denials, local errors)
    QUEUE: tuple[int, ...] = (2, UNBOUNDED)
    MAX_AMOUNT = 30

    def __init__(self) -> None:
        super().__init__()
        self.wire: dict[int, deque[bytes]] = {ALICE: deque(), BOB: deque()}  # to party i
        self.broken = False

    # -- set-up -----------------------------------------------------------------------

    @initialize(
        # an L1 refuses a channel that locks nothing
        deposits=st.tuples(st.integers(0, 100), st.integers(0, 100)).filter(any),
        # Indices, resolved against the (sub)class's IN_FLIGHT, BATCH and QUEUE choices.
        max_in_flight=st.integers(0, 5),
        max_batch=st.integers(0, 5),
        max_queue=st.integers(0, 5),
        ending=st.sampled_from(["cooperative", "settle", "refute"]),
        closer=st.sampled_from([ALICE, BOB]),
    )
    def setup(self, *, deposits, max_in_flight, max_batch, max_queue, ending, closer):
        self.max_in_flight = self.IN_FLIGHT[max_in_flight % len(self.IN_FLIGHT)]
        self.max_batch = self.BATCH[max_batch % len(self.BATCH)]
        self.max_queue = self.QUEUE[max_queue % len(self.QUEUE)]
        self.ending, self.closer = ending, closer
        with self.step():
            self._setup(deposits)

    def _setup(self, deposits):
        self.app = load_app(self.APP)
        self.chain = MemoryL1()
        self.signers = (Signer(Ed25519(), os.urandom(32)), Signer(Ed25519(), os.urandom(32)))
        self.keys = tuple(s.public_key for s in self.signers)
        for key, amount in zip(self.keys, deposits, strict=True):
            self.chain.mint(key, amount)
        self.params = ChannelParams(
            l1=self.chain.format.domain,
            participants=self.keys,
            deposits=deposits,
            app=self.app.name,
            app_version=self.app.version,
            challenge_window=WINDOW,
        )
        self.fmt = self.chain.format
        self.ch = tuple(
            Channel(
                self.params,
                self.app,
                self.fmt,
                signer,
                limits=ChannelLimits(self.max_in_flight, self.max_batch, self.max_queue),
            )
            for signer in self.signers
        )
        # What each party issued (ref -> command) and what became of each ref.
        self.issued: dict[int, dict[int, Any]] = {ALICE: {}, BOB: {}}
        self.batches: list[list[int]] = []  # the sequencer's batches (their refs)
        self.fate: dict[int, dict[int, list[str]]] = {
            ALICE: defaultdict(list),
            BOB: defaultdict(list),
        }
        # Every CommandCommitted each party reported, in order.
        self.commits: dict[int, list[tuple[int, int, int, Any]]] = {ALICE: [], BOB: []}
        # Doubly-signed updates each party persisted, in order (its log).
        self.logs: dict[int, list[SignedUpdate]] = {ALICE: [], BOB: []}
        # Signatures that left each party: seq -> digests it signed.
        self.signed: dict[int, dict[int, set[bytes]]] = {
            ALICE: defaultdict(set),
            BOB: defaultdict(set),
        }
        # Every update Alice proposed: seq -> {digest: update}.
        self.proposed: dict[int, dict[bytes, Update]] = defaultdict(dict)
        # Doubly-signed updates anywhere: seq -> update bodies.
        self.doubly: dict[int, set[bytes]] = defaultdict(set)
        self.finals: dict[int, SignedUpdate] = {}
        self.funded = False
        self.supply = self.chain.total_supply()
        # The opening update (seq 0) is signed and funded first; from then on, everything
        # is interleaved at random.
        self.ch[ALICE].start()
        self.ch[BOB].start()
        self.drain(ALICE)
        self.drain(BOB)
        self.quiesce()
        assert self.funded and self.ch[ALICE].seq == self.ch[BOB].seq == 0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Marks the machine broken if a step raises, so teardown does not pile on."""
        self.broken = True
        yield
        self.broken = False

    def command(self, n: int) -> Any:
        return {"pay": n}

    # -- carrying out effects, recording what left each party ----------------------------

    def digest(self, update: Update) -> bytes:
        return self.fmt.digest(update, update.body())

    def drain(self, who: int) -> None:
        for effect in self.ch[who].effects():
            if isinstance(effect, SendMessage):
                self.record_sent(who, effect.data)
                self.wire[1 - who].append(effect.data)
            elif isinstance(effect, PersistUpdate):
                signed = effect.update
                assert signed.verify(self.params, self.fmt, require=(who,))
                if effect.committed:
                    assert signed.verify(self.params, self.fmt), "committed without 2 sigs"
                    self.logs[who].append(signed)
                    self.doubly[signed.seq].add(signed.update.body())
                    assert sum(signed.update.outcome) == self.params.locked  # I4
            elif isinstance(effect, CommandCommitted):
                self.commits[who].append((effect.seq, effect.actor, effect.ref, effect.command))
                assert effect.local == (effect.actor == who)
                if effect.local:
                    assert self.issued[who].get(effect.ref) == effect.command
                    self.fate[who][effect.ref].append("committed")
            elif isinstance(effect, CommandFailed):
                self.fate[who][effect.ref].append("failed")
            elif isinstance(effect, ChannelOpened):
                if who == ALICE and not self.funded:
                    self.fund()
            elif isinstance(effect, ChannelFinalized):
                assert who not in self.finals
                self.finals[who] = effect.update

    def record_sent(self, who: int, data: bytes) -> None:
        msg = parse_message(data)
        key = self.keys[who]
        if isinstance(msg, Propose):
            # Unsigned: the follower signs first. The tag is Alice's alone.
            assert who == ALICE
            d = self.digest(msg.update)
            assert self.signers[ALICE].check_tag(d, msg.tag)
            assert sum(msg.update.outcome) == self.params.locked  # I4, even unsigned
            self.proposed[msg.update.seq][d] = msg.update
        elif isinstance(msg, Accept | Signed):
            assert who == BOB
            seq = msg.seq if isinstance(msg, Accept) else msg.update.seq
            candidates = self.proposed[seq]
            matching = [d for d in candidates if self.fmt.scheme.verify(key, d, msg.signature)]
            assert len(matching) == 1, "Bob signed something Alice never proposed"
            self.signed[who][seq].add(matching[0])
        elif isinstance(msg, Commit):
            # Alice signs only what Bob signed first.
            assert who == ALICE
            matching = [
                d for d in self.proposed[msg.seq] if self.fmt.scheme.verify(key, d, msg.signature)
            ]
            assert len(matching) == 1, "Alice signed something she never proposed"
            assert matching[0] in self.signed[BOB][msg.seq], "Alice signed before Bob"
            self.signed[who][msg.seq].add(matching[0])

    def fund(self) -> None:
        """The opening update is doubly signed: lock the deposits on L1."""
        self.funded = True
        self.chain.open(self.keys[ALICE], self.params)
        if self.params.deposits[BOB]:
            self.chain.deposit(self.keys[BOB], self.params.channel_id, self.params.deposits[BOB])
        assert self.chain.channel(self.params.channel_id).status is L1ChannelStatus.OPEN

    def deliver(self, to: int) -> None:
        data = self.wire[to].popleft()
        try:
            self.ch[to].receive(data)  # both are honest: nothing is ever refused
        except RemoteViolation as exc:
            raise AssertionError(f"honest message refused by party {to}: {exc}") from exc
        self.drain(to)

    # -- rules --------------------------------------------------------------------------

    @rule(who=st.sampled_from([ALICE, BOB]), n=st.integers(1, MAX_AMOUNT))
    def issue(self, who, n):
        with self.step():
            ch = self.ch[who]
            command = self.command(n)
            if ch.phase is not Phase.OPEN:
                with pytest.raises(LocalError):
                    ch.issue(command)
            else:
                try:
                    ref = ch.issue(command)
                except CommandRejected:
                    assert ch.effects() == []
                except LocalError:  # only the sequencer's own queue can be full
                    assert who == ALICE and ch.pending >= self.max_queue
                    assert ch.effects() == []
                else:
                    assert ref not in self.issued[who]
                    self.issued[who][ref] = command
            self.drain(who)

    @rule(
        who=st.sampled_from([ALICE, BOB]),
        amounts=st.lists(st.integers(1, MAX_AMOUNT), min_size=1, max_size=5),
    )
    def issue_batch(self, who, amounts):
        """A caller's batch: all its commands committed (in one update at the sequencer)
        or none issued."""
        with self.step():
            ch = self.ch[who]
            commands = [self.command(n) for n in amounts]
            if ch.phase is not Phase.OPEN:
                with pytest.raises(LocalError):
                    ch.issue_batch(commands)
                return
            try:
                refs = ch.issue_batch(commands)
            except CommandRejected:
                assert ch.effects() == []
            except LocalError:
                assert who == ALICE and ch.pending + len(commands) > self.max_queue
                assert ch.effects() == []
            else:
                assert len(refs) == len(commands)
                for ref, command in zip(refs, commands, strict=True):
                    assert ref not in self.issued[who]
                    self.issued[who][ref] = command
                if who == ALICE:
                    self.batches.append(refs)
            self.drain(who)

    @rule(
        commands=st.lists(
            st.tuples(st.sampled_from([ALICE, BOB]), st.integers(1, MAX_AMOUNT)), max_size=6
        )
    )
    def issue_many(self, commands):
        for who, n in commands:
            self.issue(who, n)

    @precondition(lambda self: self.wire[BOB])
    @rule()
    def deliver_to_bob(self):
        with self.step():
            self.deliver(BOB)

    @precondition(lambda self: self.wire[ALICE])
    @rule()
    def deliver_to_alice(self):
        with self.step():
            self.deliver(ALICE)

    @precondition(lambda self: self.wire[ALICE] or self.wire[BOB])
    @rule(to=st.sampled_from([ALICE, BOB]), count=st.integers(1, 8))
    def deliver_burst(self, to, count):
        with self.step():
            for _ in range(count):
                if self.wire[to]:
                    self.deliver(to)

    @rule(who=st.sampled_from([ALICE, BOB]), roll=st.integers(0, 40))
    def close(self, who, roll):
        if roll != 20:  # closing ends the interesting part of a run: keep it rare
            return
        with self.step():
            ch = self.ch[who]
            if ch.phase in (Phase.OPEN, Phase.CLOSING):
                ch.close()
            else:
                with pytest.raises(LocalError):
                    ch.close()
            self.drain(who)

    # -- invariants after every step ---------------------------------------------------

    @invariant()
    def no_fork(self):
        if self.broken or not hasattr(self, "ch"):
            return
        with self.step():
            for seq, bodies in self.doubly.items():
                assert len(bodies) == 1, f"two different doubly-signed updates at seq {seq}"
            for who in (ALICE, BOB):
                for seq, digests in self.signed[who].items():
                    assert len(digests) == 1, f"party {who} signed twice at seq {seq}"
                for ref, fate in self.fate[who].items():
                    assert len(fate) == 1, f"party {who}'s ref {ref} resolved {fate}"
            short, long = sorted((self.logs[ALICE], self.logs[BOB]), key=len)
            assert long[: len(short)] == short, "the two logs diverge"
            # Bob commits only what Alice signed after him (COMMIT).
            assert self.ch[BOB].seq <= self.ch[ALICE].seq

    # -- the end: deliver everything, close, settle on L1 ------------------------------

    def quiesce(self) -> None:
        while self.wire[ALICE] or self.wire[BOB]:
            for to in (BOB, ALICE):
                if self.wire[to]:
                    self.deliver(to)
        self.no_fork()

    def teardown(self):
        if self.broken or not hasattr(self, "ch"):
            return  # a step already failed (or set-up never ran): report that, not this
        self.quiesce()
        alice, bob = self.ch
        assert alice.committed == bob.committed and alice.state == bob.state
        assert alice.pending == bob.pending == 0, "a command is stuck"
        assert self.funded
        if bob.phase is not Phase.CLOSED:
            assert alice.phase is bob.phase is Phase.OPEN
            self.ch[self.closer].close()
            self.drain(self.closer)
            self.quiesce()
        assert alice.phase is bob.phase is Phase.CLOSED
        final = self.finals[ALICE]
        assert self.finals[BOB] == final == alice.committed == bob.committed
        assert final.update.final and not final.update.commands
        self.check_logs(final)
        self.check_commands()
        self.check_l1(final)

    def check_logs(self, final: SignedUpdate) -> None:
        assert self.logs[ALICE] == self.logs[BOB]
        log = self.logs[ALICE]
        assert [s.seq for s in log] == list(range(len(log))) and log[-1] == final
        for who in (ALICE, BOB):
            state = verify_log(self.params, self.app, self.fmt, self.logs[who])
            assert state == self.ch[who].state
        assert sorted(self.doubly) == list(range(len(log)))
        for signed in log:
            assert sum(signed.update.outcome) == self.params.locked

    def check_commands(self) -> None:
        assert self.commits[ALICE] == self.commits[BOB], "parties report different commits"
        committed_in_log = [
            (s.seq, e.actor, e.ref, e.command) for s in self.logs[ALICE] for e in s.update.commands
        ]
        assert self.commits[ALICE] == committed_in_log
        for who in (ALICE, BOB):
            for ref in self.issued[who]:
                assert len(self.fate[who][ref]) == 1, f"party {who}'s ref {ref}: never resolved"
            for ref, fate in self.fate[who].items():
                if ref not in self.issued[who]:  # a close request's ref
                    assert fate == ["failed"] and who == BOB
        assert all(f == ["committed"] for f in self.fate[ALICE].values())  # the sequencer's
        # A batch of the sequencer's own is one update: its commands together, in order.
        ours = [(seq, ref) for seq, actor, ref, _ in self.commits[ALICE] if actor == ALICE]
        for refs in self.batches:
            at = [seq for seq, ref in ours if ref in refs]
            assert len(at) == len(refs) and len(set(at)) == 1, f"batch {refs} split: {at}"
            seq = at[0]
            in_update = [r for s_, r in ours if s_ == seq]
            start = in_update.index(refs[0])
            assert in_update[start : start + len(refs)] == refs, "a batch out of order"

    def check_l1(self, final: SignedUpdate) -> None:
        chain, cid = self.chain, self.params.channel_id
        log = self.logs[self.closer]
        newest = log[-2]  # the newest non-final update: same outcome as the final one
        assert newest.update.outcome == final.update.outcome
        closer, other = self.keys[self.closer], self.keys[1 - self.closer]
        if self.ending == "cooperative":
            paid = chain.cooperative_close(closer, final)
        elif self.ending == "settle":
            deadline = chain.unilateral_close(closer, newest)
            chain.advance(deadline - chain.now())
            paid = chain.settle(other, cid)
        else:  # the other party registers the oldest state, the closer refutes it
            stale = log[0]
            deadline = chain.unilateral_close(other, stale)
            if newest.seq > stale.seq:
                chain.refute(closer, newest)
            chain.advance(deadline - chain.now())
            paid = chain.settle(closer, cid)
        assert paid == final.update.outcome
        info = chain.channel(cid)
        assert info.status is L1ChannelStatus.SETTLED and info.payouts == paid
        assert (chain.balance(self.keys[ALICE]), chain.balance(self.keys[BOB])) == paid
        assert chain.total_supply() == self.supply == self.params.locked


class CounterInterleavings(Interleavings):
    """Counter increments from both sides (never refused by the app)."""

    APP = "counter"

    def command(self, n: int) -> Any:
        return {"inc": n}

    def teardown(self):
        if not self.broken and hasattr(self, "ch"):
            self.quiesce()
            total = sum(cmd["inc"] for _, _, _, cmd in self.commits[BOB])
            assert self.ch[ALICE].state[0] == self.ch[BOB].state[0] == total
        super().teardown()


SETTINGS = settings(
    max_examples=80,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_payments_from_both_sides_in_any_interleaving():
    run_state_machine_as_test(Interleavings, settings=SETTINGS)


def test_counter_increments_pipelined_and_batched_in_any_interleaving():
    run_state_machine_as_test(CounterInterleavings, settings=SETTINGS)


def test_a_denial_may_overtake_an_earlier_queued_request():
    """Regression: an honest follower must take a denial that overtakes an earlier request.

    The sequencer denies a request at once, while an earlier request it accepted can wait
    in its queue for a free slot in the pipelining window: the Denied then reaches the
    follower before the Propose that carries the earlier request (FIFO per direction).
    """
    app = load_app("payments")
    chain = MemoryL1()
    a, b = Signer(Ed25519(), os.urandom(32)), Signer(Ed25519(), os.urandom(32))
    params = ChannelParams(
        l1=chain.format.domain,
        participants=(a.public_key, b.public_key),
        deposits=(100, 50),
        app=app.name,
        app_version=app.version,
    )
    alice, bob = (
        Channel(params, app, chain.format, s, limits=ChannelLimits(1, 1, 100_000)) for s in (a, b)
    )
    bob_effects: list[Any] = []

    def sent(ch: Channel) -> list[bytes]:
        effects = ch.effects()
        if ch is bob:
            bob_effects.extend(effects)
        return [e.data for e in effects if isinstance(e, SendMessage)]

    alice.start()
    for m in sent(alice):
        bob.receive(m)
    for m in sent(bob):
        alice.receive(m)
    for m in sent(alice):
        bob.receive(m)  # Alice's COMMIT: the channel is open at Bob too
    alice.issue({"pay": 1})  # seq 1 in flight: Alice's window (1) is full
    to_bob = sent(alice)
    bob.issue({"pay": 40})  # ref 1: fine against Bob's 50
    bob.issue({"pay": 40})  # ref 2: also fine against Bob's committed 50 (early check)
    for m in sent(bob):
        alice.receive(m)  # ref 1 waits behind seq 1; ref 2 overdraws Alice's tip: denied
    to_bob += sent(alice)
    assert [type(parse_message(m)).__name__ for m in to_bob] == ["Propose", "Denied"]
    while to_bob:  # FIFO: seq 1, then the denial of ref 2 while ref 1 is still pending
        bob.receive(to_bob.pop(0))
        for m in sent(bob):
            alice.receive(m)  # Bob's Accept frees Alice's window: ref 1 is proposed
        to_bob += sent(alice)
    assert [e.ref for e in bob_effects if isinstance(e, CommandFailed)] == [2]
    mine = [e.ref for e in bob_effects if isinstance(e, CommandCommitted) and e.local]
    assert mine == [1]
    assert alice.state == bob.state == (100 - 1 + 40, 50 + 1 - 40)
    assert alice.committed == bob.committed and alice.pending == bob.pending == 0
