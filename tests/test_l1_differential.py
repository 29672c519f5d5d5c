"""Differential test: the embedded L1 and the EVM adjudicator agree on every action.

Hypothesis draws a channel (payments or tic-tac-toe, deposits, how each party is
funded, whether its params commit to a watch secret), an off-chain history that both
parties really sign (a ``LocalPair`` per L1, driven by the same commands, so both L1s see
updates with the same seq, outcome and final flag), and a list of L1 actions: open,
deposit (the amount due, one unit, one too many, zero; by either party or a stranger),
cancel, cooperative and unilateral close (revealing the watch secret, another one, or
none), refute and settle with any of the signed updates (newer, equal, older, final or
not), time moving on by any amount or to just before, at or after the deadline, and force
moves and answers (legal or not, by the right or wrong party, on the right or a wrong
state; on payments, which has no turns, both refuse them). Each action runs on the
embedded L1 (``adapters/memory.py``) and on the adjudicator on the in-process py-evm
chain, one channel per L1 with its own keys. After every action both L1s must agree on:
accepted or refused (an ``L1Error``; the reasons' words differ and are not compared),
what an accepted call returns (payouts, deadlines), the channel as each L1 shows it
(status, locked value, registered seq, deadline, payouts, whether the registered update
was forced), and every account's balance change (the EVM's fees left out). At the end
both must have logged the same events, the secret each close revealed included.

Time maps 1:1: the embedded L1 starts at 0 and the EVM at a base ``B``, and every
transaction runs at the same offset on both. An EVM transaction is mined in a new block,
one second after the last, so after every action the embedded clock is moved on to the
EVM's next block time; a time step moves both by the same seconds.

Force moves run on both L1s when the EVM adapter has them (``supports_force_move``, as
it does since the adjudicator's force moves); without, force actions are skipped on
both, so both channels stay in step.

``EXAMPLES`` (derandomised, so CI sees the same examples every run) keeps the test at
about half a minute on one core; set ``BFS_SMR_DIFF_EXAMPLES`` to run more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from bfs_smr.adapters.memory import MemoryL1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfs_smr import (
    L1Adapter,
    L1ChannelStatus,
    L1Error,
    L1Format,
    SignedUpdate,
    Signer,
)
from bfs_smr.runtime import LocalPair, load_app
from bfs_smr.testing._l1scenarios import moved, signed_move

evm = pytest.importorskip("bfs_smr.adapters.evm")  # part of the test extra; present in CI

#: Examples per run (each one channel per L1 and up to ~16 actions).
EXAMPLES = int(os.environ.get("BFS_SMR_DIFF_EXAMPLES", "30"))
WINDOW = 100
GAS_MONEY = 10**17
#: A deposit no party is funded for, larger than an EVM party's gas money.
HUGE = 10**18
STRANGER_FUNDS = 50
#: What a close reveals when it reveals the wrong secret (no drawn secret is this one).
WRONG_SECRET = bytes(range(32))
WHO = ("alice", "bob", "stranger")


# -- what is drawn --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    app: str
    deposits: tuple[int, int]
    funds: tuple[int, int]
    #: Off-chain commands in order: (party, command).
    history: tuple[tuple[int, Any], ...]
    #: Both sign a final update after the history.
    final: bool
    actions: tuple[tuple[Any, ...], ...]
    #: The channel's watch secret (each L1 commits to it with its own format), or None.
    watch: bytes | None = None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    app = draw(st.sampled_from(["payments", "tictactoe"]))
    history: list[tuple[int, Any]] = []
    if app == "payments":
        deposits = [draw(st.integers(1, 1_000)), draw(st.integers(0, 1_000))]
        ways = ["exact", "extra", "exact", "extra", "short"]
        funding = [draw(st.sampled_from(ways)) for _ in "ab"]
        funds = []
        for i, how in enumerate(funding):
            if how == "short":  # the party cannot cover its deposit (on either L1)
                deposits[i] = HUGE
            funds.append({"exact": deposits[i], "extra": deposits[i] + 7, "short": 3}[how])
        balances = list(deposits)
        for _ in range(draw(st.integers(0, 5))):
            payer = draw(st.integers(0, 1))
            if balances[payer] == 0:
                payer = 1 - payer
            amount = draw(st.integers(1, balances[payer]))
            balances[payer] -= amount
            balances[1 - payer] += amount
            history.append((payer, {"pay": amount}))
        final = draw(st.booleans())
    else:
        stake = draw(st.integers(1, 100))
        deposits = [stake, stake]
        funds = [stake + draw(st.sampled_from([0, 7])) for _ in "ab"]
        game = load_app("tictactoe")
        board = [0] * 9
        turn = 0
        for _ in range(draw(st.integers(0, 9))):
            state = (tuple(board), turn, stake, stake)
            if game.is_final(state):
                break
            cell = draw(st.sampled_from([c for c in range(9) if board[c] == 0]))
            board[cell] = turn + 1
            history.append((turn, {"cell": cell}))
            turn = 1 - turn
        over = game.is_final((tuple(board), turn, stake, stake))
        final = over and draw(st.booleans())
    # Half the channels commit to a watch secret (any 32 bytes but the wrong one).
    secret = st.binary(min_size=32, max_size=32).filter(WRONG_SECRET.__ne__)
    watch = draw(secret) if draw(st.booleans()) else None
    who = st.integers(0, 2)
    # An update, modulo how many there are; -1, the newest (the final one if signed).
    index = st.one_of(st.just(-1), st.integers(0, 15))
    funding = st.one_of(
        st.tuples(st.just("open"), who),
        st.tuples(st.just("deposit"), who, st.sampled_from(["due", "one", "over", "zero"])),
        st.tuples(st.just("cancel"), who),
    )
    # A unilateral close reveals the watch secret, another one, or none (a channel without
    # a commitment ignores what it is given).
    reveal = st.sampled_from(["right", "wrong", "right", "none"])
    closing = st.one_of(
        st.tuples(st.just("close"), who, index, reveal), st.tuples(st.just("coop"), who, index)
    )
    refute = st.tuples(st.just("refute"), who, index)
    force = st.tuples(
        st.just("force"),
        st.sampled_from([-1, -1, 0, 1]),  # -1: the party to move
        st.one_of(st.just(-1), st.integers(0, 8)),  # -1: the first free cell
        st.sampled_from(["legal", "legal", "stranger", "signer", "state", "actor"]),
    )
    # In the window: refutations, force moves and answers, time passing.
    window = st.one_of(refute, force, force, st.tuples(st.just("advance"), st.integers(1, 60)))
    # Around and after the deadline.
    deadline = st.tuples(st.just("to_deadline"), st.integers(-1, 1))
    ending = st.one_of(
        deadline,
        st.tuples(st.just("advance"), st.integers(1, 2 * WINDOW)),
        st.tuples(st.just("settle"), who),
        refute,
        force,
    )
    # A story more often than not: fund, close, dispute, end; then anything, in any order.
    actions: list[tuple[Any, ...]] = []
    if draw(st.integers(0, 4)) < 4:
        actions += [("open", 0), ("deposit", 1, "due")]
    actions += draw(st.lists(funding, max_size=2))
    actions += draw(st.lists(closing, min_size=1, max_size=2))
    actions += draw(st.lists(window, min_size=1, max_size=6))
    if draw(st.integers(0, 4)) < 4:
        actions += [draw(deadline), ("settle", draw(who))]
    actions += draw(st.lists(st.one_of(funding, closing, window, ending), max_size=3))
    return Scenario(
        app,
        (deposits[0], deposits[1]),
        (funds[0], funds[1]),
        tuple(history),
        final,
        tuple(actions),
        watch,
    )


# -- one L1 and its channel ----------------------------------------------------------------


@dataclass
class Side:
    """One L1 with one channel on it: Alice, Bob, a stranger, and what was signed."""

    name: str
    chain: Any  # a MemoryL1 or a DevChain
    pair: LocalPair
    stranger: L1Adapter
    #: Every doubly-signed update, oldest first, with the state it holds.
    signed: list[tuple[SignedUpdate, Any]] = field(default_factory=list)
    #: The registered update and its state, as the accepted transactions left it.
    registered: tuple[SignedUpdate, Any] | None = None
    start: tuple[int, int, int] = (0, 0, 0)
    #: The L1 time this side's offsets count from.
    base: int = 0
    #: The channel's watch secret, if it commits to one.
    watch: bytes | None = None

    @property
    def adapters(self) -> tuple[L1Adapter, L1Adapter, L1Adapter]:
        return (self.pair.alice.l1, self.pair.bob.l1, self.stranger)

    @property
    def fmt(self) -> L1Format:
        return self.pair.alice.l1.format

    def value(self, who: int) -> int:
        """What account ``who`` (Alice, Bob, the stranger) holds, fees left out."""
        raise NotImplementedError

    def now(self) -> int:
        """The offset the next transaction runs at."""
        raise NotImplementedError

    def advance(self, seconds: int) -> None:
        raise NotImplementedError

    def offset(self, time: int | None) -> int | None:
        """An L1 time as seconds since this side's start."""
        return None if time is None else time - self.base

    def deltas(self) -> tuple[int, ...]:
        return tuple(self.value(i) - self.start[i] for i in range(3))


class MemorySide(Side):
    def value(self, who: int) -> int:
        return int(self.chain.balance(self.adapters[who].account))

    def now(self) -> int:
        return int(self.chain.now()) - self.base

    def advance(self, seconds: int) -> None:
        self.chain.advance(seconds)


class EvmSide(Side):
    """Transactions run in the next block: at its time, one second after the last's."""

    def next_block_time(self) -> int:
        tester = self.chain.w3.provider.ethereum_tester
        return int(tester.get_block_by_number("pending")["timestamp"])

    def value(self, who: int) -> int:
        adapter = self.adapters[who]
        return int(adapter.balance()) + int(adapter.fees_paid)  # type: ignore[attr-defined]

    def now(self) -> int:
        return self.next_block_time() - self.base

    def advance(self, seconds: int) -> None:
        tester = self.chain.w3.provider.ethereum_tester
        tester.time_travel(self.next_block_time() + seconds)


def make_side(name: str, chain: Any, scenario: Scenario) -> Side:
    app = load_app(scenario.app)
    scheme = chain.format.scheme if name == "memory" else evm.Secp256k1()
    secrets = [os.urandom(32) for _ in range(3)]
    signers = [Signer(scheme, secret) for secret in secrets]
    funds = (*scenario.funds, STRANGER_FUNDS)
    adapters: list[L1Adapter] = []
    for signer, secret, amount in zip(signers, secrets, funds, strict=True):
        if name == "memory":
            adapters.append(chain.adapter(signer.public_key))
            chain.mint(signer.public_key, amount)
        else:  # reading logs from now on: the shared chain's earlier blocks are not ours
            first = int(chain.w3.eth.block_number) + 1
            adapters.append(evm.EvmAdapter(chain.w3, chain.address, secret, from_block=first))
            chain.mint(signer.public_key, amount + GAS_MONEY)
    pair = LocalPair(
        app,
        alice=signers[0],
        bob=signers[1],
        alice_l1=adapters[0],
        bob_l1=adapters[1],
        deposits=scenario.deposits,
        challenge_window=WINDOW,
        watch=scenario.watch,
    )
    side = (MemorySide if name == "memory" else EvmSide)(name, chain, pair, adapters[2])
    side.watch = scenario.watch
    for adapter in adapters:
        adapter.track(pair.params)
    side.signed = sign_history(pair, scenario)
    side.start = (side.value(0), side.value(1), side.value(2))
    side.base = side.now()  # offsets count from here on both L1s
    return side


def sign_history(pair: LocalPair, scenario: Scenario) -> list[tuple[SignedUpdate, Any]]:
    """Both parties sign the opening update and one update per command (and a final one)."""
    signed = []

    def record(update: SignedUpdate | None) -> None:
        assert update is not None and not pair.alice.failed and not pair.bob.failed
        signed.append((update, pair.bob.chan.state))

    pair.alice.chan.start()
    pair.bob.chan.start()
    pair.pump()
    record(pair.bob.chan.committed)
    for party, command in scenario.history:
        pair.parties[party].chan.issue(command)
        pair.pump()
        record(pair.bob.chan.committed)
    if scenario.final:
        pair.alice.chan.close()
        pair.pump()
        record(pair.alice.final)
    return signed


# -- actions --------------------------------------------------------------------------------


def force_update(
    side: Side, mover: int, cell: int, variant: str
) -> tuple[int, bytes, SignedUpdate, SignedUpdate, Any]:
    """A move on the registered update (or, with none, the newest signed one) by
    ``mover`` (-1: the party to move), signed by one party alone: legal (posted by the
    mover or a stranger), or signed by the other party, from a wrong state, or by the
    party not to move. Returns the mover,
    the state to post (encoded by the L1's format), the move, the update it builds on,
    and the state after it."""
    pair, fmt = side.pair, side.fmt
    app = pair.app
    base, state = side.registered or side.signed[-1]
    if mover == -1:
        mover = app.to_move(state) or 0
    if cell == -1:  # the first free cell (tic-tac-toe's state starts with its board)
        board = state[0] if pair.params.app == "tictactoe" else ()
        cell = next((c for c, mark in enumerate(board) if mark == 0), 0)
    actor = 1 - mover if variant == "actor" else mover
    command = {"cell": cell}
    signer_index = 1 - mover if variant == "signer" else mover
    signer = pair.parties[signer_index]
    move = signed_move(pair, signer, base=base, state=state, actor=actor, command=command)
    posted = app.initial_state(pair.params) if variant == "state" else state
    after = moved(app, state, actor, command)
    return mover, fmt.encode_state(app, posted), move, base, after


def run(side: Side, action: tuple[Any, ...], due: int) -> Any:
    """Carry out ``action`` on ``side``; returns what the call returned (comparable)."""
    kind = action[0]
    cid = side.pair.params.channel_id
    signed = side.signed
    if kind in ("open", "deposit", "cancel", "coop", "close", "refute", "settle"):
        l1 = side.adapters[action[1]]
    if kind == "open":
        assert l1.open(side.pair.params) == cid
        return None
    if kind == "deposit":
        l1.deposit(cid, due)
        return None
    if kind == "cancel":
        l1.cancel(cid)
        return None
    if kind == "settle":
        payouts = l1.settle(cid)
        side.registered = None
        return payouts
    if kind in ("coop", "close", "refute"):
        update, state = signed[action[2] % len(signed)]
        if kind == "coop":
            payouts = l1.cooperative_close(update)
            side.registered = None
            return payouts
        if kind == "close":
            how = action[3] if len(action) > 3 else "right"
            secret = side.watch or WRONG_SECRET
            reveal = {"right": secret, "wrong": WRONG_SECRET, "none": None}[how]
            deadline = l1.unilateral_close(update, reveal)
            side.registered = None if update.update.final else (update, state)
            return side.offset(deadline)
        l1.refute(update)
        side.registered = None if update.update.final else (update, state)
        return None
    assert kind == "force"
    mover, encoded, move, base, after = force_update(side, *action[1:])
    submitter = side.adapters[2 if action[3] == "stranger" else mover]  # anyone may post it
    deadline = submitter.force_move(encoded, move, base)
    side.registered = (move, after)
    return side.offset(deadline)


def view(side: Side) -> Any:
    """The channel as the L1 shows it, in terms both L1s share."""
    try:
        info = side.pair.alice.l1.channel(side.pair.params.channel_id)
    except L1Error:
        return None
    forced = None if info.forced is None else (info.forced.seq, info.forced.update.outcome)
    return {
        "status": info.status.value,
        "locked": info.locked,
        "seq": info.registered_seq,
        "deadline": side.offset(info.deadline),
        "payouts": info.payouts,
        "forced": forced,
    }


def events(side: Side) -> list[Any]:
    cid = side.pair.params.channel_id
    return [
        (e.kind.value, e.seq, side.offset(e.deadline), e.payouts, e.reveal)
        for e in side.pair.alice.l1.events()
        if e.channel_id == cid
    ]


# -- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def devchain() -> Any:
    chain = evm.DevChain.embedded()
    # Far ahead of the wall clock: each block is then exactly one second after the last.
    chain.advance(10**7)
    return chain


@dataclass
class Outcome:
    accepted: bool
    returned: Any
    channel: Any
    deltas: tuple[int, ...]


def step(side: Side, action: tuple[Any, ...], due: int) -> Outcome:
    try:
        returned = run(side, action, due)
        accepted = True
    except L1Error as exc:
        assert str(exc.reason).strip(), f"{side.name}: refused without a reason"
        returned, accepted = None, False
    return Outcome(accepted, returned, None, ())


def due_amount(memory: Side, action: tuple[Any, ...]) -> int:
    """The deposit an action makes, the same on both L1s."""
    if action[0] != "deposit":
        return 0
    who, how = action[1], action[2]
    if who == 2:
        return 1
    try:
        info = memory.pair.alice.l1.channel(memory.pair.params.channel_id)
        done = info.deposited[who] if info.deposited is not None else 0
    except L1Error:  # not on L1 yet
        done = 0
    missing = memory.pair.params.deposits[who] - done
    return {"due": missing, "one": 1, "over": missing + 1, "zero": 0}[how]


def check(scenario: Scenario, chain: Any, embedded: MemoryL1 | None = None) -> int:
    """Run the scenario on ``embedded`` (default: a new embedded L1) and on the EVM;
    returns how many force actions were skipped (the EVM adapter has no force moves)."""
    memory = make_side("memory", embedded or MemoryL1(), scenario)
    ethereum = make_side("evm", chain, scenario)
    shape = [
        [(u.seq, u.update.outcome, u.update.final) for u, _ in s.signed] for s in (memory, ethereum)
    ]
    assert shape[0] == shape[1], "both channels signed the same history"
    can_force = ethereum.pair.alice.l1.supports_force_move
    skipped = 0
    done: list[tuple[Any, ...]] = []
    for action in scenario.actions:
        if action[0] == "force" and not can_force:
            skipped += 1
            continue
        done.append(action)
        if action[0] in ("advance", "to_deadline"):
            seconds = action[1]
            if action[0] == "to_deadline":  # to one second before, at, or after it
                deadline = (view(memory) or {}).get("deadline")
                seconds = WINDOW if deadline is None else deadline - memory.now() + action[1]
            if seconds > 0:
                memory.advance(seconds)
                ethereum.advance(seconds)
            continue
        due = due_amount(memory, action)
        got = [step(side, action, due) for side in (memory, ethereum)]
        # The EVM mined a block if it took the transaction: the embedded clock follows.
        lag = ethereum.now() - memory.now()
        assert lag >= 0, "the embedded L1's clock ran ahead of the EVM's"
        memory.advance(lag)
        for side, outcome in zip((memory, ethereum), got, strict=True):
            outcome.channel = view(side)
            outcome.deltas = side.deltas()
        assert got[0] == got[1], (
            f"the L1s disagree after {done}:\n  memory: {got[0]}\n  evm:    {got[1]}"
        )
    assert events(memory) == events(ethereum), f"the L1s logged different events after {done}"
    return skipped


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_the_embedded_l1_and_the_evm_agree_on_every_action(
    devchain: Any, scenario: Scenario
) -> None:
    check(scenario, devchain)


#: A dispute walked through every time boundary: each action and what both L1s must do.
BOUNDARIES = (
    ("open", 1),  # Bob opens, Alice funds
    ("deposit", 0, "over"),  # refused
    ("deposit", 0, "one"),
    ("deposit", 2, "one"),  # a stranger: refused
    ("deposit", 0, "due"),
    ("cancel", 0),  # open: refused
    ("coop", 0, 1),  # not final: refused
    ("close", 2, 1),  # a stranger may submit
    ("close", 0, 2),  # a second close: refused
    ("to_deadline", -1),
    ("settle", 1),  # refused: one second left
    ("refute", 1, 1),  # the same seq: refused
    ("refute", 1, 0),  # older: refused
    ("refute", 0, 2),
    ("to_deadline", 0),
    ("refute", 1, 3),  # the window has ended: refused
    ("coop", 1, -1),  # a final update, newer than the registered one: pays at once
    ("settle", 0),  # refused: paid out
)


def test_both_l1s_agree_at_every_time_boundary(devchain: Any) -> None:
    history = ((0, {"pay": 100}), (1, {"pay": 30}), (0, {"pay": 5}))
    scenario = Scenario("payments", (400, 200), (400, 207), history, True, BOUNDARIES)
    check(scenario, devchain)


def test_both_l1s_agree_on_a_forced_game(devchain: Any) -> None:
    history = ((0, {"cell": 4}), (1, {"cell": 0}), (0, {"cell": 8}))
    actions = (
        ("open", 0),
        ("deposit", 1, "due"),
        ("close", 0, 2),  # seq 2: X to move on the registered state
        ("force", 1, 2, "legal"),  # not O's move: refused
        ("force", 0, 2, "signer"),  # signed by O: refused
        ("force", 0, 2, "state"),  # from another state: refused
        ("force", 0, 0, "legal"),  # a taken cell: refused
        ("advance", 40),
        ("force", 0, 2, "legal"),  # a fresh window
        ("refute", 2, 3),  # the doubly-signed update at the same seq beats the forced one
        ("force", 1, 6, "legal"),  # O answers the move both signed
        ("to_deadline", 0),
        ("force", 0, 1, "legal"),  # the window has ended: refused
        ("settle", 2),
    )
    check(Scenario("tictactoe", (30, 30), (30, 30), history, False, actions), devchain)
    # A forced move that wins: nobody moves after it, and it pays the winner.
    history = ((0, {"cell": 0}), (1, {"cell": 3}), (0, {"cell": 1}), (1, {"cell": 4}))
    actions = (
        ("open", 1),
        ("deposit", 0, "due"),
        ("close", 1, -1),  # seq 4: X to move, and X wins at cell 2
        ("force", 0, 2, "stranger"),  # posted by a stranger
        ("force", 1, 5, "legal"),  # the game is over: refused
        ("coop", 0, -1),  # not final: refused
        ("to_deadline", -1),
        ("settle", 1),  # refused: one second left
        ("advance", 1),
        ("settle", 1),
        ("force", 0, 2, "legal"),  # paid out: refused
    )
    check(Scenario("tictactoe", (30, 30), (37, 30), history, False, actions), devchain)


def test_both_l1s_agree_on_a_channel_that_commits_to_a_watch_secret(devchain: Any) -> None:
    history = ((0, {"pay": 100}), (1, {"pay": 30}))
    actions = (
        ("open", 0),
        ("deposit", 1, "due"),
        ("close", 0, 1, "none"),  # refused: the secret is not revealed
        ("close", 2, 1, "wrong"),  # refused: another secret
        ("close", 2, 1, "right"),  # a stranger holding the secret may close
        ("close", 0, 1, "right"),  # a second close: refused
        ("refute", 1, -1),  # the final update pays at once
    )
    for secret in (bytes(range(1, 33)), bytes(32)):  # any 32 bytes, even zeros
        scenario = Scenario("payments", (300, 200), (300, 200), history, True, actions, secret)
        check(scenario, devchain)
    # A final update closes at once, and still only with the secret.
    actions = (("open", 0), ("deposit", 1, "due"), ("close", 1, -1, "none"), ("close", 1, -1))
    secret = bytes(range(32, 64))
    check(Scenario("payments", (900, 9), (900, 9), history[:1], True, actions, secret), devchain)


class LateWindow(MemoryL1):
    """An embedded L1 broken on purpose: a refutation restarts the window."""

    def refute(self, sender: bytes, update: SignedUpdate) -> None:
        ch = self._get(update.update.channel_id)
        super().refute(sender, update)
        if ch.status is L1ChannelStatus.CLOSING:
            ch.deadline = self.now() + ch.params.challenge_window


def test_the_check_catches_an_l1_that_differs(devchain: Any) -> None:
    history = ((0, {"pay": 100}), (1, {"pay": 30}), (0, {"pay": 5}))
    scenario = Scenario("payments", (400, 200), (400, 207), history, True, BOUNDARIES)
    with pytest.raises(AssertionError, match="the L1s disagree after"):
        check(scenario, devchain, LateWindow())


def test_a_paid_out_channel_locks_nothing_on_either_l1(devchain: Any) -> None:
    scenario = Scenario("payments", (10, 5), (10, 5), ((0, {"pay": 3}),), True, ())
    locked = []
    for side in (make_side("memory", MemoryL1(), scenario), make_side("evm", devchain, scenario)):
        params, (alice, bob, _) = side.pair.params, side.adapters
        alice.open(params)
        bob.deposit(params.channel_id, 5)
        assert alice.cooperative_close(side.signed[-1][0]) == (7, 8)
        locked.append(alice.channel(params.channel_id).locked)
    assert locked == [0, 0]
