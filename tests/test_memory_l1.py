"""The embedded L1 enforces docs/design.md §5 for real."""

import pytest
from conftest import make_pair

from bfs_smr import L1ChannelStatus, L1Error, L1EventKind, PersistUpdate
from bfs_smr._messages import Accept, encode_message
from tests.hostile import shared_reference_bomb


def opened(app="payments", deposits=(1_000, 0), **kw):
    chain, pair = make_pair(app, deposits, **kw)
    pair.open()
    return chain, pair


def test_open_locks_the_deposit_and_counts_one_transaction():
    chain, pair = opened()
    a = pair.params.participants[0]
    assert chain.balance(a) == 0
    info = chain.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.OPEN and info.locked == 1_000
    assert chain.transactions == 1
    assert [e.kind for e in chain.events()] == [L1EventKind.OPENED]


def test_two_sided_funding_opens_after_the_second_deposit():
    chain, pair = make_pair("payments", (10, 20))
    pair.alice.chan.start()
    pair.pump()
    cid = pair.alice.l1.open(pair.params)
    assert chain.channel(cid).status is L1ChannelStatus.FUNDING
    with pytest.raises(L1Error, match="up to the 20"):
        pair.bob.l1.deposit(cid, 21)
    pair.bob.l1.deposit(cid, 20)
    assert chain.channel(cid).status is L1ChannelStatus.OPEN
    assert chain.transactions == 2


def test_cannot_open_the_same_channel_twice_or_on_another_l1():
    chain, pair = opened()
    chain.mint(pair.params.participants[0], 1_000)
    with pytest.raises(L1Error, match="exists"):
        pair.alice.l1.open(pair.params)
    from bfs_smr.adapters.memory import MemoryL1

    other = MemoryL1(chain_id="other")
    other.mint(pair.params.participants[0], 1_000)
    with pytest.raises(L1Error, match="another L1"):
        other.adapter(pair.params.participants[0]).open(pair.params)


def test_cannot_lock_value_one_does_not_have():
    chain, pair = make_pair("payments", (10, 0))
    chain._balances[pair.params.participants[0]] = 9
    with pytest.raises(L1Error, match="insufficient"):
        pair.alice.l1.open(pair.params)
    assert chain.transactions == 0


def test_a_channel_that_locks_nothing_is_refused_as_on_the_evm():
    chain, pair = make_pair("payments", (0, 0))
    with pytest.raises(L1Error, match="must lock some value"):
        pair.alice.l1.open(pair.params)
    assert chain.transactions == 0


def test_a_settled_channel_locks_nothing():
    chain, pair = opened()
    assert chain.channel(pair.params.channel_id).locked == 1_000
    pair.close_cooperatively()
    info = chain.channel(pair.params.channel_id)
    assert info.status is L1ChannelStatus.SETTLED and info.locked == 0


def test_cooperative_close_pays_at_once_and_only_once():
    chain, pair = opened()
    pair.alice.chan.issue({"pay": 300})
    pair.pump()
    payouts = pair.close_cooperatively()
    assert payouts == (700, 300)
    a, b = pair.params.participants
    assert (chain.balance(a), chain.balance(b)) == (700, 300)
    assert chain.transactions == 2
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.cooperative_close(pair.bob.final)
    assert (chain.balance(a), chain.balance(b)) == (700, 300)


def test_cooperative_close_needs_a_final_update():
    _chain, pair = opened()
    with pytest.raises(L1Error, match="final"):
        pair.alice.l1.cooperative_close(pair.alice.chan.committed)


def test_unilateral_close_window_refute_settle():
    chain, pair = opened(window=50)
    pair.alice.chan.issue({"pay": 100})
    pair.pump()
    stale = pair.alice.chan.committed
    pair.alice.chan.issue({"pay": 100})
    pair.pump()
    newest = pair.bob.chan.committed
    deadline = pair.alice.l1.unilateral_close(stale)
    assert deadline == chain.now() + 50
    chain.advance(10)
    with pytest.raises(L1Error, match="still open"):
        pair.alice.l1.settle(pair.params.channel_id)
    pair.bob.l1.refute(newest)
    info = chain.channel(pair.params.channel_id)
    assert info.registered_seq == newest.seq
    assert info.deadline == deadline  # refuting does not extend the window
    with pytest.raises(L1Error, match="not newer"):
        pair.alice.l1.refute(stale)
    with pytest.raises(L1Error, match="not newer"):
        pair.alice.l1.refute(newest)
    chain.advance(40)
    with pytest.raises(L1Error, match="ended"):
        pair.bob.l1.refute(newest)
    assert pair.alice.l1.settle(pair.params.channel_id) == (800, 200)
    with pytest.raises(L1Error, match="settled"):
        pair.bob.l1.settle(pair.params.channel_id)
    kinds = [e.kind for e in chain.events()]
    assert kinds == [
        L1EventKind.OPENED,
        L1EventKind.CLOSING_STARTED,
        L1EventKind.REFUTED,
        L1EventKind.SETTLED,
    ]
    assert chain.events()[-1].payouts == (800, 200)


def test_final_update_during_the_window_closes_at_once():
    chain, pair = opened()
    pair.alice.chan.issue({"pay": 1})
    pair.pump()
    stale = pair.alice.chan.committed
    pair.alice.chan.close()
    pair.pump()
    pair.alice.l1.unilateral_close(stale)
    assert pair.bob.l1.refute(pair.bob.final) is None
    assert chain.channel(pair.params.channel_id).status is L1ChannelStatus.SETTLED


def test_unilateral_close_with_a_final_update_pays_at_once():
    chain, pair = opened()
    pair.alice.chan.close()
    pair.pump()
    pair.alice.l1.unilateral_close(pair.alice.final)
    assert chain.channel(pair.params.channel_id).payouts == (1_000, 0)


def test_conservation_on_the_l1():
    chain, pair = opened(deposits=(500, 500))
    total = chain.total_supply()
    pair.bob.chan.issue({"pay": 200})
    pair.pump()
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    assert chain.total_supply() == total
    chain.advance(1_000)
    pair.bob.l1.settle(pair.params.channel_id)
    assert chain.total_supply() == total


# -- force moves -------------------------------------------------------------------


def tictactoe_after(cells, window=30):
    chain, pair = opened("tictactoe", (50, 50), window=window)
    for cell in cells:
        mover = pair.parties[pair.alice.chan.state[1]]
        mover.chan.issue({"cell": cell})
        pair.pump()
    return chain, pair


def test_force_move_gives_the_other_side_a_fresh_window_and_silence_loses():
    chain, pair = tictactoe_after([4, 0])  # Alice (X) to move
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    chain.advance(20)
    move = pair.alice.chan.force_move({"cell": 8})
    state = pair.app.encode_state(pair.alice.chan.state)
    deadline = pair.alice.l1.force_move(state, move)
    assert deadline == chain.now() + 30
    chain.advance(29)
    with pytest.raises(L1Error, match="still open"):
        pair.alice.l1.settle(pair.params.channel_id)
    chain.advance(1)
    assert pair.alice.l1.settle(pair.params.channel_id) == (100, 0)


def test_force_move_with_a_shared_reference_state_is_refused_at_once():
    # Issue 11, defect 1: state bytes handed to the L1 go through the hardened decoder.
    _, pair = tictactoe_after([4, 0])
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    move = pair.alice.chan.force_move({"cell": 8})
    bomb = shared_reference_bomb(40)
    with pytest.raises(L1Error, match="state does not decode: unsupported CBOR item: a tag"):
        pair.alice.l1.force_move(bomb, move)


def test_force_move_answered_by_a_force_move():
    chain, pair = tictactoe_after([4, 0])
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    assert chain.channel(pair.params.channel_id).forced is None  # registered, not forced
    state0 = pair.app.encode_state(pair.alice.chan.state)
    move = pair.alice.chan.force_move({"cell": 8})
    pair.alice.l1.force_move(state0, move)
    # Bob answers on L1 from the registered state.
    after = pair.app.apply(pair.bob.chan.state, {"cell": 8}, 0)
    bob_state = pair.app.encode_state(after)
    from bfs_smr import CommandEntry, SignedUpdate, Update

    u = Update(
        channel_id=pair.params.channel_id,
        seq=move.seq + 1,
        prev_hash=move.update.entry_hash(),
        app_id=pair.params.app_id,
        commands=(CommandEntry(1, 1, {"cell": 2}),),
        state_hash=pair.app.state_hash(pair.app.apply(after, {"cell": 2}, 1)),
        outcome=pair.app.outcome(pair.app.apply(after, {"cell": 2}, 1)),
    )
    sig = pair.bob.signer.sign(pair.bob.l1.format.digest(u, u.body()))
    answer = SignedUpdate(u, (None, sig))
    pair.bob.l1.force_move(bob_state, answer)
    assert chain.channel(pair.params.channel_id).forced == answer
    chain.advance(30)
    assert pair.bob.l1.settle(pair.params.channel_id) == (0, 100)  # now Alice is silent


@pytest.mark.parametrize(
    "tamper, message",
    [
        ("wrong_state", "registered"),
        ("not_their_turn", "party to move"),
        ("illegal", "illegal move"),
    ],
)
def test_force_move_rejections(tamper, message):
    chain, pair = tictactoe_after([4, 0])
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    state = pair.app.encode_state(pair.alice.chan.state)
    if tamper == "wrong_state":
        move = pair.alice.chan.force_move({"cell": 8})
        state = pair.app.encode_state(pair.app.initial_state(pair.params))
    elif tamper == "not_their_turn":
        from bfs_smr import SignedUpdate

        move = pair.alice.chan.force_move({"cell": 8})
        move = SignedUpdate(move.update, (None, pair.bob.signer.sign(b"x" * 32)))
    else:
        from bfs_smr import CommandEntry, SignedUpdate, Update

        cur = pair.alice.chan.state
        u = Update(
            channel_id=pair.params.channel_id,
            seq=pair.alice.chan.seq + 1,
            prev_hash=pair.alice.chan.committed.update.entry_hash(),
            app_id=pair.params.app_id,
            commands=(CommandEntry(0, 9, {"cell": 4}),),  # taken
            state_hash=pair.app.state_hash(cur),
            outcome=pair.app.outcome(cur),
        )
        move = SignedUpdate(
            u, (pair.alice.signer.sign(pair.alice.l1.format.digest(u, u.body())), None)
        )
    with pytest.raises(L1Error, match=message):
        pair.alice.l1.force_move(state, move)
    assert chain.channel(pair.params.channel_id).registered_seq == pair.alice.chan.seq


def test_doubly_signed_update_beats_a_force_move_at_the_same_seq():
    from bfs_smr import CommandEntry, SignedUpdate, Update

    chain, pair = tictactoe_after([4, 0])  # Alice (X) to move
    registered, registered_state = pair.alice.chan.committed, pair.alice.chan.state
    pair.alice.chan.issue({"cell": 8})
    pair.pump()
    newest = pair.bob.chan.committed  # seq 3, doubly signed
    # A Byzantine Alice closes with seq 2 and forces a *different* move at seq 3.
    other = pair.app.apply(registered_state, {"cell": 1}, 0)
    u = Update(
        channel_id=pair.params.channel_id,
        seq=registered.seq + 1,
        prev_hash=registered.update.entry_hash(),
        app_id=pair.params.app_id,
        commands=(CommandEntry(0, 77, {"cell": 1}),),
        state_hash=pair.app.state_hash(other),
        outcome=pair.app.outcome(other),
    )
    digest = pair.alice.l1.format.digest(u, u.body())
    forced = SignedUpdate(u, (pair.alice.signer.sign(digest), None))
    pair.alice.l1.unilateral_close(registered)
    pair.alice.l1.force_move(pair.app.encode_state(registered_state), forced)
    assert chain.channel(pair.params.channel_id).registered_seq == newest.seq
    pair.bob.l1.refute(newest)  # same seq, but doubly signed: it wins
    chain.advance(1_000)
    assert pair.bob.l1.settle(pair.params.channel_id) == newest.update.outcome
    kinds = [e.kind for e in chain.events()]
    assert kinds[-3:] == [L1EventKind.FORCE_MOVED, L1EventKind.REFUTED, L1EventKind.SETTLED]


def test_a_channel_never_fully_funded_can_be_cancelled_and_refunded():
    chain, pair = make_pair("payments", (10, 20))
    pair.alice.chan.start()
    pair.pump()
    cid = pair.alice.l1.open(pair.params)
    a = pair.params.participants[0]
    assert chain.balance(a) == 0
    pair.alice.l1.cancel(cid)
    assert chain.balance(a) == 10
    assert chain.channel(cid).status is L1ChannelStatus.CANCELLED
    with pytest.raises(L1Error, match="cancelled"):
        pair.bob.l1.deposit(cid, 20)
    with pytest.raises(L1Error, match="cancelled"):
        pair.alice.l1.cancel(cid)


def test_an_open_channel_cannot_be_cancelled():
    _, pair = opened()
    with pytest.raises(L1Error, match="only a channel still funding"):
        pair.alice.l1.cancel(pair.params.channel_id)


def force(party, app, command):
    """``party`` forces ``command`` on L1 on top of its current force base."""
    _, base_state = party.chan.force_base
    move = party.chan.force_move(command)
    party.l1.force_move(app.encode_state(base_state), move)
    return move


def test_a_whole_game_can_be_finished_by_force_moves_through_channels():
    chain, pair = tictactoe_after([4, 0])  # Alice (X) to move
    app = pair.app
    pair.alice.l1.unilateral_close(pair.alice.chan.committed)
    moves = [(pair.alice, {"cell": 8}), (pair.bob, {"cell": 2}), (pair.alice, {"cell": 6})]
    for mover, command in moves:
        other = pair.peer(mover)
        move = force(mover, app, command)
        other.chan.adopt_forced_move(move)
        chain.advance(10)
    # O holds 0 and 2 and completes the top row at 1.
    move = force(pair.bob, app, {"cell": 1})
    _, state = pair.bob.chan.force_base
    assert app.is_final(state) and app.outcome(state) == (0, 100)
    chain.advance(30)
    assert pair.alice.l1.settle(pair.params.channel_id) == (0, 100)
    assert move.seq == pair.alice.chan.seq + 4


def test_a_forced_move_that_does_not_follow_is_refused_by_the_channel():
    from bfs_smr import RemoteViolation, SignedUpdate

    _, pair = tictactoe_after([4, 0])
    move = pair.alice.chan.force_move({"cell": 8})
    forged = SignedUpdate(move.update, (pair.bob.signer.sign(b"x" * 32), None))
    with pytest.raises(RemoteViolation, match="signature"):
        pair.bob.chan.adopt_forced_move(forged)
    pair.bob.chan.adopt_forced_move(move)
    with pytest.raises(RemoteViolation, match="does not follow"):
        pair.bob.chan.adopt_forced_move(move)  # already adopted: it no longer follows


def test_answering_a_forced_move_never_signs_twice_at_one_seq():
    from bfs_smr import LocalError

    _, pair = tictactoe_after([4])  # seq 1; Bob (O) to move
    pair.bob.chan.issue({"cell": 0})
    pair.drain(pair.bob)
    pair.silenced.add("alice")  # nothing Alice sends from now on arrives
    pair.alice.chan.receive(pair.alice.inbox.popleft())
    pair.alice.chan.issue({"cell": 8})
    pair.drain(pair.alice)
    assert [u.seq for u in pair.alice.chan.in_flight()] == [2, 3]
    # Alice has signed neither proposal (the follower signs first), and seq 2 is Bob's
    # move, not hers: refused, and nothing changes.
    with pytest.raises(LocalError, match="not this party's move"):
        pair.alice.chan.force_move({"cell": 8})
    assert [u.seq for u in pair.alice.chan.in_flight()] == [2, 3]
    forced = pair.bob.chan.force_move({"cell": 1})  # Bob forces a different move at seq 2
    pair.alice.chan.adopt_forced_move(forced)
    move = pair.alice.chan.force_move({"cell": 8})  # her only signature at seq 3
    assert move.seq == 3 and move.update.prev_hash == forced.update.entry_hash()
    sent = [e for e in pair.alice.chan.effects() if isinstance(e, PersistUpdate)]
    assert [e.update for e in sent] == [move]
    # A late answer to the proposal she dropped is ignored: she never signs it.
    pair.alice.chan.receive(
        encode_message(Accept(channel_id=pair.params.channel_id, seq=2, signature=bytes(64)))
    )
    assert pair.alice.chan.effects() == [] and pair.alice.chan.committed.seq == 1
