"""Attacker review of the follower-first protocol change (issue 16, item 1).

Each test is one attack, by a hostile peer or a crash at the wrong moment, on I1, I2,
I3, I6 or liveness after restarts (docs/design.md §4, docs/protocol.md). Those marked
``xfail(strict=True)`` are findings: they fail today and say why.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import both_equal

from bfs_smr import ChannelLimits, LocalError, Phase, RemoteViolation, SignedUpdate, Update
from bfs_smr._messages import Accept, Commit, Hello, Propose, Signed, encode_message, parse_message
from bfs_smr._update import CommandEntry
from bfs_smr.runtime.store import Store
from tests.test_attacks import craft, digest, new_signer, only, opened, propose

# -- helpers ---------------------------------------------------------------------------------


def on(duo, previous: Update, state, commands: tuple[CommandEntry, ...]):
    """The update after ``previous`` (whose state is ``state``) carrying ``commands``."""
    for entry in commands:
        state = duo.app.apply(state, entry.command, entry.actor)
    update = Update(
        channel_id=duo.cid,
        seq=previous.seq + 1,
        prev_hash=previous.entry_hash(),
        app_id=duo.params.app_id,
        commands=commands,
        state_hash=duo.app.state_hash(state),
        outcome=duo.app.checked_outcome(state, duo.params),
        final=False,
    )
    return update, state


def bob_signs_but_accepts_are_lost(pair, n: int, amount: int = 1) -> list[int]:
    """Alice proposes ``n`` payments; Bob signs and persists each; every ACCEPT is lost."""
    refs = [pair.alice.chan.issue({"pay": amount}) for _ in range(n)]
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()
    return refs


# == findings: the follower-first flow traps the follower in a dispute (I6) ===================


def test_follower_that_signed_a_batched_move_can_still_force_its_move():
    # Was a finding: Bob signed [his move, Alice's move] at seq 2, Alice withheld COMMIT,
    # and Bob could force nothing at seq 2 (not a single move; a second signature there
    # would break I1), so he lost on the L1 timeout. On his turn Bob now signs his move
    # alone, and an honest sequencer never batches it (_sequencer.pump).
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    duo.pump()  # seq 1: X in cell 0; O (Bob) to move
    ref = duo.bob.issue({"cell": 4})
    duo.drain(1)  # the request reaches the hostile sequencer
    batched = craft(duo, (CommandEntry(1, ref, {"cell": 4}), CommandEntry(0, 7, {"cell": 8})))
    with pytest.raises(RemoteViolation, match="turn and not its move alone"):
        duo.bob.receive(propose(duo, batched))
    assert duo.bob.effects() == [] and duo.bob.in_flight() == []
    move = duo.bob.force_move({"cell": 4})  # nothing signed at seq 2: he can answer
    assert move.seq == 2 and move.verify(duo.params, duo.fmt, require=(1,))


def test_follower_forcing_its_pending_move_never_signs_twice_at_a_later_seq():
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    duo.pump()  # seq 1; O (Bob) to move
    r1 = duo.bob.issue({"cell": 4})
    r2 = duo.bob.issue({"cell": 5})  # checked against seq 1 only: legal there
    duo.drain(1)
    base, state = duo.bob.committed.update, duo.bob.state
    u2, s2 = on(duo, base, state, (CommandEntry(1, r1, {"cell": 4}),))
    u3, s3 = on(duo, u2, s2, (CommandEntry(0, 7, {"cell": 8}),))
    u4, _ = on(duo, u3, s3, (CommandEntry(1, r2, {"cell": 5}),))
    for u in (u2, u3, u4):
        duo.bob.receive(propose(duo, u))
    assert [s.seq for s in duo.bob.in_flight()] == [2, 3, 4]
    duo.drain(1)
    # No COMMIT ever comes. Bob forces his own move (his pending seq 2: allowed).
    forced = duo.bob.force_move({"cell": 4})
    assert forced.update == u2
    # Alice answers on L1 with a different move at seq 3: she never signed u3, so that is
    # legal for her.
    z, _ = on(duo, u2, s2, (CommandEntry(0, 8, {"cell": 7}),))
    duo.bob.adopt_forced_move(SignedUpdate(z, (duo.a.sign(digest(duo, z)), None)))
    # Bob's turn at seq 4, but he already signed u4 there: a second signature at seq 4
    # would let Alice choose between them on L1 (sign u3, u4 and refute with u4).
    with pytest.raises(LocalError, match="I1"):
        duo.bob.force_move({"cell": 5})


# == defences that hold (regression tests) ===================================================


def test_a_replayed_signed_after_commit_changes_nothing(durable):
    _, pair = durable()
    bob_signs_but_accepts_are_lost(pair, 1)
    ((signed, *_),) = pair.bob.chan._st.in_flight
    tag = pair.bob.chan._st.in_flight[0][3]
    pair.restart(pair.alice)
    pair.resync()
    assert both_equal(pair) == 1
    replay = Signed(
        channel_id=pair.params.channel_id,
        update=signed.update,
        signature=signed.signatures[1],
        tag=tag,
    )
    before = pair.alice.chan.committed
    pair.alice.chan.receive(encode_message(replay))
    assert pair.alice.chan.effects() == [] and pair.alice.chan.committed == before


def test_a_signed_update_of_another_channel_with_a_valid_tag_is_refused():
    """Alice uses one key (and so one tag key) on two channels: Bob signs a proposal of
    channel B and sends it as SIGNED on channel A, whose log it does not extend."""
    a, b = new_signer(), new_signer()
    one = opened(a=a, b=b, nonce=1)
    two = opened(a=a, b=b, nonce=2, chain=one.chain)
    assert one.cid != two.cid
    two.alice.issue({"pay": 5})
    prop = only(two.drain(0), Propose)
    sig = b.sign(digest(two, prop.update))
    forged = Signed(channel_id=one.cid, update=prop.update, signature=sig, tag=prop.tag)
    before = one.alice.committed
    with pytest.raises(RemoteViolation):
        one.alice.receive(encode_message(forged))
    assert one.alice.committed == before


def test_signed_next_too_small_gets_no_second_sequencer_signature(durable):
    """Bob signed seq 1 (Alice's pre-crash proposal), then lies in his HELLO that he signed
    nothing; Alice proposes a new seq 1. Whichever Bob then completes, Alice signs one
    update at seq 1 only (I1)."""
    _, pair = durable()
    bob_signs_but_accepts_are_lost(pair, 1, amount=3)
    ((old, *_),) = pair.bob.chan._st.in_flight
    tag = pair.bob.chan._st.in_flight[0][3]
    pair.restart(pair.alice)
    pair.alice.chan.issue({"pay": 7})
    pair.alice.chan.resync()
    pair.drain(pair.alice)
    pair.bob.inbox.clear()
    committed = pair.alice.chan.committed
    lie = Hello(
        channel_id=pair.params.channel_id,
        next_seq=committed.seq + 1,
        head_hash=committed.update.entry_hash(),
        signed_next=committed.seq + 1,
    )
    pair.alice.chan.receive(encode_message(lie))
    sent = pair.alice.chan.effects()
    new = [e for e in sent if hasattr(e, "data")]
    props = [m for m in (pair_parse(e.data) for e in new) if isinstance(m, Propose)]
    assert [p.update.seq for p in props] == [old.seq]
    assert props[0].update.body() != old.update.body()
    stale = Signed(
        channel_id=pair.params.channel_id,
        update=old.update,
        signature=old.signatures[1],
        tag=tag,
    )
    with pytest.raises(RemoteViolation, match="not the proposal in flight"):
        pair.alice.chan.receive(encode_message(stale))
    # Completing the new one gives Alice's signature on it alone.
    sig = pair.bob.signer.sign(pair.alice.chan._st.in_flight[0][2])
    pair.alice.chan.receive(
        encode_message(Accept(channel_id=pair.params.channel_id, seq=old.seq, signature=sig))
    )
    out = pair.alice.chan.effects()
    commits = [pair_parse(e.data) for e in out if hasattr(e, "data")]
    commits = [c for c in commits if isinstance(c, Commit)]
    assert len(commits) == 1 and commits[0].seq == old.seq
    assert pair.alice.chan.committed.update.body() == props[0].update.body()


def pair_parse(data: bytes):
    return parse_message(data)


def test_both_crash_with_the_follower_holding_signatures_converge(durable):
    _, pair = durable()
    refs = bob_signs_but_accepts_are_lost(pair, 3)
    pair.restart(pair.alice)
    pair.restart(pair.bob)
    assert [u.seq for u in pair.bob.chan.in_flight()] == [1, 2, 3]
    pair.resync()
    assert both_equal(pair) == 3 and pair.bob.chan.state == (997, 503)
    assert [c.ref for c in pair.alice.committed if c.local][-3:] == refs
    pair.alice.chan.issue({"pay": 1})
    pair.bob.chan.issue({"pay": 2})
    pair.pump()
    assert both_equal(pair) == 5


def test_queued_commands_that_conflict_with_adopted_updates_fail_cleanly(durable):
    """Alice pays her whole deposit before a crash (Bob signed it, the ACCEPT was lost);
    after the restart she queues the same payment again, valid on her stored state. Once
    Bob's SIGNED brings back the first, the queued one must fail, not overdraw."""
    _, pair = durable()
    bob_signs_but_accepts_are_lost(pair, 1, amount=1_000)
    pair.restart(pair.alice)
    again = pair.alice.chan.issue({"pay": 1_000})
    bob_ref = pair.bob.chan.issue({"pay": 500})  # queued at Alice, valid on either base
    pair.resync()
    pair.pump()
    assert both_equal(pair) == 2 and pair.bob.chan.state == (500, 1_000)
    assert [f.ref for f in pair.alice.failed] == [again]
    assert pair.alice.chan.state[0] >= 0 and pair.alice.chan.state[1] >= 0
    assert bob_ref in [c.ref for c in pair.bob.committed if c.local]


def test_follower_restored_from_an_old_backup_with_fewer_pending_converges(durable, tmp_path):
    _, pair = durable()
    bob_signs_but_accepts_are_lost(pair, 1)
    pair.restart(pair.bob)
    backup = tmp_path / "bob-backup"
    shutil.copytree(pair.bob.store.dir, backup)
    # Bob signs seq 2 too; that ACCEPT is lost as well.
    pair.alice.chan.issue({"pay": 1})
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()
    signed_2 = pair.bob.chan.in_flight()[-1]
    # Bob's disk is lost; he comes back from the backup holding seq 1 only.
    pair.bob.store.close()
    shutil.rmtree(pair.bob.store.dir)
    shutil.copytree(backup, pair.bob.store.dir)
    pair.bob.store = Store(pair.bob.store.dir)
    pair.bob.inbox.clear()
    pair.bob.channel = pair.bob.store.load(
        pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer, limits=pair.limits
    )
    assert [u.seq for u in pair.bob.chan.in_flight()] == [1]
    pair.resync()
    assert both_equal(pair) == 2
    # Seq 2 was re-proposed with the same bytes: Bob's signature is the same one.
    assert pair.alice.chan.committed.signatures[1] == signed_2.signatures[1]


def test_sequencer_force_move_then_late_accept_completes_the_same_update():
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    prop = only(duo.drain(0), Propose)
    duo.bob.receive(encode_message(prop))
    accept = only(duo.drain(1), Accept)
    forced = duo.alice.force_move({"cell": 0})
    assert forced.update == prop.update  # its own pending move, never a second one (I1)
    duo.drain(0)
    duo.alice.receive(encode_message(accept))
    duo.drain(0)
    assert duo.alice.committed.update == prop.update
    assert duo.alice.phase is Phase.DISPUTE


def test_sequencer_force_move_drops_a_pending_batch_and_ignores_its_late_accept():
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    duo.pump()
    duo.alice.limits = ChannelLimits(max_in_flight=1)
    ref = duo.bob.issue({"cell": 4})
    duo.pump()  # seq 2: O in cell 4
    duo.alice.issue({"cell": 8})
    prop = only(duo.drain(0), Propose)
    duo.bob.receive(encode_message(prop))
    accept = only(duo.drain(1), Accept)
    assert ref
    forced = duo.alice.force_move({"cell": 2})
    # Alice's pending proposal was her own single move: she forces that one, not cell 2.
    assert forced.update == prop.update
    duo.drain(0)
    duo.alice.receive(encode_message(accept))
    duo.drain(0)
    assert duo.alice.committed.seq == 3


def test_a_commit_for_the_wrong_seq_or_replayed_is_harmless():
    duo = opened()
    duo.alice.issue({"pay": 1})
    duo.pump()
    duo.alice.issue({"pay": 1})
    prop = only(duo.drain(0), Propose)
    duo.bob.receive(encode_message(prop))
    duo.drain(1)
    wrong = Commit(channel_id=duo.cid, seq=3, signature=duo.a.sign(digest(duo, prop.update)))
    with pytest.raises(RemoteViolation, match="has not signed"):
        duo.bob.receive(encode_message(wrong))
    replay = Commit(channel_id=duo.cid, seq=1, signature=duo.bob.committed.signatures[0])
    duo.bob.receive(encode_message(replay))
    assert duo.bob.effects() == [] and duo.bob.seq == 1


def test_tag_is_keyed_per_signer_and_checked_in_full():
    a, b = new_signer(), new_signer()
    d = bytes(range(32))
    assert a.tag(d) != b.tag(d) and len(a.tag(d)) == 32
    assert a.check_tag(d, a.tag(d))
    assert not a.check_tag(d, b.tag(d))
    assert not a.check_tag(d, a.tag(d)[:31])
    assert not a.check_tag(d, a.tag(d) + b"\x00")
    assert not a.check_tag(d, b"")
    # the tag is not the signature, nor derivable from the public key
    assert a.tag(d) != a.sign(d)[:32]


def test_follower_force_move_of_its_pending_update_survives_a_restart(durable):
    _, pair = durable("tictactoe", (500, 500))
    pair.alice.chan.issue({"cell": 0})
    pair.pump()
    pair.bob.chan.issue({"cell": 4})
    pair.drain(pair.bob)
    pair.alice.chan.receive(pair.alice.inbox.popleft())
    pair.drain(pair.alice)
    pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()  # the ACCEPT is lost; Alice goes silent
    forced = pair.bob.chan.force_move({"cell": 4})
    assert forced.seq == 2 and pair.bob.chan.phase is Phase.DISPUTE
    pair.drain(pair.bob)
    pair.restart(pair.bob)
    assert pair.bob.chan.phase is Phase.DISPUTE
    assert pair.bob.chan.force_base[0] == forced


def test_sequencer_restored_from_an_old_backup_completes_the_followers_pending(durable, tmp_path):
    _, pair = durable()
    pair.alice.chan.issue({"pay": 1})
    pair.pump()
    pair.restart(pair.alice)
    backup = tmp_path / "alice-backup"
    shutil.copytree(pair.alice.store.dir, backup)
    pair.resync()
    pair.alice.chan.issue({"pay": 1})
    pair.bob.chan.issue({"pay": 2})
    pair.pump()
    assert both_equal(pair) == 3
    bob_signs_but_accepts_are_lost(pair, 2)
    pair.alice.store.close()
    shutil.rmtree(pair.alice.store.dir)
    shutil.copytree(backup, pair.alice.store.dir)
    pair.alice.store = Store(pair.alice.store.dir)
    pair.alice.inbox.clear()
    pair.alice.channel = pair.alice.store.load(
        pair.params.channel_id, pair.app, pair.alice.l1.format, pair.alice.signer,
        limits=pair.limits,
    )  # fmt: skip
    assert pair.alice.chan.seq == 1
    pair.resync()
    assert both_equal(pair) == 5 and pair.bob.chan.state == (998, 502)
    pair.alice.chan.issue({"pay": 1})
    pair.pump()
    assert both_equal(pair) == 6


def test_sequencer_crash_between_accept_and_its_persist_converges(durable):
    """Alice took Bob's ACCEPT and signed, but crashed before her write: her signature
    never left; after the restart Bob's SIGNED completes the same update, once."""
    _, pair = durable()
    refs = [pair.alice.chan.issue({"pay": 4}) for _ in range(2)]
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    while pair.alice.inbox:
        pair.alice.chan.receive(pair.alice.inbox.popleft())
    pair.alice.chan.effects()  # signed and queued COMMITs, but neither written nor sent
    pair.restart(pair.alice)
    pair.resync()
    assert both_equal(pair) == 2 and pair.bob.chan.state == (992, 508)
    assert [c.ref for c in pair.alice.committed if c.local][-2:] == refs


def test_a_final_update_signed_before_the_sequencers_crash_closes_both(durable):
    _, pair = durable()
    pair.alice.chan.issue({"pay": 5})
    pair.pump()
    pair.alice.chan.close()
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()
    pair.restart(pair.alice)
    # Alice forgot the final she proposed: she queues a payment while awaiting Bob.
    late = pair.alice.chan.issue({"pay": 1})
    pair.resync()
    assert both_equal(pair) == 2
    assert pair.alice.chan.phase is Phase.CLOSED and pair.bob.chan.phase is Phase.CLOSED
    # The queued payment can never be done after the final update: it must be answered.
    assert late in [f.ref for f in pair.alice.failed]
    assert pair.alice.chan._st.queued == 0


def test_follower_keeps_a_late_commit_of_a_later_update_it_signed_after_forcing():
    duo = opened("tictactoe", (500, 500))
    duo.alice.issue({"cell": 0})
    duo.pump()
    duo.alice.limits = ChannelLimits(max_batch=1)
    duo.bob.issue({"cell": 4})
    for data in duo.drain(1):
        duo.alice.receive(data)
    p2 = only(duo.drain(0), Propose)
    duo.alice.issue({"cell": 8})
    p3 = only(duo.drain(0), Propose)
    duo.bob.receive(encode_message(p2))
    duo.bob.receive(encode_message(p3))
    accepts = duo.drain(1)
    forced = duo.bob.force_move({"cell": 4})  # Alice seemed slow: Bob goes to L1
    assert forced.update == p2.update
    duo.drain(1)
    for data in accepts:
        duo.alice.receive(data)
    commits = duo.drain(0)
    assert [parse_message(c).seq for c in commits] == [2, 3]
    for data in commits:
        duo.bob.receive(data)
    assert duo.bob.committed.seq == 3


def test_sequencer_force_move_of_its_pending_move_survives_a_restart(durable):
    _, pair = durable("tictactoe", (500, 500))
    pair.alice.chan.issue({"cell": 0})
    pair.drain(pair.alice)
    pair.bob.inbox.clear()  # the proposal is lost; Bob seems gone
    committed = pair.alice.chan.committed
    forced = pair.alice.chan.force_move({"cell": 0})
    assert forced.seq == committed.seq + 1
    pair.drain(pair.alice)
    pair.restart(pair.alice)
    assert pair.alice.chan.phase is Phase.DISPUTE
    assert pair.alice.chan.force_base[0] == forced


def test_a_hello_claiming_too_much_only_stalls_until_an_honest_resync(durable):
    _, pair = durable()
    bob_signs_but_accepts_are_lost(pair, 1)
    pair.restart(pair.alice)
    pair.alice.chan.resync()
    pair.drain(pair.alice)
    pair.bob.inbox.clear()
    c = pair.alice.chan.committed
    lie = Hello(
        channel_id=pair.params.channel_id,
        next_seq=c.seq + 1,
        head_hash=c.update.entry_hash(),
        signed_next=1 << 40,
    )
    pair.alice.chan.receive(encode_message(lie))
    pair.alice.chan.issue({"pay": 2})
    sent = [parse_message(e.data) for e in pair.alice.chan.effects() if hasattr(e, "data")]
    assert not any(isinstance(m, Propose) for m in sent)  # stalls, proposes nothing
    pair.resync()  # a new link with the honest Bob
    assert both_equal(pair) == 2 and pair.bob.chan.state == (997, 503)
