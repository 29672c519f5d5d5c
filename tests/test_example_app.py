"""The tutorial's example app (docs/examples/bet.py) through a real channel and L1.

docs/ is not a package, so the app is loaded by file path and registered explicitly,
exactly as docs/writing-an-app.md tells third-party authors to do.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bfs_smr.adapters.memory import MemoryL1
from hypothesis import given, settings
from hypothesis import strategies as st

from bfs_smr import (
    ChannelParams,
    CommandEntry,
    CommandRejected,
    L1ChannelStatus,
    LocalError,
    LogVerificationError,
    SignedUpdate,
    StateMachine,
    decode,
    verify_log,
)
from bfs_smr.runtime import LocalPair, available_apps, load_app, memory_pair, register_app
from bfs_smr.testing import check_app

BET_PATH = Path(__file__).resolve().parent.parent / "docs" / "examples" / "bet.py"


def _load_example() -> ModuleType:
    if "bfs_smr_example_bet" in sys.modules:  # loaded once, so there is one Bet class
        return sys.modules["bfs_smr_example_bet"]
    spec = importlib.util.spec_from_file_location("bfs_smr_example_bet", BET_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bet_module = _load_example()
Bet: type[StateMachine[Any]] = bet_module.Bet
register_app(Bet)

QUESTION = "Will it rain in Lisbon on 1 May?"


@dataclass
class World:
    chain: MemoryL1
    pair: LocalPair


def make_world(deposits: tuple[int, int] = (100, 100), window: int = 600) -> World:
    # By name, through the registry, as the CLI and the L1 find apps.
    chain, pair = memory_pair("bet", deposits, challenge_window=window)
    pair.open()
    return World(chain, pair)


def params(deposits: tuple[int, int] = (100, 100)) -> ChannelParams:
    return ChannelParams(
        l1=b"test",
        participants=(b"a" * 32, b"b" * 32),
        deposits=deposits,
        app="bet",
        app_version=1,
    )


# -- registration -----------------------------------------------------------------------


def test_registered_app_is_found_by_name() -> None:
    assert available_apps()["bet"] is Bet
    app = load_app("bet", 1)
    assert type(app) is Bet
    assert app.app_id == "bet/1"
    with pytest.raises(LocalError):
        load_app("bet", 2)


# -- the app alone --------------------------------------------------------------------------


def test_initial_state_and_outcome() -> None:
    app = Bet()
    state = app.initial_state(params((70, 30)))
    assert state == (70, 30, 0, None)
    assert app.checked_outcome(state, params((70, 30))) == (70, 30)
    with pytest.raises(CommandRejected):
        app.initial_state(replace(params(), options={"odds": 2}))


#: Commands Bet must refuse in its initial state; check_app also tries each as a hostile
#: command in every state.
MALFORMED: list[Any] = [
    None,
    [],
    "propose",
    {},
    {"propose": QUESTION},
    {"propose": QUESTION, "stake": 10, "extra": 1},
    {"propose": "", "stake": 10},
    {"propose": "x" * 141, "stake": 10},
    {"propose": "tab\there", "stake": 10},
    {"propose": "escape \x1b[2J", "stake": 10},
    {"propose": "c1 \x85", "stake": 10},
    {"propose": b"bytes", "stake": 10},
    {"propose": QUESTION, "stake": 0},
    {"propose": QUESTION, "stake": -5},
    {"propose": QUESTION, "stake": True},
    {"propose": QUESTION, "stake": "10"},
    {"propose": QUESTION, "stake": 101},  # more than either balance
    {"accept": 1},  # no bet open
    {"report": 1, "yes": True},
    {"withdraw": 1},
    {"accept": 1, "withdraw": 1},
]


@pytest.mark.parametrize("command", MALFORMED)
def test_malformed_or_illegal_commands_are_rejected(command: Any) -> None:
    app = Bet()
    state = app.initial_state(params())
    with pytest.raises(CommandRejected):
        app.apply(state, command, 0)


def test_passes_the_app_conformance_kit() -> None:
    final = check_app(
        Bet(),
        params((100, 60)),
        [
            (0, {"propose": QUESTION, "stake": 40}),
            (0, {"accept": 1}),  # rejected: not your own bet
            (1, {"accept": 1}),
            (0, {"report": 1, "yes": True}),
            (1, {"report": 1, "yes": True}),
            (1, {"propose": "Again?", "stake": 20}),
            (1, {"withdraw": 2}),
        ],
        hostile=MALFORMED,
    )
    assert final == (140, 20, 2, None)


def test_stake_is_bounded_by_the_poorer_party() -> None:
    app = Bet()
    state = app.initial_state(params((100, 20)))
    with pytest.raises(CommandRejected, match="exceeds"):
        app.apply(state, {"propose": QUESTION, "stake": 21}, 0)
    assert app.apply(state, {"propose": QUESTION, "stake": 20}, 0)[0] == 80


def test_rules_of_an_open_bet() -> None:
    app = Bet()
    state = app.apply(app.initial_state(params()), {"propose": QUESTION, "stake": 10}, 0)
    assert state == (90, 100, 1, (0, 10, QUESTION, False, (None, None)))
    for command, actor in [
        ({"propose": "another?", "stake": 1}, 1),  # one bet at a time
        ({"accept": 1}, 0),  # not your own
        ({"accept": True}, 1),  # bool is not a bet number
        ({"accept": 2}, 1),  # wrong bet
        ({"withdraw": 1}, 1),  # only the proposer
        ({"report": 1, "yes": True}, 0),  # not accepted yet
    ]:
        with pytest.raises(CommandRejected):
            app.apply(state, command, actor)
    accepted = app.apply(state, {"accept": 1}, 1)
    assert app.outcome(accepted) == (100, 100)  # undecided: both stakes refunded
    for command, actor in [
        ({"accept": 1}, 1),
        ({"withdraw": 1}, 0),
        ({"report": 1, "yes": 1}, 0),
        ({"report": 1, "yes": None}, 0),
    ]:
        with pytest.raises(CommandRejected):
            app.apply(accepted, command, actor)
    reported = app.apply(accepted, {"report": 1, "yes": True}, 0)
    with pytest.raises(CommandRejected, match="once"):
        app.apply(reported, {"report": 1, "yes": True}, 0)
    assert app.apply(reported, {"report": 1, "yes": True}, 1) == (110, 90, 1, None)
    assert app.apply(reported, {"report": 1, "yes": False}, 1) == (100, 100, 1, None)


def test_accept_cannot_be_moved_onto_a_replacement_bet() -> None:
    # The sequencer orders the follower's requests. Bob asks to accept bet 1 (stake 10);
    # if Alice sequences "withdraw 1, propose 90" first, Bob's accept must not apply.
    app = Bet()
    state = app.apply(app.initial_state(params()), {"propose": QUESTION, "stake": 10}, 0)
    state = app.apply(state, {"withdraw": 1}, 0)
    state = app.apply(state, {"propose": QUESTION, "stake": 90}, 0)
    with pytest.raises(CommandRejected, match="not open"):
        app.apply(state, {"accept": 1}, 1)


def test_may_close_only_without_an_open_bet() -> None:
    app = Bet()
    state = app.initial_state(params())
    assert app.may_close(state)
    assert not app.may_close(app.apply(state, {"propose": QUESTION, "stake": 1}, 1))


_amounts = st.one_of(st.integers(-2, 120), st.booleans(), st.none(), st.text(max_size=2))
_commands = st.one_of(
    st.builds(lambda q, s: {"propose": q, "stake": s}, st.text(max_size=3), _amounts),
    st.builds(lambda n: {"accept": n}, _amounts),
    st.builds(lambda n: {"withdraw": n}, _amounts),
    st.builds(lambda n, y: {"report": n, "yes": y}, _amounts, _amounts),
    st.builds(lambda n: {"report": n}, _amounts),
)


@settings(max_examples=300, deadline=None)
@given(
    deposits=st.tuples(st.integers(0, 100), st.integers(0, 100)),
    steps=st.lists(st.tuples(st.integers(0, 1), _commands), max_size=30),
)
def test_any_command_sequence_conserves_value_and_round_trips(
    deposits: tuple[int, int], steps: list[tuple[int, Any]]
) -> None:
    app = Bet()
    p = params(deposits)
    state = app.initial_state(p)
    for actor, command in steps:
        try:
            state = app.apply(state, command, actor)
        except CommandRejected:
            continue
        assert min(state[0], state[1]) >= 0
        app.checked_outcome(state, p)  # raises InternalError unless it pays p.locked
        assert app.decode_state(app.encode_state(state)) == state


# -- through a real channel over the embedded L1 --------------------------------------------


def test_bet_through_a_channel_and_cooperative_close() -> None:
    world = make_world((100, 100))
    pair, chain = world.pair, world.chain
    alice, bob = pair.alice, pair.bob
    cid = pair.params.channel_id
    assert chain.channel(cid).status is L1ChannelStatus.OPEN
    assert chain.balance(alice.signer.public_key) == chain.balance(bob.signer.public_key) == 0

    # Bob (the follower) proposes; his command travels as a request to Alice.
    bob.chan.issue({"propose": QUESTION, "stake": 30})
    pair.pump()
    proposed = (100, 70, 1, (1, 30, QUESTION, False, (None, None)))
    assert alice.chan.state == bob.chan.state == proposed

    # Rejected locally: the app refuses, nothing is signed or sent, nothing changes.
    seq = alice.chan.seq
    for command in ({"accept": 2}, {"accept": True}, {"propose": QUESTION, "stake": 1}):
        with pytest.raises(CommandRejected):
            alice.chan.issue(command)
    with pytest.raises(CommandRejected, match="only the other party"):
        bob.chan.issue({"accept": 1})
    assert alice.chan.effects() == [] and bob.chan.effects() == []
    assert alice.chan.seq == bob.chan.seq == seq

    # A race: Alice accepts while Bob, not yet seeing it, withdraws. Alice sequences her
    # accept first, so Bob's withdraw is denied and fails at Bob with the app's reason.
    alice.chan.issue({"accept": 1})
    withdraw_ref = bob.chan.issue({"withdraw": 1})
    pair.pump()
    assert [(f.ref, "withdraw" in f.reason) for f in bob.failed] == [(withdraw_ref, True)]
    assert alice.chan.state == bob.chan.state == (70, 70, 1, (1, 30, QUESTION, True, (None, None)))

    # Mid-bet, neither side can close cooperatively (may_close).
    with pytest.raises(LocalError, match="cooperative close"):
        alice.chan.close()
    bob.chan.close()
    pair.pump()
    assert len(bob.failed) == 2 and "cooperative close" in bob.failed[1].reason
    assert alice.final is None and bob.final is None

    # Both report "no": Alice, who took the other side, wins the pot of 60.
    alice.chan.issue({"report": 1, "yes": False})
    bob.chan.issue({"report": 1, "yes": False})
    pair.pump()
    assert alice.chan.state == bob.chan.state == (130, 70, 1, None)

    # Second bet: the reports conflict, so the bet is void and both stakes come back.
    alice.chan.issue({"propose": "Is the moon made of cheese?", "stake": 50})
    pair.pump()
    bob.chan.issue({"accept": 2})
    pair.pump()
    alice.chan.issue({"report": 2, "yes": True})
    bob.chan.issue({"report": 2, "yes": False})
    pair.pump()
    assert alice.chan.state == bob.chan.state == (130, 70, 2, None)

    # Every command each party saw committed, in the same order at both.
    seen = [(c.actor, c.command) for c in bob.committed]
    assert seen == [(c.actor, c.command) for c in alice.committed]
    assert [a for a, _ in seen] == [1, 0, 0, 1, 0, 1, 0, 1]

    payouts = pair.close_cooperatively(by=bob)
    assert payouts == (130, 70)
    info = chain.channel(cid)
    assert info.status is L1ChannelStatus.SETTLED and info.payouts == (130, 70)
    assert chain.balance(alice.signer.public_key) == 130
    assert chain.balance(bob.signer.public_key) == 70
    assert chain.transactions == 3  # open, Bob's deposit, cooperative close
    assert chain.total_supply() == 200

    # Both logs are the same doubly-signed chain and replay to the final state.
    assert alice.log == bob.log
    assert alice.log[-1].update.final
    for party in pair.parties:
        final_state = verify_log(pair.params, pair.app, party.l1.format, party.log)
        assert final_state == (130, 70, 2, None)


def test_unilateral_close_mid_bet_refunds_the_stakes() -> None:
    world = make_world((100, 100), window=600)
    pair, chain = world.pair, world.chain
    pair.alice.chan.issue({"propose": QUESTION, "stake": 40})
    pair.pump()
    pair.bob.chan.issue({"accept": 1})
    pair.pump()
    pair.alice.chan.issue({"report": 1, "yes": True})  # Alice claims the win ...
    pair.pump()
    latest = pair.bob.chan.committed
    assert latest is not None and latest.update.outcome == (100, 100)
    # ... Bob never reports and closes on L1: the undecided bet is refunded.
    pair.bob.l1.unilateral_close(latest)
    chain.advance(600)
    assert pair.alice.l1.settle(pair.params.channel_id) == (100, 100)
    assert chain.balance(pair.alice.signer.public_key) == 100
    assert chain.balance(pair.bob.signer.public_key) == 100


def _tampered(log: list[SignedUpdate], index: int) -> list[SignedUpdate]:
    entry = log[index]
    (command,) = entry.update.commands
    forged = CommandEntry(command.actor, command.ref, {"propose": QUESTION, "stake": 99})
    out = list(log)
    out[index] = SignedUpdate(replace(entry.update, commands=(forged,)), entry.signatures)
    return out


def test_log_verification_catches_tampering() -> None:
    world = make_world()
    pair = world.pair
    pair.bob.chan.issue({"propose": QUESTION, "stake": 5})
    pair.pump()
    log = pair.alice.log
    fmt = pair.alice.l1.format
    proposed = (100, 95, 1, (1, 5, QUESTION, False, (None, None)))
    assert verify_log(pair.params, pair.app, fmt, log) == proposed
    with pytest.raises(LogVerificationError) as info:
        verify_log(pair.params, pair.app, fmt, _tampered(log, 1))
    assert info.value.seq == 1
    with pytest.raises(LogVerificationError):
        verify_log(pair.params, pair.app, fmt, log[1:])
    encoded = pair.app.encode_state(pair.alice.chan.state)
    assert pair.app.state_from_value(decode(encoded)) == pair.alice.chan.state


def test_the_documented_check_app_call_runs() -> None:
    """The example of docs/writing-an-app.md, section "Checking an app", runs on Bet."""
    text = (BET_PATH.parent.parent / "writing-an-app.md").read_text(encoding="utf-8")
    _, _, section = text.partition("\n## Checking an app\n")
    section, _, _ = section.partition("\n## ")
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {"Bet": Bet}
    exec(block, namespace)
