"""Force moves on the adjudicator, attacked from the other side: what the worst transaction
(or the worst event) costs an honest party that runs the node's L1 policy (docs/evm.md,
"States and force moves"; docs/design.md §5 and docs/design.md §6).
tests/test_evm_force.py has the contract-level refusals; these follow the honest party's
reaction through ``LocalPair.react`` (the node's policy) and its adapter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("web3")

from bfs_smr.adapters.evm import Secp256k1
from bfs_smr.adapters.evm._adapter import (
    _forced_from_event,
    forced_body,
    params_tuple,
    sig_tuple,
)
from eth_utils.crypto import keccak

from bfs_smr import (
    ChannelParams,
    L1ChannelStatus,
    L1Error,
    SignedUpdate,
    Signer,
    encode,
    hash_bytes,
)
from bfs_smr._reaction import Intent
from bfs_smr.runtime import LocalPair
from bfs_smr.runtime._local import evm_pair
from bfs_smr.runtime.store import Store
from bfs_smr.testing._l1scenarios import signed_move as kit_signed_move

WINDOW = 600
_nonce = iter(range(1, 1_000_000))


def game(cells: tuple[int, ...], window: int = WINDOW) -> tuple[Any, LocalPair, list[Any]]:
    """A tic-tac-toe pair on a fresh chain with ``cells`` played and doubly signed; returns
    the chain, the pair and the state after each seq (index = seq)."""
    chain, p = evm_pair("tictactoe", (50, 50), challenge_window=window, nonce=next(_nonce))
    p.open()
    states = [p.alice.chan.state]
    for cell in cells:
        mover = p.app.to_move(p.alice.chan.state)
        assert mover is not None
        p.parties[mover].chan.issue({"cell": cell})
        p.pump()
        states.append(p.alice.chan.state)
    assert p.alice.chan.seq == len(cells)
    return chain, p, states


def encoded(p: LocalPair, state: Any) -> bytes:
    return p.alice.l1.format.encode_state(p.app, state)


def alice_closes_and_forces(p: LocalPair, state: Any) -> tuple[SignedUpdate, SignedUpdate]:
    """Alice (to move) closes on her newest doubly-signed update, whose state is
    ``state``, and forces cell 8 on it; returns that update and her move."""
    base = p.alice.chan.committed
    assert base is not None
    p.alice.l1.unilateral_close(base)
    move = p.alice.chan.force_move({"cell": 8})
    p.alice.l1.force_move(encoded(p, state), move, base)
    return base, move


def settle_after_window(chain: Any, p: LocalPair) -> tuple[int, int]:
    chain.advance(WINDOW + 1)
    p.react(p.alice)
    info = p.l1_view(p.alice)
    assert info is not None and info.payouts is not None
    return info.payouts


# -- findings ---------------------------------------------------------------------------


def test_a_peer_that_posts_my_own_signed_move_as_a_force_move_does_not_strand_me() -> None:
    """Bob (O) asks for his move; Alice proposes it and Bob signs it first, but she never
    signs after him: she closes on the update before it and posts *his* signed move as a
    force move herself (anyone may: it carries his signature, and the base his own). Then
    she answers with her forced move. Bob's node must see his own move as the dispute's
    base and adopt her answer; otherwise it never answers and forfeits the pot at settle,
    though it was never silent."""
    chain, p, states = game((4,))  # X centre: O (Bob) to move
    base = p.bob.chan.committed
    assert base is not None
    p.bob.chan.issue({"cell": 0})
    p.drain(p.bob)
    p.alice.chan.receive(p.alice.inbox.popleft())  # Alice proposes Bob's move ...
    p.drain(p.alice)
    p.bob.chan.receive(p.bob.inbox.popleft())  # ... Bob signs it first ...
    p.drain(p.bob)
    p.alice.inbox.clear()  # ... and Alice withholds her signature
    (signed,) = p.bob.chan.in_flight()
    alice = p.alice.l1
    alice.unilateral_close(base)
    alice.force_move(encoded(p, states[-1]), signed, base)  # Bob's move, sent by Alice
    p.react(p.bob)  # what Bob's node does now
    p.react(p.alice)  # Alice takes the move as her position ...
    a_base, a_state = p.alice.chan.force_base
    answer = p.alice.chan.force_move({"cell": 8})  # ... and answers it
    alice.force_move(encoded(p, a_state), answer, a_base)
    p.react(p.bob)  # Bob adopts the answer (a RemoteViolation here: he cannot)
    b_base, b_state = p.bob.chan.force_base
    assert b_base.seq == answer.seq
    move = p.bob.chan.force_move({"cell": 1})
    p.bob.l1.force_move(encoded(p, b_state), move, b_base)
    assert settle_after_window(chain, p) == (0, 100)  # Alice is silent now: she forfeits


def test_a_sequencer_restarted_after_forcing_its_move_still_answers(tmp_path: Path) -> None:
    """No attacker: Alice forces her in-flight move (Bob never signed it), restarts, and
    Bob answers on L1. Her store keeps the move she signed alone for L1: restored, it is
    the dispute's base, and she adopts Bob's answer on top of it."""
    chain, p = evm_pair(
        "tictactoe",
        (50, 50),
        challenge_window=WINDOW,
        nonce=next(_nonce),
        stores=(Store(tmp_path / "a"), Store(tmp_path / "b")),
    )
    p.open()
    for cell in (4, 0):
        p.parties[p.app.to_move(p.alice.chan.state)].chan.issue({"cell": cell})
        p.pump()
    p.alice.chan.issue({"cell": 8})
    p.drain(p.alice)
    p.bob.inbox.clear()  # Bob never sees her proposal
    p.react(p.alice, Intent(unilateral=True))  # she closes ...
    assert [type(a).__name__ for a in p.react(p.alice)] == ["ForceMove"]  # ... and forces
    p.restart(p.alice)
    p.react(p.bob)  # Bob adopts her move and answers it
    b_base, b_state = p.bob.chan.force_base
    answer = p.bob.chan.force_move({"cell": 2})
    p.bob.l1.force_move(encoded(p, b_state), answer, b_base)
    p.react(p.alice)
    a_base, a_state = p.alice.chan.force_base
    assert a_base == answer
    move = p.alice.chan.force_move({"cell": 1})
    p.alice.l1.force_move(encoded(p, a_state), move, a_base)
    assert settle_after_window(chain, p) == (100, 0)


# -- what held ----------------------------------------------------------------------------


def test_a_stale_close_and_a_force_move_at_the_newest_seq_are_refuted_and_not_replayed() -> None:
    """Bob closes on a stale update (his move) and forces another move at the seq of the
    newest doubly-signed update: Alice's node refutes with it (two signatures beat one);
    Bob's force move, and its Forced fields, then replay to nothing (nor does a stranger's
    call with them), and the settle pays the doubly-signed outcome."""
    chain, p, states = game((4, 0, 8, 2))  # seq 4: X to move
    stale = p.bob.log[3]  # after X8: O (Bob) to move
    assert stale.seq == 3
    bob = p.bob.l1
    bob.unilateral_close(stale)
    other = kit_signed_move(  # O6 instead of the O2 he signed
        p, p.bob, base=stale, state=states[3], actor=1, command={"cell": 6}
    )
    bob.force_move(encoded(p, states[3]), other, stale)
    forced = bob._forced_now(p.params)
    assert forced is not None and forced.seq == 4
    assert [type(a).__name__ for a in p.react(p.alice)] == ["Refute"]
    info = p.l1_view(p.alice)
    assert info is not None and info.forced is None and info.registered_seq == 4
    assert info.deadline == forced.deadline  # the refute keeps the forced move's window
    struct = params_tuple(p.params)
    functions = bob.contract.functions
    replays = {
        "force_move": functions.force_move(
            struct,
            (stale.seq, *stale.update.outcome, stale.update.state_hash, stale.update.entry_hash()),
            sig_tuple(stale.signatures[0]),
            (encoded(p, states[3]), 7, encode({"cell": 6}), sig_tuple(other.signatures[1])),
        ),
        "force_next": functions.force_next(
            struct,
            forced.fields(),
            (encoded(p, states[4]), 8, encode({"cell": 1}), sig_tuple(other.signatures[1])),
        ),
        "settle": functions.settle(struct, forced.fields()),
    }
    stranger = chain.adapter(os.urandom(32))
    chain.mint(stranger.account, 10**17)
    slot = bob._slot(p.params)
    for name, call in replays.items():
        with pytest.raises(L1Error):
            bob.send(call)
        with pytest.raises(L1Error):
            stranger.send(call)
        assert bob._slot(p.params) == slot, name
    newest = p.alice.chan.committed
    assert newest is not None
    assert settle_after_window(chain, p) == newest.update.outcome


def test_a_restarted_adapter_rereads_the_forced_move_and_the_node_answers_it() -> None:
    """Bob's process restarts after Alice forced her move: a fresh adapter (its forced
    moves map empty) finds the move in the logs, and Bob's node adopts and answers it."""
    chain, p, states = game((4, 0))
    _, move = alice_closes_and_forces(p, states[-1])
    fresh = chain.adapter(p.bob.signer._secret)  # the same key, a new process
    fresh.track(p.params)
    p.bob.l1 = fresh
    assert [type(a).__name__ for a in p.react(p.bob)] == ["AdoptForced"]
    b_base, b_state = p.bob.chan.force_base
    assert b_base == move
    answer = p.bob.chan.force_move({"cell": 2})
    fresh.force_move(encoded(p, b_state), answer, b_base)
    assert p.react(p.alice)[0].__class__.__name__ == "AdoptForced"
    assert p.alice.chan.force_base[0] == answer


def test_a_force_move_in_the_windows_last_second_gets_a_full_window() -> None:
    """The longest window (2**32 - 1 s): a move forced in the last second of it registers
    with a whole new window (the deadline still fits 64 bits); a refute at the new deadline
    is too late and a settle then is on time."""
    chain, p, states = game((4, 0), window=(1 << 32) - 1)
    base = p.alice.chan.committed
    assert base is not None
    deadline = p.alice.l1.unilateral_close(base)
    chain.advance(deadline - chain.now() - 1)  # the move's block: the window's last second
    move = p.alice.chan.force_move({"cell": 8})
    new_deadline = p.alice.l1.force_move(encoded(p, states[-1]), move, base)
    moved_at = p.alice.l1.now()
    assert moved_at == deadline - 1 and new_deadline == moved_at + (1 << 32) - 1
    info = p.l1_view(p.bob)
    assert info is not None and info.deadline == new_deadline and info.forced == move
    chain.advance(new_deadline - chain.now())  # the next transactions: at the deadline
    with pytest.raises(L1Error, match="the window has ended"):
        p.alice.l1.refute(base)  # (any refute: the window check comes first)
    assert p.bob.l1.settle(p.params.channel_id) == (100, 0)  # O to move and silent


def test_a_channel_forged_under_the_same_id_cannot_steer_the_honest_adapter() -> None:
    """Mallory opens a channel with the real channel's id and her own two keys (another
    key), closes it and forces a move on it: real ForceMoved events, under the real id. The
    honest adapter drops them; the real channel's view and forced move are untouched."""
    chain, p, states = game((4, 0))
    secrets = (os.urandom(32), os.urandom(32))
    mallory = [chain.adapter(s) for s in secrets]
    signers = [Signer(Secp256k1(), s) for s in secrets]
    for m in mallory:
        chain.mint(m.account, 10**17 + 50)
    fake = ChannelParams(
        l1=p.params.l1,
        participants=(mallory[0].account, mallory[1].account),
        deposits=(50, 50),
        app="tictactoe",
        app_version=1,
        challenge_window=WINDOW,
    )
    struct = (p.params.channel_id, *params_tuple(fake)[1:])  # the real id, her keys
    c = mallory[0].contract
    mallory[0].send(c.functions.open(struct), value=50)
    mallory[1].send(c.functions.deposit(struct), value=50)
    state = states[-1]  # any state: she signs both halves
    state_hash = keccak(encoded(p, state))
    entry = os.urandom(32)
    u = (2, 0, 100, False, keccak(state_hash + entry))
    digest = bytes(c.functions.digest(p.params.channel_id, u).call())
    sigs = [sig_tuple(s.sign(digest)) for s in signers]
    mallory[0].send(c.functions.unilateral_close(struct, u, *sigs, bytes(32)))
    after = p.app.apply(state, {"cell": 8}, 0)
    new_hash = keccak(encoded(p, after))
    out_a = p.app.outcome(after)[0]
    args = {
        "seq": 3,
        "prev_hash": entry,
        "mover": 0,
        "ref": 5,
        "command": encode({"cell": 8}),
        "state_hash": new_hash,
        "out_a": out_a,
    }
    body_hash = hash_bytes(forced_body(p.params, args, out_b=100 - out_a))
    mdigest = bytes(
        c.functions.digest(
            p.params.channel_id, (3, out_a, 100 - out_a, False, keccak(new_hash + body_hash))
        ).call()
    )
    move = (encoded(p, state), 5, encode({"cell": 8}), sig_tuple(signers[0].sign(mdigest)))
    mallory[1].send(c.functions.force_move(struct, (2, 0, 100, state_hash, entry), sigs[1], move))
    kinds = [e.kind.name for e in p.bob.l1.events() if e.channel_id == p.params.channel_id]
    assert "FORCE_MOVED" not in kinds and "CLOSING_STARTED" not in kinds
    info = p.l1_view(p.bob)
    assert info is not None and info.status is L1ChannelStatus.OPEN and info.forced is None
    # and the real channel's dispute runs as if she were not there
    _, real = alice_closes_and_forces(p, state)
    info = p.l1_view(p.bob)
    assert info is not None and info.forced == real


@pytest.mark.parametrize(
    "command",
    [
        "a16463656c6c1808",  # a needless integer head
        "a16463656c6c08ff",  # trailing bytes
        "fb3ff0000000000000",  # a float
        "c11a00000000",  # a tag
        "a2616101616101",  # a duplicate key
        "",  # nothing
        "9f01ff",  # indefinite length
        "f5",  # true: canonical, but no move
        "1bffffffffffffffff",  # the largest integer
    ],
)
def test_an_event_with_a_command_the_app_would_refuse_never_breaks_the_reader(
    command: str,
) -> None:
    """Rules that accept more than their app (a buggy rules contract) make ForceMoved events
    the other node cannot take. Rebuilding such an event never raises (events() would fail
    for every channel): it yields the fields to refute and settle with, and an update only
    if the command is canonical CBOR (the app then refuses it when adopting)."""
    params = ChannelParams(
        l1=b"evm:" + bytes(52),
        participants=(os.urandom(20), os.urandom(20)),
        deposits=(50, 50),
        app="tictactoe",
        app_version=1,
        challenge_window=WINDOW,
    )
    args = {
        "seq": 3,
        "prev_hash": bytes(32),
        "mover": 0,
        "ref": 1,
        "command": bytes.fromhex(command),
        "state_hash": bytes(32),
        "out_a": 100,
        "v": 27,
        "r": bytes(32),
        "s": bytes(32),
    }
    record = _forced_from_event(params, args, 1000)
    assert record.fields()[:3] == (3, 1000 + WINDOW, 100)
    assert record.entry_hash == hash_bytes(forced_body(params, args, out_b=0))
    if record.update is not None:
        assert encode(record.update.update.commands[0].command) == bytes.fromhex(command)
        assert record.update.update.entry_hash() == record.entry_hash


def test_an_adapter_that_read_the_logs_before_tracking_the_channel_still_finds_the_move() -> None:
    """An adapter reads the logs (events(): e.g. a watcher's first pass) and only then is
    told the channel (track: a channel loaded later, a watchtower given it mid-dispute).
    The ForceMoved event it read without the channel's parameters must still serve."""
    chain, p, states = game((4, 0))
    _, move = alice_closes_and_forces(p, states[-1])
    late = chain.adapter(os.urandom(32))
    late.events()
    late.track(p.params)
    info = late.channel(p.params.channel_id)
    assert info.forced == move and info.registered_seq == move.seq
