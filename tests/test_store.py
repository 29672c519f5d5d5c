"""The durable store and recovery: restart, resync, restore from the peer, damage."""

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import both_equal

from bfs_smr import (
    Channel,
    LocalError,
    Phase,
    RemoteViolation,
    SignedUpdate,
    verify_log,
)
from bfs_smr._messages import (
    Entries,
    Hello,
    Propose,
    SendMessage,
    Signed,
    encode_message,
    parse_message,
)
from bfs_smr._recovery import REF_GAP
from bfs_smr.runtime.store import Store, StoreError


def pay(pair, n, who="alice", amount=1):
    party = getattr(pair, who)
    return [party.chan.issue({"pay": amount}) for _ in range(n)]


# -- restart --------------------------------------------------------------------------


def test_restart_restores_every_field_exactly(durable):
    _, pair = durable()
    pay(pair, 20)
    pay(pair, 3, "bob", 2)
    pair.pump()
    before = [
        (p.chan.committed, p.chan.state, p.chan.next_ref, p.chan.last_peer_ref)
        for p in pair.parties
    ]
    for party in pair.parties:
        pair.restart(party)
    after = [
        (p.chan.committed, p.chan.state, p.chan.next_ref, p.chan.last_peer_ref)
        for p in pair.parties
    ]
    # A restarted sequencer skips REF_GAP refs: refs of proposals it made and did not
    # store may come back in the follower's SIGNED (docs/protocol.md).
    alice_before = before[0]
    before[0] = (*alice_before[:2], alice_before[2] + REF_GAP, alice_before[3])
    assert after == before
    assert pair.alice.chan.phase is Phase.OPEN
    pair.resync()  # the restarted parties reconnect
    pay(pair, 1)
    pair.pump()
    assert both_equal(pair) == 24  # 20 + 3 + 1 commands, one update each


def test_every_doubly_signed_update_is_in_the_log_and_verifies(durable):
    _, pair = durable()
    pay(pair, 30)
    pair.pump()
    for party in pair.parties:
        log = party.store.log_range(pair.params.channel_id, 0, party.chan.seq)
        assert verify_log(pair.params, pair.app, party.l1.format, log) == party.chan.state


# -- crashes at named protocol steps (the in-process half of the crash injector) ------


def test_a_proposal_writes_nothing_and_dies_with_a_sequencer_that_crashes(durable):
    # The follower signs first, so a proposal needs nothing durable before it leaves.
    _, pair = durable()
    pair.alice.chan.issue({"pay": 7})
    effects = pair.alice.chan.effects()
    assert [type(e) for e in effects] == [SendMessage]
    assert not pair.alice.store.persist(pair.alice.key, effects, pair.alice.chan)
    pair.restart(pair.alice)  # before it reached Bob: as if never issued
    assert pair.alice.chan.in_flight() == [] and pair.alice.chan.seq == 0
    pair.resync()
    pay(pair, 1)
    pair.pump()
    assert both_equal(pair) == 1 and pair.bob.chan.state == (999, 501)


def test_a_sequencer_that_crashed_completes_what_it_proposed_from_the_followers_copy(durable):
    # Bob signed and stored seq 1 and 2; the ACCEPTs are lost and Alice crashes, keeping
    # no copy of her proposals. Bob's SIGNED carries her tag on each: she recognises
    # them, signs them and commits, and her new commands take fresh refs.
    _, pair = durable()
    refs = pay(pair, 2)
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()
    pair.restart(pair.alice)
    assert pair.alice.chan.seq == 0 and pair.bob.chan.seq == 0
    assert [u.seq for u in pair.bob.chan.in_flight()] == [1, 2]
    new = pair.alice.chan.issue({"pay": 5})  # waits: Bob's SIGNED comes first
    assert new not in refs
    pair.resync()
    assert both_equal(pair) == 3 and pair.bob.chan.state == (993, 507)
    done = [c.ref for c in pair.alice.committed if c.local]
    assert done[-3:] == [*refs, new]


def test_a_sequencer_refuses_a_signed_update_without_its_tag(durable):
    _, pair = durable()
    pay(pair, 1)
    pair.drain(pair.alice)
    pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)
    pair.alice.inbox.clear()
    pair.restart(pair.alice)
    ((signed, *_),) = pair.bob.chan._st.in_flight
    forged = Signed(
        channel_id=pair.params.channel_id,
        update=signed.update,
        signature=signed.signatures[1],
        tag=bytes(32),
    )
    pair.alice.chan.resync()
    with pytest.raises(RemoteViolation, match="never proposed by this party"):
        pair.alice.chan.receive(encode_message(forged))
    assert pair.alice.chan.seq == 0


def test_follower_crash_after_persisting_a_request_before_sending(durable):
    _, pair = durable()
    ref = pair.bob.chan.issue({"pay": 9})
    effects = pair.bob.chan.effects()
    pair.bob.store.persist(pair.bob.key, effects, pair.bob.chan)
    pair.restart(pair.bob)
    pair.resync()  # Bob re-sends it; it commits exactly once
    assert pair.bob.chan.state == (1_009, 491)
    assert [c.ref for c in pair.bob.committed if c.local] == [ref]


def test_follower_crash_after_signing_before_the_accept_left(durable):
    _, pair = durable()
    pair.alice.chan.issue({"pay": 4})
    pair.drain(pair.alice)
    pair.bob.chan.receive(pair.bob.inbox.popleft())
    effects = pair.bob.chan.effects()
    pair.bob.store.persist(pair.bob.key, effects, pair.bob.chan)  # signed and durable, unsent
    pair.restart(pair.bob)
    pair.resync()
    assert both_equal(pair) == 1


def test_request_resent_after_a_reconnect_runs_once(durable):
    _, pair = durable(max_in_flight=1)
    pair.bob.chan.issue({"pay": 3})
    pair.bob.chan.issue({"pay": 3})
    pair.pump()
    pair.resync()  # nothing pending: resync changes nothing
    pair.bob.chan.issue({"pay": 3})
    pair.drain(pair.bob)
    pair.alice.chan.receive(pair.alice.inbox.popleft())  # Alice queued it ...
    pair.drain(pair.alice)
    pair.bob.inbox.clear()  # ... the link drops before Bob sees the proposal
    pair.alice.inbox.clear()
    pair.resync()  # Bob re-sends the request, Alice re-sends the proposal
    assert pair.bob.chan.state == (1_009, 491)
    assert sum(c.local for c in pair.bob.committed) == 3


def test_both_crash_during_a_cooperative_close(durable):
    _chain, pair = durable()
    pay(pair, 5)
    pair.pump()
    pair.alice.chan.close()
    pair.drain(pair.alice)  # the final proposal is sent (nothing written)
    pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)  # Bob signed it and stored that; the ACCEPT is lost
    pair.restart(pair.alice)
    pair.restart(pair.bob)
    assert pair.bob.chan.phase is Phase.CLOSING
    pair.resync()
    assert pair.alice.final is not None and pair.alice.final == pair.bob.final
    assert pair.alice.l1.cooperative_close(pair.alice.final) == (995, 505)


def test_proposals_are_resent_byte_for_byte(durable):
    _, pair = durable()
    pair.alice.chan.issue({"pay": 1})
    first = [e for e in pair.alice.chan.effects()]
    sent = first[-1].data  # lost with the link
    pair.alice.chan.resync()
    pair.bob.chan.resync()  # Bob is at seq 0 too: Alice retransmits on his HELLO
    pair.drain(pair.bob)
    bob_hello = pair.alice.inbox.popleft()
    pair.alice.chan.receive(bob_hello)
    again = [e.data for e in pair.alice.chan.effects() if hasattr(e, "data")]
    assert sent in again  # the very same signed bytes: no second signature at seq 1


# -- restore from the peer --------------------------------------------------------------


def test_restore_from_peer_with_only_the_key(durable, tmp_path):
    _, pair = durable()
    pay(pair, 12)
    pay(pair, 2, "bob", 5)
    pair.pump()
    bob_dir = pair.bob.store.dir
    pair.bob.store.close()
    shutil.rmtree(bob_dir)  # Bob's machine is gone; he has only his key
    fresh = Store(bob_dir)
    pair.bob.store = fresh
    # Bob learns the parameters from Alice and checks them against the channel id he
    # knows (from L1 or his records) before trusting anything.
    params = pair.alice.store.params(pair.params.channel_id)
    assert params.channel_id == pair.params.channel_id
    pair.bob.key = fresh.add_channel(params)
    pair.bob.channel = fresh.load(params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer)
    assert pair.bob.chan.committed is None
    pair.resync()
    assert both_equal(pair) == 14
    assert fresh.log_size(params.channel_id) == 15
    pay(pair, 1)
    pair.pump()
    assert both_equal(pair) == 15


def test_a_forged_tail_is_refused_and_the_newest_own_state_kept(durable):
    _, pair = durable()
    pay(pair, 3)
    pair.pump()
    good = pair.alice.store.log_range(pair.params.channel_id, 0, 3)
    pair.bob.store.close()
    shutil.rmtree(pair.bob.store.dir)
    pair.bob.store = Store(pair.bob.store.dir)
    pair.bob.key = pair.bob.store.add_channel(pair.params)
    pair.bob.channel = pair.bob.store.load(
        pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer
    )
    from bfs_smr._messages import Entries, encode_message

    forged = list(good)
    forged[2] = SignedUpdate(forged[2].update, (forged[2].signatures[0], forged[1].signatures[1]))
    data = encode_message(Entries(channel_id=pair.params.channel_id, entries=tuple(forged)))
    with pytest.raises(RemoteViolation, match="entry 2 lacks a valid signature") as info:
        pair.bob.chan.receive(data)
    # Entries before the bad one were checked and adopted; nothing after it was.
    assert pair.bob.chan.seq == 1 and info.value.recourse is not None


def test_resync_detects_a_fork_at_the_same_height(durable):
    _, pair = durable()
    pay(pair, 1)
    pair.pump()
    from bfs_smr._messages import Hello, encode_message

    data = encode_message(
        Hello(channel_id=pair.params.channel_id, next_seq=2, head_hash=b"\x01" * 32, signed_next=2)
    )
    with pytest.raises(RemoteViolation, match="fork"):
        pair.bob.chan.receive(data)


def _restore_backup(pair, party, backup):
    """``party``'s machine is rebuilt from an older copy of its data directory."""
    party.store.close()
    shutil.rmtree(party.store.dir)
    shutil.copytree(backup, party.store.dir)
    party.store = Store(party.store.dir)
    party.inbox.clear()
    party.channel = party.store.load(
        pair.params.channel_id, pair.app, party.l1.format, party.signer, limits=pair.limits
    )


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_a_party_restored_from_an_old_backup_goes_on_issuing(durable, tmp_path, who):
    # Defect: the restored follower adopted its newer requests from the sequencer's log,
    # but its ref counter stayed where the backup left it, so the sequencer denied every
    # request it sent from then on as "already handled".
    _, pair = durable()
    pay(pair, 2, "bob")
    pay(pair, 2, "alice")
    pair.pump()
    party = getattr(pair, who)
    pair.restart(party)  # closes the store, so the copy has everything durable so far
    backup = tmp_path / "backup"
    shutil.copytree(party.store.dir, backup)
    pair.resync()  # the restarted party reconnects
    pay(pair, 5, "bob")
    pay(pair, 3, "alice")
    pair.pump()
    assert both_equal(pair) == 12
    _restore_backup(pair, party, backup)
    assert party.chan.seq == 4
    pair.resync()
    assert both_equal(pair) == 12
    assert pair.bob.chan.state == (1_000 - 5 + 7, 500 + 5 - 7)
    failed_before = len(pair.bob.failed)
    refs = pay(pair, 3, "bob", 10) + pay(pair, 1, "alice", 10)
    pair.pump()
    assert len(pair.bob.failed) == failed_before, pair.bob.failed  # none "already handled"
    assert both_equal(pair) == 16
    assert pair.bob.chan.state == (1_000 - 5 + 7 + 20, 500 + 5 - 7 - 20)
    # Every party's new refs are fresh: none repeats a ref of its own in the log.
    log = party.store.log_range(pair.params.channel_id, 0, 16)
    own = [e.ref for u in log for e in u.update.commands if e.actor == (who == "bob")]
    assert len(own) == len(set(own)) and len(refs) == 4


def test_a_follower_restarted_after_a_close_it_asked_for_sends_nothing(durable):
    # Defect: the close request stayed in the follower's store after the final update
    # answered it; after a restart the follower re-sent it, and the sequencer (closed)
    # called that a violation and dropped the link on every reconnect.
    _, pair = durable()
    pay(pair, 2)
    pair.bob.chan.close()
    pair.pump()
    assert pair.alice.chan.phase is pair.bob.chan.phase is Phase.CLOSED
    pair.restart(pair.bob)
    pair.restart(pair.alice)
    assert pair.bob.chan.pending == 0
    pair.bob.chan.resync()
    sent = [parse_message(e.data) for e in pair.bob.chan.effects() if hasattr(e, "data")]
    assert [type(m) for m in sent] == [Hello]
    pair.resync()
    assert both_equal(pair) == 3


def test_a_repeated_hello_does_not_make_a_party_serve_its_log_again(durable):
    # Defect 9: each HELLO with next_seq 0 made a party re-serve its whole log; a peer
    # could repeat it to make the node read and send its log over and over.
    _, pair = durable()
    pay(pair, 40)
    pair.pump()
    pair.resync()

    def served_by_alice(next_seq, hellos):
        """Entries Alice sends for ``hellos`` HELLOs from Bob saying ``next_seq``."""
        hello = Hello(
            channel_id=pair.params.channel_id,
            next_seq=next_seq,
            head_hash=bytes(32),
            signed_next=next_seq,
        )
        pair.bob.inbox.clear()
        for _ in range(hellos):
            pair.alice.chan.receive(encode_message(hello))
            pair.drain(pair.alice)
        messages = [parse_message(m) for m in pair.bob.inbox]
        pair.bob.inbox.clear()
        return sum(len(m.entries) for m in messages if isinstance(m, Entries))

    assert served_by_alice(0, 100) == 41  # once, not 100 times
    assert served_by_alice(0, 100) == 0
    pair.alice.chan.resync()  # a new link: a peer that lost its store can restore again
    pair.drain(pair.alice)
    assert served_by_alice(0, 100) == 41
    # A peer that is merely behind gets what it lacks, once a link.
    pair.alice.chan.resync()
    pair.drain(pair.alice)
    assert served_by_alice(30, 1) == 11
    assert served_by_alice(30, 100) == 0
    assert served_by_alice(0, 100) == 0


def test_two_log_ranges_asked_for_in_one_step_are_both_served(durable):
    # A HELLO, a commit and another HELLO handled before the driver carries out the
    # first ServeLog: the channel remembered only the newest range, so answering the
    # first raised LocalError (a node closed the link on it).
    _, pair = durable()
    pay(pair, 40)
    pair.pump()
    pair.resync()
    cid, alice = pair.params.channel_id, pair.alice.chan
    hello = Hello(channel_id=cid, next_seq=35, head_hash=bytes(32), signed_next=35)
    alice.receive(encode_message(hello))
    alice.issue({"pay": 1})  # proposed; Bob signs it below
    ((signed, _, _, tag),) = alice._st.in_flight  # its PROPOSE is still in alice's effects
    pair.bob.chan.receive(encode_message(Propose(channel_id=cid, update=signed.update, tag=tag)))
    pair.drain(pair.bob)
    alice.receive(pair.alice.inbox.popleft())  # seq 41 is doubly signed
    hello = Hello(channel_id=cid, next_seq=0, head_hash=bytes(32), signed_next=0)
    alice.receive(encode_message(hello))
    pair.bob.inbox.clear()
    pair.drain(pair.alice)
    served = [parse_message(m) for m in pair.bob.inbox]
    seqs = [e.seq for m in served if isinstance(m, Entries) for e in m.entries]
    assert seqs == list(range(35, 42))


# -- a damaged store ------------------------------------------------------------------


def reopen(pair, party):
    party.store.close()
    store = Store(party.store.dir)
    return store, store.load(pair.params.channel_id, pair.app, party.l1.format, party.signer)


def test_truncated_database_file_is_named(durable):
    _, pair = durable()
    pay(pair, 3)
    pair.pump()
    pair.bob.store.close()
    path = pair.bob.store.path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    with pytest.raises(StoreError) as info:
        Store(path.parent).load(
            pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer
        )
    assert str(path) in str(info.value)


def test_flipped_byte_in_the_head_is_detected_before_any_signing(durable):
    _, pair = durable()
    pay(pair, 3)
    pair.pump()
    pair.bob.store.close()
    db = sqlite3.connect(pair.bob.store.path)
    (head,) = db.execute("SELECT head FROM channels").fetchone()
    flipped = bytearray(head)
    flipped[-5] ^= 0x01  # inside a signature
    db.execute("UPDATE channels SET head=?", (bytes(flipped),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="damaged") as info:
        Store(pair.bob.store.dir).load(
            pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer
        )
    assert str(pair.bob.store.path) in str(info.value)


def test_flipped_byte_in_the_state_is_detected(durable):
    _, pair = durable()
    pay(pair, 3)
    pair.pump()
    pair.alice.store.close()
    db = sqlite3.connect(pair.alice.store.path)
    db.execute("UPDATE channels SET head_state=?", (b"\x82\x19\x03\xe4\x19\x01\xf7",))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="state hash"):
        Store(pair.alice.store.dir).load(
            pair.params.channel_id, pair.app, pair.alice.l1.format, pair.alice.signer
        )


def test_missing_database_file_is_named(durable):
    _, pair = durable()
    pair.bob.store.close()
    for f in pair.bob.store.dir.iterdir():
        f.unlink()
    with pytest.raises(StoreError, match="not in this store") as info:
        Store(pair.bob.store.dir).load(
            pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer
        )
    assert str(pair.bob.store.path) in str(info.value)


def _set_read_only(path, on):
    if os.geteuid() == 0:  # root ignores permission bits; the immutable flag binds it too
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)
    else:
        path.chmod(0o500 if on else 0o700)


def test_read_only_directory_is_refused_and_nothing_is_lost(durable):
    _, pair = durable()
    pay(pair, 4)
    pair.pump()
    before = pair.bob.chan.committed
    pair.bob.store.close()
    directory = pair.bob.store.dir
    _set_read_only(directory, True)
    try:
        with pytest.raises(StoreError) as info:
            Store(directory).load(
                pair.params.channel_id, pair.app, pair.bob.l1.format, pair.bob.signer
            )
        assert str(directory) in str(info.value)
    finally:
        _set_read_only(directory, False)
    store, chan = reopen(pair, pair.bob)
    assert chan.committed == before
    store.close()


def test_full_disk_refuses_the_step_and_keeps_what_was_durable(durable):
    _, pair = durable()
    pay(pair, 2)
    pair.pump()
    before = pair.bob.chan.committed
    store = pair.bob.store
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # the disk is now full
    for _ in range(200):
        pair.alice.chan.issue({"pay": 1})
    with pytest.raises(StoreError, match="full"):
        pair.pump()
    # Bob signed in memory but nothing of the step left: Alice has no counter-signature.
    assert pair.alice.chan.seq == before.seq
    store2, chan = reopen(pair, pair.bob)
    assert chan.committed == before  # nothing already durable was lost
    store2.close()


def test_the_channel_cannot_be_added_twice(durable):
    _, pair = durable()
    with pytest.raises(LocalError, match="already"):
        pair.alice.store.add_channel(pair.params)


def test_restore_refuses_a_head_of_another_channel(durable):
    _, pair = durable()
    pay(pair, 1)
    pair.pump()
    import dataclasses

    other = dataclasses.replace(pair.params, nonce=99)
    with pytest.raises(LocalError, match="not a doubly-signed update of this channel"):
        Channel.restore(
            other,
            pair.app,
            pair.alice.l1.format,
            pair.alice.signer,
            committed=pair.alice.chan.committed,
            state=pair.alice.chan.state,
        )


def test_commands_queued_while_catching_up_build_on_the_adopted_entries(durable):
    """Found by the crash injector: the tip was reset under queued commands."""
    _, pair = durable()
    pay(pair, 3)
    pair.drain(pair.alice)
    while pair.bob.inbox:
        pair.bob.chan.receive(pair.bob.inbox.popleft())
    pair.drain(pair.bob)  # Bob signed 1..3; Alice never hears it
    pair.restart(pair.alice)
    pair.alice.chan.resync()  # Alice waits for Bob's HELLO and ENTRIES ...
    pay(pair, 2)  # ... while her user keeps paying: these are queued on her tip
    pair.bob.chan.resync()
    pair.pump()
    pay(pair, 1)  # built on the tip, which must include the two queued payments
    pair.pump()
    assert both_equal(pair) == 6 and pair.bob.chan.state == (994, 506)


# -- the compact log --------------------------------------------------------------------


def test_any_log_range_rebuilds_the_exact_signed_updates(durable):
    # Rows keep their previous hash only at every CHECKPOINT-th seq; ranges that start
    # between checkpoints are rebuilt by hashing forward from the one before.
    from bfs_smr.runtime.store import CHECKPOINT

    _, pair = durable()
    for _ in range(3 * CHECKPOINT // 8):
        pay(pair, 8)
        pair.pump()
    cid = pair.params.channel_id
    newest = pair.alice.chan.seq
    assert newest > 2 * CHECKPOINT
    whole = pair.alice.store.log_range(cid, 0, newest)
    assert whole[-1] == pair.alice.chan.committed
    assert verify_log(pair.params, pair.app, pair.alice.l1.format, whole) == pair.alice.chan.state
    for first, last in [(1, 1), (CHECKPOINT - 1, CHECKPOINT + 1), (CHECKPOINT + 5, newest)]:
        assert pair.bob.store.log_range(cid, first, last) == whole[first : last + 1]
    # Rows are assembled from pieces of the body: they must be the canonical encoding.
    from bfs_smr import encode
    from bfs_smr.runtime.store import log_row

    for signed in whole[CHECKPOINT - 2 : CHECKPOINT + 2]:
        u = signed.update
        prev = u.prev_hash if u.seq % CHECKPOINT == 0 else None
        commands = [c.to_value() for c in u.commands]
        fields = [prev, commands, u.state_hash, list(u.outcome), u.final, list(signed.signatures)]
        assert log_row(signed) == encode(fields)


def test_a_log_row_that_does_not_link_is_reported_damaged(durable):
    from bfs_smr.runtime.store import CHECKPOINT, StoreError

    _, pair = durable()
    for _ in range(CHECKPOINT // 8 + 1):
        pay(pair, 8)
        pair.pump()
    store, cid = pair.alice.store, pair.params.channel_id
    db = store._db
    row = db.execute("SELECT signed FROM log WHERE seq=?", (CHECKPOINT,)).fetchone()[0]
    # The checkpoint row's own previous hash, changed: it no longer links to seq - 1.
    bad = row.replace(pair.alice.store.log_range(cid, CHECKPOINT - 1, CHECKPOINT - 1)[0]
                      .update.entry_hash(), b"\x07" * 32)  # fmt: skip
    assert bad != row
    db.execute("UPDATE log SET signed=? WHERE seq=?", (bad, CHECKPOINT))
    with pytest.raises(StoreError, match="does not link"):
        store.log_range(cid, CHECKPOINT - 1, CHECKPOINT)


def test_a_version_1_store_is_migrated_on_open(durable, tmp_path):
    from bfs_smr import encode

    _, pair = durable()
    pay(pair, 5)
    pair.pump()
    cid = pair.params.channel_id
    before = pair.alice.store.log_range(cid, 0, pair.alice.chan.seq)
    # Turn the store back into version 1: whole signed updates in the log.
    db = pair.alice.store._db
    for signed in before:
        db.execute("UPDATE log SET signed=? WHERE seq=?", (encode(signed.to_value()), signed.seq))
    db.execute("UPDATE meta SET value=1 WHERE key='schema'")
    pair.alice.store.close()
    with Store(tmp_path / "alice") as reopened:
        assert reopened.log_range(cid, 0, len(before) - 1) == before
        version = reopened._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        assert version[0] == 2


def test_a_peer_restores_a_log_of_big_batches_in_messages_it_accepts(durable, tmp_path):
    # Found while adding batches: ENTRIES were cut by count only, so 1,024 updates of a
    # thousand payments made a 15 MB message the peer refuses as oversized, and the resync
    # would have retried it forever. Now they are cut by size too.
    from bfs_smr import MAX_MESSAGE_SIZE
    from bfs_smr._messages import Entries, parse_message

    _, pair = durable(deposits=(60_000, 0), max_in_flight=4)
    for _ in range(50):
        pair.alice.chan.issue_batch([{"pay": 1}] * 1_000)
        pair.pump()
    assert pair.bob.chan.seq == 50 and pair.bob.chan.state == (10_000, 50_000)
    cid = pair.params.channel_id
    pair.bob.store.close()
    shutil.rmtree(pair.bob.store.dir)  # Bob lost everything; Alice serves him her log
    pair.bob.store = Store(pair.bob.store.dir)
    pair.bob.key = pair.bob.store.add_channel(pair.params)
    pair.bob.channel = pair.bob.store.load(cid, pair.app, pair.bob.l1.format, pair.bob.signer)
    sizes = []
    receive = pair.bob.chan.receive

    def measured(data):
        if isinstance(parse_message(data), Entries):
            sizes.append(len(data))
        receive(data)

    pair.bob.chan.receive = measured
    pair.resync()
    assert pair.bob.chan.committed == pair.alice.chan.committed
    assert len(sizes) > 1 and max(sizes) <= MAX_MESSAGE_SIZE


def test_commands_too_big_for_one_update_are_refused_before_anything_is_issued(durable):
    from bfs_smr._channel import MAX_UPDATE_COMMANDS

    _, pair = durable()
    memo = "x" * (MAX_UPDATE_COMMANDS // 4)
    for party in (pair.alice, pair.bob):
        with pytest.raises(LocalError, match="one update carries at most"):
            party.chan.issue({"pay": 1, "memo": memo * 5})
        assert party.chan.effects() == [] and party.chan.pending == 0
    # The sequencer's batch is one update, so it is bounded as a whole (the follower's
    # commands travel as separate requests, each bounded on its own).
    with pytest.raises(LocalError, match="one update carries at most"):
        pair.alice.chan.issue_batch([{"pay": 1, "memo": memo}] * 5)
    assert pair.alice.chan.effects() == [] and pair.alice.chan.pending == 0
    pay(pair, 1)
    pair.pump()
    assert both_equal(pair) == 1


@pytest.mark.parametrize("answerer", ["alice", "bob"])
def test_a_party_that_answered_a_forced_move_restarts(durable, answerer):
    # Found by the soak test (issue 11): a node that answered the peer's forced move with
    # its own could never start again ("stored proposal N does not extend the stored
    # log"): the peer's move in between is on L1, not in the store.
    _, pair = durable("tictactoe", (10, 10))
    pair.alice.chan.issue({"cell": 0})
    pair.pump()
    pair.bob.chan.issue({"cell": 4})
    pair.pump()
    mover, other = (pair.bob, pair.alice) if answerer == "alice" else (pair.alice, pair.bob)
    if answerer == "bob":  # Alice to move at seq 2: Bob answers her move, then she his
        first = pair.alice.chan.force_move({"cell": 8})
    else:  # Alice moves, so Bob is to move: he forces, Alice answers
        pair.alice.chan.issue({"cell": 8})
        pair.pump()
        first = pair.bob.chan.force_move({"cell": 2})
        mover, other = pair.bob, pair.alice
    pair.drain(mover)
    other.chan.adopt_forced_move(first)
    answer = other.chan.force_move({"cell": 6})
    pair.drain(other)
    assert answer.seq == first.seq + 1
    pair.restart(other)
    chan = other.chan
    assert chan.phase is Phase.DISPUTE
    assert chan.force_base[0] == answer  # the dispute goes on from its own answer
    with pytest.raises(LocalError, match="not this party's move"):
        chan.force_move({"cell": 7})  # the peer's turn, after its answer
    # The peer's next forced move, on top of the answer, is taken after the restart.
    mover.chan.adopt_forced_move(answer)
    reply = mover.chan.force_move({"cell": 1})
    chan.adopt_forced_move(reply)
    assert chan.force_base[0] == reply
