"""The channel protocol object: table, ordering of effects, pipelining, batching, close."""

import pytest
from conftest import make_pair

from bfs_smr import (
    TRANSITIONS,
    ChannelFinalized,
    CommandCommitted,
    CommandFailed,
    CommandRejected,
    LocalError,
    PersistUpdate,
    Phase,
    RemoteViolation,
    Role,
    SendMessage,
    decode,
)
from bfs_smr._messages import (
    Accept,
    CloseRequest,
    Commit,
    Denied,
    MessageKind,
    Propose,
    Request,
    Signed,
    encode_message,
    parse_message,
)


def opened(app="payments", deposits=(1_000, 1_000), **kw):
    chain, pair = make_pair(app, deposits, **kw)
    pair.open()
    return chain, pair


def kinds(data_list):
    return [MessageKind(decode(d)[0]) for d in data_list]


def test_opening_update_is_doubly_signed_before_funding():
    chain, pair = make_pair()
    assert pair.alice.chan.phase is Phase.OPENING
    pair.alice.chan.start()
    pair.bob.chan.start()  # a no-op for the follower: same call for both roles
    pair.pump()
    for party in pair.parties:
        assert party.chan.phase is Phase.OPEN
        assert party.chan.seq == 0 and party.chan.committed.doubly_signed
    assert chain.transactions == 0


def test_calls_outside_the_table_are_local_errors():
    _, pair = make_pair()
    with pytest.raises(LocalError, match="cannot issue"):
        pair.alice.chan.issue({"pay": 1})
    with pytest.raises(LocalError, match="cannot close"):
        pair.bob.chan.close()
    assert all(role in Role for role, _, _ in TRANSITIONS)


def test_messages_outside_the_table_are_remote_violations():
    _, pair = opened()
    pair.alice.chan.issue({"pay": 1})
    propose = pair.alice.chan.effects()[-1].data
    with pytest.raises(RemoteViolation, match="unexpected propose"):
        pair.alice.chan.receive(propose)  # the sequencer never takes proposals


def test_every_signature_is_persisted_before_it_is_sent():
    _, pair = opened()
    pair.alice.chan.issue({"pay": 1})
    out = pair.alice.chan.effects()
    assert [type(e) for e in out] == [SendMessage]  # unsigned: nothing to persist first
    pair.bob.chan.receive(out[0].data)
    back = pair.bob.chan.effects()  # Bob signs first: persisted, then his ACCEPT
    assert [type(e) for e in back] == [PersistUpdate, SendMessage]
    assert back[0].committed is False and kinds([back[1].data]) == [MessageKind.ACCEPT]
    pair.alice.chan.receive(back[1].data)
    done = pair.alice.chan.effects()  # Alice signs: doubly signed and durable, then COMMIT
    assert type(done[0]) is PersistUpdate and done[0].committed
    assert type(done[-1]) is SendMessage and kinds([done[-1].data]) == [MessageKind.COMMIT]
    pair.bob.chan.receive(done[-1].data)
    last = pair.bob.chan.effects()
    assert type(last[0]) is PersistUpdate and last[0].committed
    assert not any(type(e) is SendMessage for e in last)


def test_pipelining_keeps_at_most_the_window_in_flight():
    _, pair = opened(max_in_flight=4)
    for _ in range(10):
        pair.alice.chan.issue({"pay": 1})
    sent = [e.data for e in pair.alice.chan.effects() if isinstance(e, SendMessage)]
    assert kinds(sent) == [MessageKind.PROPOSE] * 4
    assert len(pair.alice.chan.in_flight()) == 4 and pair.alice.chan.pending == 10
    for data in sent:
        pair.bob.chan.receive(data)
    accepts = [e.data for e in pair.bob.chan.effects() if isinstance(e, SendMessage)]
    pair.alice.chan.receive(accepts[0])
    more = [e.data for e in pair.alice.chan.effects() if isinstance(e, SendMessage)]
    # seq 1 committed (its COMMIT), one slot freed, one more proposal
    assert kinds(more) == [MessageKind.COMMIT, MessageKind.PROPOSE]
    pair.drain(pair.alice)
    for data in accepts[1:]:
        pair.alice.inbox.append(data)
    pair.bob.inbox.extend(more)
    pair.pump()
    assert pair.alice.chan.seq == pair.bob.chan.seq == 10
    assert pair.alice.chan.state == (990, 1_010)


def test_batching_puts_several_commands_in_one_update():
    _, pair = opened(max_batch=5, max_in_flight=1)
    refs = [pair.alice.chan.issue({"pay": 1}) for _ in range(11)]
    pair.pump()
    assert pair.alice.chan.seq == 3  # 0 opening, 1 the first alone, 2 and 3 five each
    done = [c.ref for c in pair.alice.committed if c.local]
    assert done == refs
    assert pair.bob.chan.state == (989, 1_011)


def test_a_callers_batch_is_one_update_and_each_command_is_reported():
    _, pair = opened(max_batch=1, max_in_flight=4)  # no automatic batching at all
    refs = pair.alice.chan.issue_batch([{"pay": 1}, {"pay": 2}, {"pay": 3}])
    single = pair.alice.chan.issue({"pay": 4})
    pair.pump()
    assert pair.alice.chan.seq == 2  # the batch in seq 1, the single command in seq 2
    batch = pair.bob.chan.committed
    assert batch is not None and pair.alice.chan.committed == batch
    assert [c.ref for c in pair.alice.committed if c.local] == [*refs, single]
    assert [c.seq for c in pair.alice.committed if c.local] == [1, 1, 1, 2]
    assert pair.bob.chan.state == (990, 1_010)


def test_a_batch_with_a_refused_command_issues_nothing():
    _, pair = opened(deposits=(10, 0))
    with pytest.raises(CommandRejected, match="command 2 of the batch"):
        pair.alice.chan.issue_batch([{"pay": 4}, {"pay": 4}, {"pay": 4}])  # 12 > 10
    with pytest.raises(LocalError, match="at least one command"):
        pair.alice.chan.issue_batch([])
    pair.pump()
    assert pair.alice.chan.seq == 0 and pair.alice.chan.effects() == []
    assert pair.alice.chan.issue_batch([{"pay": 4}, {"pay": 6}]) == [1, 2]
    pair.pump()
    assert pair.bob.chan.state == (0, 10)


def test_a_followers_batch_becomes_requests_the_sequencer_batches():
    _, pair = opened(max_batch=10, max_in_flight=1)
    pair.alice.chan.issue({"pay": 1})  # fills the window, so the requests queue up
    with pytest.raises(CommandRejected, match="command 1 of the batch"):
        pair.bob.chan.issue_batch([{"pay": 600}, {"pay": 600}])  # Bob holds 1,000
    refs = pair.bob.chan.issue_batch([{"pay": 5}] * 4)
    pair.pump()
    assert [c.ref for c in pair.bob.committed if c.local] == refs
    assert pair.alice.chan.seq == 2  # Alice's payment alone, then Bob's four in one update
    assert pair.alice.chan.state == (1_019, 981)


def test_both_parties_issue_at_the_same_moment_without_fork():
    _, pair = opened()
    a = [pair.alice.chan.issue({"pay": 3}) for _ in range(5)]
    b = [pair.bob.chan.issue({"pay": 2}) for _ in range(5)]
    pair.pump()
    assert pair.alice.chan.committed == pair.bob.chan.committed
    assert pair.alice.chan.state == (1_000 - 15 + 10, 1_000 + 15 - 10)
    assert [c.ref for c in pair.alice.committed if c.local] == a
    assert [c.ref for c in pair.bob.committed if c.local] == b


def test_follower_request_denied_by_the_sequencer_fails_alone():
    _, pair = opened(deposits=(10, 5))
    first = pair.bob.chan.issue({"pay": 5})
    second = pair.bob.chan.issue({"pay": 5})  # passes Bob's early check (balance 5) ...
    pair.alice.chan.issue({"pay": 1})
    pair.pump()  # ... but the sequencer has Bob at 0 after the first
    assert [f.ref for f in pair.bob.failed] == [second]
    assert "overdraft" in pair.bob.failed[0].reason
    assert [c.ref for c in pair.bob.committed if c.local] == [first]
    assert pair.alice.chan.committed == pair.bob.chan.committed
    assert pair.bob.chan.state == (14, 1)
    third = pair.bob.chan.issue({"pay": 1})  # the channel goes on
    pair.pump()
    assert third in [c.ref for c in pair.bob.committed if c.local]


def test_early_check_rejects_obvious_misuse_locally():
    _, pair = opened(deposits=(10, 0))
    with pytest.raises(CommandRejected, match="overdraft"):
        pair.bob.chan.issue({"pay": 1})
    with pytest.raises(CommandRejected, match="positive"):
        pair.alice.chan.issue({"pay": 0})
    assert pair.alice.chan.pending == pair.bob.chan.pending == 0


def test_close_after_queued_commands_then_nothing_more():
    _, pair = opened()
    pair.bob.chan.issue({"pay": 7})
    pair.pump()
    pair.alice.chan.issue({"pay": 1})
    pair.alice.chan.issue({"pay": 2})
    pair.alice.chan.close()
    with pytest.raises(LocalError, match="closing"):
        pair.alice.chan.issue({"pay": 1})
    late = pair.bob.chan.issue({"pay": 1})  # reaches the sequencer after it decided to close
    pair.pump()
    assert pair.alice.final == pair.bob.final and pair.alice.final.update.final
    assert pair.alice.final.update.outcome == (1_004, 996)
    # Denied as the channel is closing, or failed when the final update committed first.
    assert [f.ref for f in pair.bob.failed] == [late]
    assert pair.bob.failed[0].reason in ("channel is closing", "channel closed")
    assert pair.bob.chan.phase is Phase.CLOSED


def test_follower_close_request_and_late_request_fails():
    _, pair = opened()
    pair.bob.chan.close()
    with pytest.raises(LocalError):
        pair.bob.chan.issue({"pay": 1})
    pair.pump()
    assert pair.alice.chan.phase is pair.bob.chan.phase is Phase.CLOSED
    finals = [e for e in pair.alice.chan.effects() if isinstance(e, ChannelFinalized)]
    assert finals == []  # already drained by pump
    assert pair.alice.final is not None


def test_request_racing_a_final_update_fails_cleanly():
    _, pair = opened()
    pair.alice.chan.close()
    ref = pair.bob.chan.issue({"pay": 1})  # sent before Bob sees the final proposal
    pair.pump()
    assert [f.ref for f in pair.bob.failed] == [ref]
    assert pair.bob.chan.phase is Phase.CLOSED


def test_games_close_cooperatively_only_when_over():
    _, pair = opened("tictactoe", (5, 5))
    with pytest.raises(LocalError, match="does not allow"):
        pair.alice.chan.close()
    pair.bob.chan.close()  # asks; the sequencer refuses mid-game
    pair.pump()
    assert pair.bob.chan.phase is Phase.OPEN
    assert "does not allow" in pair.bob.failed[-1].reason


def test_retransmitted_proposal_gets_the_same_answer():
    _, pair = opened()
    pair.alice.chan.issue({"pay": 1})
    propose = pair.alice.chan.effects()[-1].data
    pair.bob.chan.receive(propose)
    first = [e.data for e in pair.bob.chan.effects() if isinstance(e, SendMessage)]
    pair.bob.chan.receive(propose)
    second = [e.data for e in pair.bob.chan.effects() if isinstance(e, SendMessage)]
    assert first == second and len(first) == 1


def test_violation_carries_the_recourse_and_changes_nothing():
    _, pair = opened()
    before = pair.bob.chan.committed
    with pytest.raises(RemoteViolation) as info:
        pair.bob.chan.receive(b"\x00garbage")
    assert info.value.recourse == before
    assert pair.bob.chan.committed == before and pair.bob.chan.effects() == []


def test_force_move_reuses_the_update_already_signed():
    _, pair = opened("tictactoe", (5, 5))
    pair.silenced.add("bob")
    pair.alice.chan.issue({"cell": 4})
    pair.pump()
    proposal = pair.alice.chan.in_flight()[0]  # unsigned: Bob signs first
    move = pair.alice.chan.force_move({"cell": 0})  # a different move is NOT signed
    assert move.update == proposal.update and move.signatures[0] is not None
    assert pair.alice.chan.phase is Phase.DISPUTE
    with pytest.raises(LocalError):
        pair.alice.chan.issue({"cell": 1})


def test_the_followers_force_move_reuses_the_update_it_signed():
    _, pair = opened("tictactoe", (5, 5))
    pair.alice.chan.issue({"cell": 4})
    pair.pump()
    pair.bob.chan.issue({"cell": 0})
    pair.drain(pair.bob)
    pair.alice.chan.receive(pair.alice.inbox.popleft())  # Alice proposes Bob's move
    pair.drain(pair.alice)
    pair.bob.chan.receive(pair.bob.inbox.popleft())  # Bob signs it ...
    pair.bob.chan.effects()  # ... and his ACCEPT is lost: Alice never signs
    (signed,) = pair.bob.chan.in_flight()
    assert signed.signatures == (None, signed.signatures[1]) and signed.signatures[1]
    move = pair.bob.chan.force_move({"cell": 8})  # a different move is NOT signed
    assert move == signed and pair.bob.chan.phase is Phase.DISPUTE


def test_force_move_needs_the_turn():
    _, pair = opened("tictactoe", (5, 5))
    with pytest.raises(LocalError, match="not this party's move"):
        pair.bob.chan.force_move({"cell": 0})
    move = pair.alice.chan.force_move({"cell": 0})
    assert move.signatures[1] is None and move.seq == 1


def test_committed_effects_report_each_command_once():
    _, pair = opened()
    for _ in range(3):
        pair.alice.chan.issue({"pay": 2})
    pair.bob.chan.issue({"pay": 1})
    pair.pump()
    for party in pair.parties:
        assert len(party.committed) == 4
        assert all(isinstance(c, CommandCommitted) for c in party.committed)
    assert sum(c.local for c in pair.bob.committed) == 1
    assert not any(isinstance(f, CommandFailed) for f in pair.alice.failed)


def test_fast_propose_encoding_equals_the_generic_one():
    from bfs_smr._messages import Propose, encode_message, encode_propose

    _, pair = opened()
    pair.alice.chan.issue({"pay": 1})
    (send,) = pair.alice.chan.effects()
    u = pair.alice.chan.in_flight()[0].update
    tag = pair.alice.signer.tag(pair.alice.l1.format.digest(u, u.body()))
    generic = encode_message(Propose(channel_id=u.channel_id, update=u, tag=tag))
    assert send.data == generic == encode_propose(u.channel_id, u.body(), tag)


def test_queue_is_bounded_for_both_local_and_peer_commands():
    _, pair = opened(max_in_flight=1, max_queue=3)
    for _ in range(4):  # one goes in flight, three wait
        pair.alice.chan.issue({"pay": 1})
    with pytest.raises(LocalError, match="waiting"):
        pair.alice.chan.issue({"pay": 1})
    pair.drain(pair.alice)
    pair.alice.inbox.clear()
    pair.bob.inbox.clear()  # hold Alice's proposal back so the queue stays full
    ref = pair.bob.chan.issue({"pay": 1})
    pair.drain(pair.bob)
    pair.alice.chan.receive(pair.alice.inbox.popleft())
    sent = [e.data for e in pair.alice.chan.effects() if isinstance(e, SendMessage)]
    assert kinds(sent) == [MessageKind.DENIED]
    assert decode(sent[0])[2:] == [ref, "busy"]


def test_commands_must_be_plain_data_before_anything_is_signed():
    _, pair = opened("counter", (1, 1))
    for party in pair.parties:
        with pytest.raises(LocalError, match="plain CBOR"):
            party.chan.issue({"inc": 1.5})
        with pytest.raises(LocalError, match="plain CBOR"):
            party.chan.issue({1, 2})
        assert party.chan.effects() == [] and party.chan.pending == 0


def test_late_counter_signature_after_a_force_move_is_kept():
    _, pair = opened("tictactoe", (5, 5))
    pair.alice.chan.issue({"cell": 4})
    proposal = pair.alice.chan.effects()[-1].data
    move = pair.alice.chan.force_move()
    pair.bob.chan.receive(proposal)
    accept = pair.bob.chan.effects()[-1].data
    pair.alice.chan.receive(accept)
    assert pair.alice.chan.committed.update == move.update
    assert pair.alice.chan.committed.doubly_signed
    assert pair.alice.chan.phase is Phase.DISPUTE


def test_a_denial_may_overtake_an_earlier_queued_request():
    _, pair = opened(deposits=(10, 3), max_in_flight=1)
    pair.alice.chan.issue({"pay": 1})  # fills the window
    first = pair.bob.chan.issue({"pay": 3})  # accepted, but waits in the sequencer's queue
    second = pair.bob.chan.issue({"pay": 3})  # denied at once: Bob has 0 after the first
    pair.pump()
    assert [f.ref for f in pair.bob.failed] == [second]
    assert first in [c.ref for c in pair.bob.committed if c.local]
    assert pair.alice.chan.committed == pair.bob.chan.committed


def test_the_largest_batches_decode_on_the_peer_and_in_a_resync():
    # The sender bounds an update's items as well as its bytes, so that every proposal and
    # resync message stays within the peer decoder's MAX_ITEMS (issue 11): a batch the
    # sender takes, the peer must take too.
    from bfs_smr._channel import MAX_UPDATE_ITEMS
    from bfs_smr._codec import MAX_ITEMS
    from bfs_smr._messages import Entries, SendMessage, parse_message

    _, pair = opened(deposits=(10**9, 0), max_batch=1)
    dense = [[0] * 40 for _ in range(MAX_UPDATE_ITEMS // 40)]  # items dense in bytes
    with pytest.raises(LocalError, match="items; one update carries at most"):
        pair.alice.chan.issue_batch([{"pay": 1, "memo": d} for d in dense])
    for _ in range(3):
        pair.alice.chan.issue_batch([{"pay": 1}] * 10_000)  # 70,000 items each
    pair.alice.chan.issue_batch([{"pay": 1}] * 100)
    pair.pump()
    assert pair.bob.chan.seq == 4 and pair.bob.chan.state == (10**9 - 30_100, 30_100)
    # Serving the log in a resync: big updates go alone, and each message decodes.
    pair.alice.chan._st.serving.append((1, 4))
    pair.alice.chan.serve_log(pair.alice.log[1:5])
    sent = [e.data for e in pair.alice.chan.effects() if isinstance(e, SendMessage)]
    served = [parse_message(data) for data in sent]
    assert all(isinstance(m, Entries) for m in served)
    assert [e.seq for m in served for e in m.entries] == [1, 2, 3, 4]
    assert len(served) == 4  # a message holds several entries only within _CHUNK_BYTES
    assert 70_000 <= MAX_UPDATE_ITEMS < MAX_ITEMS


def _delivered(chan, message):
    """Effects of ``chan`` receiving ``message``: messages parsed, the rest as they are."""
    chan.receive(encode_message(message))
    return [parse_message(e.data) if isinstance(e, SendMessage) else e for e in chan.effects()]


def test_messages_about_a_closed_channel_get_an_answer_not_a_violation():
    # Defect 8: after a restart next to a closed channel, a re-sent request, close
    # request or counter-signature made the sequencer call a violation (and the node drop
    # the link, on every reconnect).
    _, pair = opened()
    pair.bob.chan.close()
    pair.pump()
    alice, bob = pair.alice.chan, pair.bob.chan
    assert alice.phase is bob.phase is Phase.CLOSED
    cid, final = alice.channel_id, alice.committed
    for message in (
        Request(channel_id=cid, ref=7, command={"pay": 1}),
        CloseRequest(channel_id=cid, ref=8),
    ):
        answer = _delivered(alice, message)
        assert answer == [Denied(channel_id=cid, ref=message.ref, reason="the channel is closed")]
    late = Accept(channel_id=cid, seq=final.seq, signature=final.signatures[1])
    assert _delivered(alice, late) == []
    signed = Signed(
        channel_id=cid, update=final.update, signature=final.signatures[1], tag=bytes(32)
    )
    assert _delivered(alice, signed) == []
    commit = Commit(channel_id=cid, seq=final.seq, signature=final.signatures[0])
    assert _delivered(bob, commit) == []
    tag = pair.alice.signer.tag(pair.alice.l1.format.digest(final.update, final.update.body()))
    resent = Propose(channel_id=cid, update=final.update, tag=tag)
    assert _delivered(bob, resent) == [late]  # the same signature again
    assert _delivered(bob, Denied(channel_id=cid, ref=1, reason="x")) == []
    assert alice.phase is bob.phase is Phase.CLOSED and alice.committed == bob.committed


def test_messages_during_a_dispute_get_an_answer_not_a_violation():
    # Defect 8: the follower forced its move on L1 while its request was pending; the
    # sequencer, restarted, sequenced the re-sent request and the follower called the
    # proposal a violation. In a dispute the follower ignores proposals (it signs nothing
    # off-chain any more), and the sequencer denies requests.
    _, pair = opened("tictactoe", (5, 5))
    pair.alice.chan.issue({"cell": 0})
    pair.pump()
    alice, bob = pair.alice.chan, pair.bob.chan
    cid = alice.channel_id
    ref = bob.issue({"cell": 4})
    bob.effects()  # the request is lost with the sequencer's crash
    forced = bob.force_move({"cell": 4})
    bob.effects()
    assert bob.phase is Phase.DISPUTE
    alice.receive(encode_message(Request(channel_id=cid, ref=ref, command={"cell": 4})))
    proposal = [e.data for e in alice.effects() if isinstance(e, SendMessage)]
    assert [type(parse_message(p)) for p in proposal] == [Propose]
    bob.receive(proposal[0])
    assert bob.effects() == []  # ignored: no signature, no error
    failed = _delivered(bob, Denied(channel_id=cid, ref=ref, reason="no"))
    assert failed == [CommandFailed(ref=ref, reason="no")]
    assert bob.phase is Phase.DISPUTE
    # A sequencer in a dispute denies what it is asked.
    alice.adopt_forced_move(forced)
    alice.effects()
    for message in (
        Request(channel_id=cid, ref=ref + 1, command={"cell": 5}),
        CloseRequest(channel_id=cid, ref=ref + 2),
    ):
        reason = "the channel is in dispute on L1"
        assert _delivered(alice, message) == [
            Denied(channel_id=cid, ref=message.ref, reason=reason)
        ]
    assert alice.phase is Phase.DISPUTE


def test_a_handler_leading_outside_its_targets_is_an_internal_error(monkeypatch):
    # The table entry for the sequencer's close claims it keeps the channel open; the
    # handler moves it to closing. The dispatch check catches the mismatch as a bug in
    # the framework, not as the caller's or the peer's fault.
    from bfs_smr import InternalError
    from bfs_smr._channel import _HANDLERS, Input, Transition

    _, pair = opened()
    real = TRANSITIONS[Role.SEQUENCER, Phase.OPEN, Input.CLOSE]
    assert real.targets == {Phase.CLOSING}
    wrong = Transition(real.handler, frozenset({Phase.OPEN}))
    monkeypatch.setitem(_HANDLERS[Role.SEQUENCER][Phase.OPEN], Input.CLOSE, wrong)
    with pytest.raises(InternalError, match=r"_sequencer\.close left the sequencer in phase cl"):
        pair.alice.chan.close()
    assert not isinstance(InternalError("x"), (LocalError, RemoteViolation))


def test_transitions_are_frozen_records_of_functions_and_target_phases():
    from dataclasses import FrozenInstanceError

    from bfs_smr._channel import Input

    entry = TRANSITIONS[Role.FOLLOWER, Phase.CLOSING, Input.RECV_DENIED]
    assert entry.targets == {Phase.OPEN, Phase.CLOSING}
    assert entry.name == "_follower.on_denied"
    with pytest.raises(FrozenInstanceError):
        entry.targets = frozenset()  # type: ignore[misc]
    # Every handler is a plain function of the channel's record: no lookup by name.
    assert all(not isinstance(t.handler, str) and callable(t.handler) for t in TRANSITIONS.values())
