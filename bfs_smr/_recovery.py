"""Resynchronisation after a reconnect or restart, and restore from the peer (I7).

On (re)connect both parties call :meth:`Channel.resync`, which sends a HELLO naming where
their doubly-signed log ends. The party that is behind is sent the entries it lacks
(ENTRIES) and adopts each only after checking its link, both signatures and, by
re-execution, its state hash and outcome. The sequencer then re-sends the proposals it
signed but has not seen counter-signed, and the follower re-sends its pending requests; a
request the sequencer already handled is never executed twice. Nothing here signs: a
restarted party signs only through the normal paths, which respect I1.

These are the handlers behind :class:`Channel`'s resync inputs, kept in their own module
so that each module stays small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._codec import MAX_ITEMS
from ._errors import CommandRejected, LocalError
from ._messages import (
    MAX_ENTRIES,
    CloseRequest,
    CommandFailed,
    Entries,
    Hello,
    Request,
    SendMessage,
    ServeLog,
    encode_propose,
)
from ._update import SignedUpdate

if TYPE_CHECKING:
    from ._channel import Channel

#: Bytes of one resync message holding several entries (see serve_log): with one update
#: of MAX_UPDATE_ITEMS beside them, within the decoder's MAX_ITEMS.
_CHUNK_BYTES = MAX_ITEMS // 4

__all__ = [
    "CLOSE_MARK",
    "adopt",
    "on_entries",
    "on_hello",
    "repeated_request",
    "resync",
    "serve_log",
]

#: Marks a close request in the follower's request queue.
CLOSE_MARK = object()


def _head_hash(chan: Channel) -> bytes:
    committed = chan.committed
    return committed.update.entry_hash() if committed is not None else chan.params.genesis_hash


def resync(chan: Channel) -> None:
    # Proposals signed from now on go out on the new link as usual; only those signed
    # before it may have been lost and need re-sending once the peer says where it is.
    chan._retransmit_upto = chan._head_seq
    # New proposals wait until the older ones are re-sent, or the follower would get a
    # gap in its sequence (they go out in order on one link).
    chan._awaiting_hello = True
    # A new round: the peer may lack any part of the log again (after a restore, say).
    chan._served_upto = -1
    chan._send(Hello(channel_id=chan.channel_id, next_seq=chan.seq + 1, head_hash=_head_hash(chan)))
    # The follower re-sends what it asked for and has not seen answered; the sequencer
    # ignores or denies what it already handled, so nothing runs twice.
    for ref, what in chan._requests:
        if what is CLOSE_MARK:
            chan._send(CloseRequest(channel_id=chan.channel_id, ref=ref))
        else:
            chan._send(Request(channel_id=chan.channel_id, ref=ref, command=what))


def on_hello(chan: Channel, msg: Hello) -> None:
    mine = chan.seq + 1
    if msg.next_seq < mine:
        # Each entry goes out at most once per round (resync): a peer repeating HELLO
        # with next_seq 0 must not make this party re-serve its whole log each time.
        first = max(msg.next_seq, chan._served_upto + 1)
        if first < mine:
            chan._serving.append((first, chan.seq))
            chan._served_upto = chan.seq
            chan._out.append(ServeLog(first_seq=first, last_seq=chan.seq))
    elif msg.next_seq == mine and msg.head_hash != _head_hash(chan):
        raise chan._violation(f"the peer's log ends at seq {mine - 1} with another update (fork)")
    if msg.next_seq <= mine:
        retransmit(chan)
        _resume(chan)
    # Otherwise the peer is ahead: its ENTRIES follow, and we retransmit after them.


def _resume(chan: Channel) -> None:
    chan._awaiting_hello = False
    if chan.role.value == "sequencer":
        chan._pump()


def serve_log(chan: Channel, entries: list[SignedUpdate]) -> None:
    if not chan._serving:
        raise LocalError("no log range was asked for")
    first, last = chan._serving[0]
    if [e.seq for e in entries] != list(range(first, last + 1)):
        raise LocalError(f"serve_log needs exactly the entries {first}..{last}")
    chan._serving.popleft()
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
            chan._send(Entries(channel_id=chan.channel_id, entries=tuple(chunk)))
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        chan._send(Entries(channel_id=chan.channel_id, entries=tuple(chunk)))


def retransmit(chan: Channel) -> None:
    """Re-send, once per reconnect, the proposals signed before it that still wait for a
    counter-signature (the same bytes: I1)."""
    upto, chan._retransmit_upto = chan._retransmit_upto, -1
    for signed, _, _ in chan._in_flight:
        if signed.seq > upto:
            break
        sig = signed.signatures[chan.index]
        assert sig is not None
        chan._out.append(
            SendMessage(data=encode_propose(chan.channel_id, signed.update.body(), sig))
        )


def on_entries(chan: Channel, msg: Entries) -> None:
    adopted = 0
    for signed in msg.entries:
        if signed.seq <= chan.seq:
            continue  # already have it
        adopt(chan, signed)
        adopted += 1
    if adopted:
        if not chan._in_flight and not chan._queue:
            # Caught up past everything it had proposed (or it had nothing, as after a
            # restore from the peer): new proposals build on the adopted head. Commands
            # already queued were applied on top of the same updates, so their tip stands.
            chan._tip_state = chan.state
        retransmit(chan)
        _resume(chan)


def adopt(chan: Channel, signed: SignedUpdate) -> None:
    """Verify one doubly-signed entry that extends this party's log, and commit it."""
    u = signed.update
    committed = chan.committed
    if u.seq != chan.seq + 1 or u.prev_hash != _head_hash(chan):
        raise chan._violation(f"entry {u.seq} does not extend this party's seq {chan.seq}")
    if u.channel_id != chan.channel_id or u.app_id != chan.params.app_id:
        raise chan._violation(f"entry {u.seq} belongs to another channel or app")
    if committed is not None and committed.update.final:
        raise chan._violation(f"entry {u.seq} follows a final update")
    if not signed.verify(chan.params, chan.format):
        raise chan._violation(f"entry {u.seq} lacks a valid signature of both parties")
    try:
        if u.seq == 0:
            if u.commands:
                raise CommandRejected("the opening update has commands")
            state = chan.app.initial_state(chan.params)
        else:
            state = chan.state
            for entry in u.commands:
                state = chan._apply_peer_command(state, entry.command, entry.actor)
    except CommandRejected as exc:
        raise chan._violation(f"entry {u.seq}: invalid transition: {exc.reason}") from None
    chan._check_result(u, state, f"entry {u.seq}")
    if chan._in_flight:
        mine, _, _ = chan._in_flight[0]
        if mine.update != u:
            raise chan._violation(f"entry {u.seq} differs from this party's proposal (fork)")
        chan._in_flight.popleft()
    if chan._head_seq < u.seq:
        chan._head_seq = u.seq
        chan._head_hash = u.entry_hash()
    chan._commit(signed, state)
    _count_refs(chan, signed)
    # Our own commands in it are done; after a final update nothing else can be.
    done = {e.ref for e in u.commands if e.actor == chan.index}
    if done or u.final:
        still = [r for r in chan._requests if r[0] not in done]
        chan._requests.clear()
        for ref, what in still:
            if u.final:
                chan._out.append(CommandFailed(ref=ref, reason="channel closed"))
            else:
                chan._requests.append((ref, what))


def _count_refs(chan: Channel, signed: SignedUpdate) -> None:
    """Move both ref counters past the refs of an adopted entry.

    A party restored from an old backup learns here of commands it issued after that
    backup: its next ref must not repeat theirs, or the sequencer denies every new request
    as "already handled" (refs never repeat). The sequencer likewise learns of requests it
    sequenced after its backup, so a replay of one is never run twice.
    """
    for entry in signed.update.commands:
        if entry.actor == chan.index:
            if entry.ref >= chan._next_ref:
                chan._next_ref = entry.ref + 1
        elif entry.ref > chan._handled_peer_ref:
            chan._handled_peer_ref = entry.ref
            chan._last_peer_ref = max(chan._last_peer_ref, entry.ref)


def repeated_request(chan: Channel, ref: int) -> bool:
    """Handle a request whose ref was seen before (re-sent after a reconnect).

    Returns ``True`` if it was handled here (ignored, or denied as already handled),
    ``False`` if it is new.
    """
    if ref > chan._last_peer_ref:
        return False
    peer = chan.peer_index
    queued = any(e.ref == ref for group, _, _ in chan._queue for e in group if e.actor == peer)
    proposed = any(
        e.ref == ref and e.actor == peer for s, _, _ in chan._in_flight for e in s.update.commands
    )
    if not (queued or proposed):
        chan._deny(ref, "already handled")
    return True
