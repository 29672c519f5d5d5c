"""Resynchronisation after a reconnect or restart; restore (docs/design.md §4, I7).

On (re)connect both parties call :meth:`Channel.resync`, which sends a HELLO naming where
their doubly-signed log ends and how far they have signed. The party that is behind is
sent the entries it lacks (ENTRIES) and adopts each only after checking its link, both
signatures and, by re-execution, its state hash and outcome. The follower then re-sends
the updates it signed and has not seen committed (SIGNED, with the sequencer's tag on
each) and its pending requests; the sequencer completes those updates (after a crash it
recognises them by its tag), proposes nothing new until it has, and re-sends the
proposals the follower lacks. A request the sequencer already handled is never executed
twice. Nothing here signs but through the normal paths, which respect I1.

These are the handlers behind :class:`Channel`'s resync inputs, each taking the party's
:class:`~bfs_smr._state.ChannelState`, and :func:`restore`, which rebuilds that record
from what a party's store holds.
"""

from __future__ import annotations

from typing import Any

from . import _sequencer
from ._codec import MAX_ITEMS
from ._errors import LocalError
from ._messages import (
    MAX_ENTRIES,
    CloseRequest,
    CommandFailed,
    Entries,
    Hello,
    Request,
    SendMessage,
    ServeLog,
    Signed,
    encode_propose,
)
from ._state import (
    CLOSE_MARK,
    ChannelState,
    Phase,
    Role,
    check_result,
    commit,
    count_refs,
    replay,
    send,
    set_phase,
    violation,
)
from ._update import SignedUpdate

#: How far a restarted sequencer moves its next ref past the stored one (see restore):
#: more commands than it can have proposed and not seen committed between two writes.
REF_GAP = 1 << 32

#: Bytes of one resync message holding several entries (see serve_log): with one update
#: of MAX_UPDATE_ITEMS beside them, within the decoder's MAX_ITEMS.
_CHUNK_BYTES = MAX_ITEMS // 4

__all__ = ["adopt", "on_entries", "on_hello", "restore", "resync", "retransmit", "serve_log"]


def _head_hash(st: ChannelState) -> bytes:
    committed = st.committed
    return committed.update.entry_hash() if committed is not None else st.params.genesis_hash


def _seq(st: ChannelState) -> int:
    """Sequence number of the newest doubly-signed update (-1 before the opening one)."""
    return -1 if st.committed is None else st.committed.seq


def resync(st: ChannelState, _: Any = None) -> None:
    """Tell the peer where this party's log ends; the follower re-sends its requests."""
    # Proposals signed from now on go out on the new link as usual; only those signed
    # before it may have been lost and need re-sending once the peer says where it is.
    st.retransmit_upto = st.head_seq
    # New proposals wait until the older ones are re-sent, or the follower would get a
    # gap in its sequence (they go out in order on one link).
    st.awaiting_hello = True
    st.resume_at = None
    st.retransmit_after_serving = False
    # A new round: the peer may lack any part of the log again (after a restore, say).
    st.served_upto = -1
    signed_next = (st.head_seq if st.role is Role.FOLLOWER else _seq(st)) + 1
    send(
        st,
        Hello(
            channel_id=st.channel_id,
            next_seq=_seq(st) + 1,
            head_hash=_head_hash(st),
            signed_next=max(signed_next, _seq(st) + 1),
        ),
    )
    # The follower re-sends what it asked for and has not seen answered; the sequencer
    # ignores or denies what it already handled, so nothing runs twice.
    for ref, what in st.requests:
        if what is CLOSE_MARK:
            send(st, CloseRequest(channel_id=st.channel_id, ref=ref))
        else:
            send(st, Request(channel_id=st.channel_id, ref=ref, command=what))


def on_hello(st: ChannelState, msg: Hello) -> None:
    """Serve the peer what it lacks, or check that both logs end alike."""
    mine = _seq(st) + 1
    serving = False
    if msg.next_seq < mine:
        # Each entry goes out at most once per round (resync): a peer repeating HELLO
        # with next_seq 0 must not make this party re-serve its whole log each time.
        first = max(msg.next_seq, st.served_upto + 1)
        if first < mine:
            st.serving.append((first, _seq(st)))
            st.served_upto = _seq(st)
            st.out.append(ServeLog(first_seq=first, last_seq=_seq(st)))
            serving = True
    elif msg.next_seq == mine and msg.head_hash != _head_hash(st):
        raise violation(st, f"the peer's log ends at seq {mine - 1} with another update (fork)")
    if st.role is Role.SEQUENCER:
        # What the follower signed beyond this log comes as SIGNED; propose nothing at
        # those seqs before (resume waits), and do not re-send what it has.
        st.resume_at = max(msg.signed_next, msg.next_seq) - 1
        st.retransmit_from = msg.signed_next
    if msg.next_seq <= mine:
        if serving and st.role is Role.FOLLOWER:
            # SIGNED must follow the entries, or a sequencer behind cannot place them.
            st.retransmit_after_serving = True
        else:
            retransmit(st)
        _resume(st)
    # Otherwise the peer is ahead: its ENTRIES follow, and we retransmit after them.


def _resume(st: ChannelState) -> None:
    if st.role is Role.SEQUENCER:
        _sequencer.resume(st)
    else:
        st.awaiting_hello = False


def serve_log(st: ChannelState, entries: list[SignedUpdate]) -> None:
    """Send the entries the oldest unanswered ServeLog named, in messages the peer takes."""
    if not st.serving:
        raise LocalError("no log range was asked for")
    first, last = st.serving[0]
    if [e.seq for e in entries] != list(range(first, last + 1)):
        raise LocalError(f"serve_log needs exactly the entries {first}..{last}")
    st.serving.popleft()
    # Chunks of at most MAX_ENTRIES entries and _CHUNK_BYTES, or one entry alone: a log
    # of big batched updates must not become an ENTRIES message the peer refuses as too
    # large or as holding too many items (an update alone is within both: its commands
    # are bounded by MAX_UPDATE_COMMANDS and MAX_UPDATE_ITEMS; a chunk of several holds
    # at most as many items as bytes).
    chunk: list[SignedUpdate] = []
    size = 0
    for entry in entries:
        entry_size = len(entry.encoded())
        if chunk and (len(chunk) == MAX_ENTRIES or size + entry_size > _CHUNK_BYTES):
            send(st, Entries(channel_id=st.channel_id, entries=tuple(chunk)))
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        send(st, Entries(channel_id=st.channel_id, entries=tuple(chunk)))
    if not st.serving and st.retransmit_after_serving:
        st.retransmit_after_serving = False
        retransmit(st)


def retransmit(st: ChannelState) -> None:
    """Re-send, once per reconnect, what went out before it and may have been lost: the
    sequencer its proposals the follower has not signed (the same bytes), the follower
    the updates it signed and has not seen committed (SIGNED, with their tags)."""
    upto, st.retransmit_upto = st.retransmit_upto, -1
    if st.role is Role.FOLLOWER:
        for signed, _, _, tag in st.in_flight:
            if signed.seq > upto:
                break
            if not tag:
                continue  # its own force move (restored): on L1, not offered here
            sig = signed.signatures[st.index]
            assert sig is not None
            send(
                st,
                Signed(channel_id=st.channel_id, update=signed.update, signature=sig, tag=tag),
            )
        return
    for signed, _, _, tag in st.in_flight:
        if signed.seq > upto:
            break
        if signed.seq < st.retransmit_from:
            continue  # the follower signed it: its SIGNED answers it
        st.out.append(SendMessage(data=encode_propose(st.channel_id, signed.update.body(), tag)))


def on_entries(st: ChannelState, msg: Entries) -> None:
    """Adopt the entries this party lacks, each fully verified, then resume."""
    adopted = 0
    for signed in msg.entries:
        if signed.seq <= _seq(st):
            continue  # already have it
        adopt(st, signed)
        adopted += 1
    if adopted:
        if not st.in_flight and not st.queue:
            # Caught up past everything it had proposed (or it had nothing, as after a
            # restore from the peer): new proposals build on the adopted head. Commands
            # already queued were applied on top of the same updates, so their tip stands.
            st.tip_state = st.committed_state
        retransmit(st)
        _resume(st)


def adopt(st: ChannelState, signed: SignedUpdate) -> None:
    """Verify one doubly-signed entry that extends this party's log, and commit it."""
    u = signed.update
    committed = st.committed
    if u.seq != _seq(st) + 1 or u.prev_hash != _head_hash(st):
        raise violation(st, f"entry {u.seq} does not extend this party's seq {_seq(st)}")
    if u.channel_id != st.channel_id or u.app_id != st.params.app_id:
        raise violation(st, f"entry {u.seq} belongs to another channel or app")
    if committed is not None and committed.update.final:
        raise violation(st, f"entry {u.seq} follows a final update")
    if not signed.verify(st.params, st.format):
        raise violation(st, f"entry {u.seq} lacks a valid signature of both parties")
    state = replay(st, u, f"entry {u.seq}")
    check_result(st, u, state, f"entry {u.seq}")
    if st.in_flight:
        mine, _, _, _ = st.in_flight[0]
        if mine.update.body() != u.body():
            raise violation(st, f"entry {u.seq} differs from this party's proposal (fork)")
        st.in_flight.popleft()
    if st.head_seq < u.seq:
        st.head_seq = u.seq
        st.head_hash = u.entry_hash()
    commit(st, signed, state)
    count_refs(st, u)
    # Our own commands in it are done; after a final update nothing else can be.
    done = {e.ref for e in u.commands if e.actor == st.index}
    if done or u.final:
        still = [r for r in st.requests if r[0] not in done]
        st.requests.clear()
        for ref, what in still:
            if u.final:
                st.out.append(CommandFailed(ref=ref, reason="channel closed"))
            else:
                st.requests.append((ref, what))


def restore(
    st: ChannelState,
    *,
    committed: SignedUpdate | None,
    state: Any,
    proposals: list[tuple[SignedUpdate, Any] | tuple[SignedUpdate, Any, bytes]],
    requests: list[tuple[int, Any, bool]],
    next_ref: int,
    last_peer_ref: int,
) -> None:
    """Fill a fresh record with what a party's store holds (see :meth:`Channel.restore`).

    Raises:
        LocalError: the stored data does not fit together (a damaged store).
    """
    params, fmt = st.params, st.format
    st.next_ref = next_ref
    if st.role is Role.SEQUENCER and committed is not None:
        # Proposals are not written before they go out, so refs of commands proposed
        # before a crash may be newer than the stored counter; such a proposal can
        # still be completed (the follower shows it, SIGNED). Skip far ahead, so a
        # new command never takes a ref one of those carries.
        st.next_ref += REF_GAP
        # And propose nothing before the follower has said what it signed (the next
        # link's resync). Before the opening update is doubly signed there is nothing
        # to wait for: a proposal of it again is the same update (a new channel is
        # loaded this way too, on a link that is already up).
        st.awaiting_hello = True
    # Requests that were only queued died with the process; the peer re-sends them.
    st.last_peer_ref = st.handled_peer_ref = last_peer_ref
    if committed is not None:
        u = committed.update
        if u.channel_id != st.channel_id or not committed.verify(params, fmt):
            raise LocalError("stored head is not a doubly-signed update of this channel")
        if st.format.state_hash(st.app, state) != u.state_hash:
            raise LocalError("stored state does not match the stored head's state hash")
        st.committed, st.committed_state = committed, state
        st.head_seq, st.head_hash = u.seq, u.entry_hash()
        st.tip_state = state
        set_phase(st, Phase.CLOSED if u.final else Phase.OPEN)
    committed_seq = st.head_seq
    for stored in proposals:
        signed, pstate = stored[0], stored[1]
        tag = stored[2] if len(stored) > 2 else b""
        u = signed.update
        if not signed.verify(params, fmt, require=(st.index,)):
            raise LocalError(f"stored proposal {u.seq} is not signed by this party")
        extends = u.seq == st.head_seq + 1 and u.prev_hash == st.head_hash
        # A force move answering the peer's: it builds on the peer's forced move, which
        # is on L1 and not in this store, so it does not extend what is stored (it skips
        # that seq, or follows an own proposal the peer's move replaced).
        answers = (
            not extends
            and u.seq > committed_seq + 1
            and not u.final
            and len(u.commands) == 1
            and u.commands[0].actor == st.index
        )
        if not extends and not answers:
            raise LocalError(f"stored proposal {u.seq} does not extend the stored log")
        st.head_seq, st.head_hash = u.seq, u.entry_hash()
        if extends and st.role is Role.FOLLOWER:
            # An update it signed, awaiting COMMIT (kept so a late one completes it).
            st.in_flight.append((signed, pstate, fmt.digest(u, u.body()), tag))
            if u.final and st.phase is Phase.OPEN:
                set_phase(st, Phase.CLOSING)
        if not tag and (st.role is Role.SEQUENCER or not extends or st.dispute_base is None):
            # Signed alone, without a tag: this party's force move, the dispute's base.
            st.dispute_base = (signed, pstate)
            set_phase(st, Phase.DISPUTE)
    for ref, command, is_close in requests:
        if st.phase is Phase.CLOSED:
            break  # the final update answered them all (a store may still list some)
        st.requests.append((ref, CLOSE_MARK if is_close else command))
        if is_close and st.phase is Phase.OPEN:
            set_phase(st, Phase.CLOSING)
    # Requests the updates awaiting COMMIT carry were used up when they were signed.
    used = {e.ref for s, *_ in st.in_flight for e in s.update.commands if e.actor == st.index}
    if used or any(s.update.final for s, *_ in st.in_flight):
        final = any(s.update.final for s, *_ in st.in_flight)
        kept = [
            (ref, what)
            for ref, what in st.requests
            if ref not in used and not (final and what is CLOSE_MARK)
        ]
        st.requests.clear()
        st.requests.extend(kept)
