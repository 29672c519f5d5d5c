"""Force moves on the adjudicator, attacked: every way a mover (or a stranger) could make the
chain register a move the app's rules or the other party did not allow is refused, and
what the chain registers is exactly the update the Python twin makes (docs/evm.md)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

pytest.importorskip("web3")

from bfs_smr.adapters.evm import DevChain, rules_address
from bfs_smr.adapters.evm._adapter import (
    RULES,
    ForcedRecord,
    params_tuple,
    sig_tuple,
)

from bfs_smr import CommandEntry, L1ChannelStatus, L1Error, SignedUpdate, Update, encode
from bfs_smr.plugins import load_app
from bfs_smr.runtime import LocalPair
from bfs_smr.runtime._local import evm_pair
from bfs_smr.testing._l1scenarios import signed_move as kit_signed_move

WINDOW = 600


@pytest.fixture(scope="module")
def chain() -> DevChain:
    return DevChain.embedded()


_nonce = iter(range(1, 1_000_000))


@pytest.fixture
def pair() -> tuple[Any, LocalPair]:
    chain, pair = evm_pair("tictactoe", (50, 50), challenge_window=WINDOW, nonce=next(_nonce))
    pair.open()
    for cell in (4, 0):  # X centre, O corner: X (Alice) to move
        mover = pair.app.to_move(pair.alice.chan.state)
        assert mover is not None
        pair.parties[mover].chan.issue({"cell": cell})
        pair.pump()
    return chain, pair


def signed_move(
    pair: LocalPair, by: int, base: SignedUpdate, state: Any, cell: int
) -> SignedUpdate:
    """A move ``cell`` on ``state`` (after ``base``) by party ``by``, signed by it alone,
    whatever the app says of it."""
    return kit_signed_move(
        pair, pair.parties[by], base=base, state=state, actor=by, command={"cell": cell}
    )


def closed(pair: LocalPair) -> tuple[SignedUpdate, Any]:
    """Alice closes unilaterally on the newest update; returns it and its state."""
    base, state = pair.alice.chan.committed, pair.alice.chan.state
    assert base is not None
    pair.alice.l1.unilateral_close(base)
    return base, state


def encoded(pair: LocalPair, state: Any) -> bytes:
    return pair.alice.l1.format.encode_state(pair.app, state)


def test_blake2b_on_chain_is_the_frameworks_hash(chain: DevChain) -> None:
    adapter = chain.adapter(os.urandom(32))
    for n in (0, 1, 31, 127, 128, 129, 200, 255, 256, 257, 383, 384):
        data = os.urandom(n)
        got = bytes(adapter.contract.functions.blake2b256(data).call())
        assert got == hashlib.blake2b(data, digest_size=32).digest(), n


def test_the_registered_forced_update_is_the_twins(pair: tuple[Any, LocalPair]) -> None:
    _, p = pair
    base, state = closed(p)
    move = p.alice.chan.force_move({"cell": 8})
    p.alice.l1.force_move(encoded(p, state), move, base)
    info = p.bob.l1.channel(p.params.channel_id)
    assert info.status is L1ChannelStatus.CLOSING and info.registered_seq == move.seq
    assert info.forced == move  # rebuilt from the event: the same bytes, the same signature
    p.bob.chan.adopt_forced_move(info.forced)  # and Bob's channel takes it


def test_a_mover_cannot_build_on_a_base_of_its_own(pair: tuple[Any, LocalPair]) -> None:
    """Alice (to move) signs a fake base at the registered seq with a better state for her;
    the adjudicator wants Bob's signature on the base, so it is refused."""
    _, p = pair
    base, state = closed(p)
    fake_state = ((*state[0][:8], 1), state[1], state[2], state[3])  # an X she never played
    fmt = p.alice.l1.format
    fake = Update(
        channel_id=base.update.channel_id,
        seq=base.seq,
        prev_hash=base.update.prev_hash,
        app_id=base.update.app_id,
        commands=base.update.commands,
        state_hash=fmt.state_hash(p.app, fake_state),
        outcome=base.update.outcome,
    )
    own = p.alice.signer.sign(fmt.digest(fake, fake.body()))
    fake_base = SignedUpdate(fake, (own, own))  # her signature in Bob's place
    move = signed_move(p, 0, fake_base, fake_state, 2)
    with pytest.raises(L1Error, match="the base is not the registered update"):
        p.alice.l1.force_move(encoded(p, fake_state), move, fake_base)


def test_refused_force_moves_change_nothing(pair: tuple[Any, LocalPair]) -> None:
    chain, p = pair
    base, state = closed(p)
    before = p.alice.l1._slot(p.params)
    cases = {
        "the cell is taken": (signed_move(p, 0, base, state, 4), "illegal move"),
        "by the party not to move": (signed_move(p, 1, base, state, 1), "party to move"),
        "another state": (signed_move(p, 0, base, state, 1), "registered update's state"),
    }
    for what, (move, reason) in cases.items():
        given = encoded(p, p.app.initial_state(p.params)) if what == "another state" else None
        with pytest.raises(L1Error, match=reason):
            p.alice.l1.force_move(given or encoded(p, state), move, base)
        assert p.alice.l1._slot(p.params) == before, what
    chain.advance(WINDOW)
    with pytest.raises(L1Error, match="the window has ended"):
        p.alice.l1.force_move(encoded(p, state), signed_move(p, 0, base, state, 1), base)


def test_a_command_the_app_would_not_decode_is_refused(pair: tuple[Any, LocalPair]) -> None:
    """A non-canonical encoding of a legal move ({"cell": 8} with a two-byte integer head)
    must not register: the other node could not rebuild the update to answer it."""
    _, p = pair
    base, state = closed(p)
    adapter = p.alice.l1
    struct = params_tuple(p.params)
    for command in (
        bytes.fromhex("a16463656c6c1808"),  # 8 with a needless one-byte head
        bytes.fromhex("a16463656c6c08ff"),  # trailing garbage
        bytes.fromhex("a16463656c6cf5"),  # true
        encode({"cell": 8, "x": 1}),
    ):
        entry = CommandEntry(0, 9, {"cell": 8})
        move = (encoded(p, state), entry.ref, command, sig_tuple(b"\x01" * 64 + b"\x1b"))
        call = adapter.contract.functions.force_move(
            struct,
            (base.seq, *base.update.outcome, base.update.state_hash, base.update.entry_hash()),
            sig_tuple(base.signatures[1]),
            move,
        )
        with pytest.raises(L1Error, match="illegal move"):
            adapter.send(call)


def test_forced_fields_must_match_the_commitment(pair: tuple[Any, LocalPair]) -> None:
    chain, p = pair
    base, state = closed(p)
    move = p.alice.chan.force_move({"cell": 8})
    p.alice.l1.force_move(encoded(p, state), move, base)
    record = p.bob.l1._forced_now(p.params)
    assert isinstance(record, ForcedRecord)
    struct = params_tuple(p.params)
    functions = p.bob.l1.contract.functions
    for field, value in (("out_a", 37), ("deadline", record.deadline + 10**6)):
        lie = record.fields()
        lie = tuple(
            value if name == field else v
            for name, v in zip(
                ("seq", "deadline", "out_a", "state_hash", "entry_hash"), lie, strict=True
            )
        )
        if field == "out_a":
            chain.advance(WINDOW + 1)  # settle: the window is over
        with pytest.raises(L1Error, match="not the registered forced move"):
            p.bob.l1.send(functions.settle(struct, lie))


def test_an_app_without_rules_cannot_be_forced() -> None:
    assert rules_address(load_app("payments")) is None
    _, p = evm_pair("counter", (10, 10), challenge_window=WINDOW, nonce=next(_nonce))
    p.open()
    assert params_tuple(p.params)[RULES] == "0x" + "00" * 20
    base = p.alice.chan.committed
    assert base is not None
    p.alice.l1.unilateral_close(base)
    with pytest.raises(L1Error, match="no rules contract"):
        p.alice.l1.force_move(b"", base, base)


def test_missing_rules_are_deployed_by_the_party_that_forces() -> None:
    """The key binds the rules' address, not their presence. An opener can open a game on
    a chain without them (straight through the contract; the adapter's open refuses); the
    party about to lose by silence then deploys them (anyone may, through the proxy) and
    forces its move."""
    from bfs_smr.adapters.evm.gas import _forced, _game

    from bfs_smr import ChannelParams

    chain = DevChain.embedded(rules=False)
    secrets = (os.urandom(32), os.urandom(32))
    alice, bob = (chain.adapter(s) for s in secrets)
    for party in (alice, bob):
        chain.mint(party.account, 10**18)
    params = ChannelParams(
        l1=alice.format.domain,
        participants=(alice.account, bob.account),
        deposits=(50, 50),
        app="tictactoe",
        app_version=1,
        challenge_window=WINDOW,
    )
    bob.track(params)
    with pytest.raises(L1Error, match="not deployed"):
        alice.open(params)
    alice.send(alice.contract.functions.open(params_tuple(params)), value=50)
    bob.deposit(params.channel_id, 50)
    log, states = _game(alice, secrets, params, [4, 0])
    bob.unilateral_close(log[-1])
    move, _ = _forced(alice, secrets[0], log[-1].update, states[-1], params=params, cell=8)
    app = load_app("tictactoe")
    alice.force_move(alice.format.encode_state(app, states[-1]), move, log[-1])
    assert bob.channel(params.channel_id).forced == move
