"""The sequencer's handlers (participant 0; docs/design.md §4, I6).

The sequencer alone proposes updates, chaining each on its previous proposal, with up to
``max_in_flight`` awaiting the follower's signature. The follower signs first: a proposal
goes out unsigned, with the sequencer's tag, and nothing is written; the sequencer signs
an update once the follower's ACCEPT carries the follower's signature, persists it as
doubly signed and sends its own signature in a COMMIT (docs/protocol.md). Its own commands and the
follower's requests wait in one queue for a window slot; under load they go out together,
up to ``max_batch`` commands in one update. Each handler takes the party's
:class:`~bfs_smr._state.ChannelState`; :data:`~bfs_smr._channel.TRANSITIONS` says in which
phase each one runs.
"""

from __future__ import annotations

from typing import Any

from ._codec import check_plain
from ._codec import hash_bytes as _hash
from ._errors import CodecError, CommandRejected, LocalError
from ._messages import (
    Accept,
    CloseRequest,
    CommandFailed,
    Commit,
    Request,
    SendMessage,
    Signed,
    encode_propose,
)
from ._state import (
    MAX_UPDATE_COMMANDS,
    ChannelState,
    Phase,
    apply_own,
    apply_peer_command,
    check_local_command,
    check_result,
    commands_size,
    commit,
    count_refs,
    deny,
    replay,
    send,
    set_phase,
    violation,
)
from ._update import CommandEntry, SignedUpdate, Update

__all__ = [
    "close",
    "issue",
    "issue_batch",
    "on_accept",
    "on_close_request",
    "on_request",
    "on_signed",
    "propose",
    "pump",
    "repeated_request",
    "resume",
    "start",
]

#: Why the sequencer denies a request in each phase but OPEN.
_NOT_SEQUENCING = {
    Phase.OPENING: "the channel is not open yet",
    Phase.CLOSING: "channel is closing",
    Phase.CLOSED: "the channel is closed",
    Phase.DISPUTE: "the channel is in dispute on L1",
}


def start(st: ChannelState, _: Any) -> None:
    """Propose the opening update (once)."""
    if st.head_seq >= 0:
        return  # already proposed the opening update
    try:
        state = st.app.initial_state(st.params)
    except CommandRejected as exc:
        raise LocalError(f"app refuses these channel parameters: {exc.reason}") from None
    st.tip_state = state
    propose(st, (), state, final=False)


def propose(
    st: ChannelState, entries: tuple[CommandEntry, ...], state: Any, *, final: bool
) -> None:
    """Send the next update on the chain tip, unsigned, with this party's tag on it.

    Nothing is signed, so nothing needs to be durable before it leaves (I1): the
    follower signs first.
    """
    update = Update(
        channel_id=st.channel_id,
        seq=st.head_seq + 1,
        prev_hash=st.head_hash,
        app_id=st.params.app_id,
        commands=entries,
        state_hash=st.format.state_hash(st.app, state),
        outcome=st.app.checked_outcome(state, st.params),
        final=final,
    )
    body = update.body()
    digest = st.format.digest(update, body)
    tag = st.signer.tag(digest)
    st.head_seq = update.seq
    st.head_hash = _hash(body)
    st.in_flight.append((SignedUpdate(update, (None, None)), state, digest, tag))
    peer = st.peer_index
    for entry in entries:
        if entry.actor == peer and entry.ref > st.handled_peer_ref:
            st.handled_peer_ref = entry.ref
    st.out.append(SendMessage(data=encode_propose(st.channel_id, body, tag)))


def pump(st: ChannelState) -> None:
    """Propose what is queued while the window has room; then the final update, if a
    close is wanted and nothing is left before it."""
    if st.phase is Phase.DISPUTE or st.phase is Phase.CLOSED or st.awaiting_hello:
        return  # (closed: a final update adopted from the peer's log ended it)
    queue, in_flight = st.queue, st.in_flight
    max_in_flight, max_batch = st.limits.max_in_flight, st.limits.max_batch
    app, peer = st.app, st.peer_index
    while queue and len(in_flight) < max_in_flight:
        before = in_flight[-1][1] if in_flight else st.committed_state
        entries, state, size = queue.popleft()
        # Under load (the window full, so commands queued up), fill the update up to
        # max_batch commands and MAX_UPDATE_COMMANDS bytes; a caller's batch is never
        # split. Not when it is the follower's turn in a game: its move goes alone, so
        # that, having signed it first, it can still force it on L1 (docs/protocol.md).
        alone = app.to_move(before) == peer
        while (
            not alone
            and queue
            and len(entries) + len(queue[0][0]) <= max_batch
            and size + queue[0][2] <= MAX_UPDATE_COMMANDS
        ):
            more, state, more_size = queue.popleft()
            entries += more
            size += more_size
        st.queued -= len(entries)
        propose(st, entries, state, final=False)
    if st.close_wanted and not st.final_proposed and not queue and len(in_flight) < max_in_flight:
        st.final_proposed = True
        propose(st, (), st.tip_state, final=True)


def issue(st: ChannelState, command: Any) -> int:
    refs: list[int] = issue_batch(st, [command])
    return refs[0]


def issue_batch(st: ChannelState, commands: list[Any]) -> list[int]:
    if not commands:
        raise LocalError("a batch holds at least one command")
    max_queue = st.limits.max_queue
    if st.queued + len(commands) > max_queue:
        raise LocalError(f"{max_queue} commands are already waiting; try again later")
    items = sum(check_local_command(command) for command in commands)
    size = commands_size(commands, items)
    state = apply_own(st, st.tip_state, commands)
    index = st.index
    first = st.next_ref
    st.next_ref += len(commands)
    refs = list(range(first, first + len(commands)))
    entries = tuple(CommandEntry(index, ref, c) for ref, c in zip(refs, commands, strict=True))
    st.queue.append((entries, state, size))
    st.queued += len(commands)
    st.tip_state = state
    pump(st)
    return refs


def close(st: ChannelState, _: Any) -> None:
    """Propose the final update after everything already queued."""
    if not st.app.may_close(st.tip_state):
        raise LocalError(f"{st.app.name} does not allow a cooperative close in this state")
    set_phase(st, Phase.CLOSING)
    st.close_wanted = True
    pump(st)


def on_accept(st: ChannelState, msg: Accept) -> None:
    """The follower's signature on the oldest proposal in flight: sign it too, persist
    it as doubly signed, and send this party's signature (COMMIT)."""
    committed = st.committed
    if committed is not None and msg.seq <= committed.seq:
        # The answer to a retransmitted proposal (after a reconnect) that was already
        # committed here: both signatures are in hand, there is nothing to learn.
        return
    if not st.in_flight:
        if st.phase is Phase.DISPUTE:
            return  # proposals were dropped when this party forced a move (never signed)
        raise violation(st, "a signature on an update that was not proposed")
    signed, _, digest, _ = st.in_flight[0]
    if msg.seq != signed.seq:
        if st.phase is Phase.DISPUTE:
            return
        raise violation(st, f"a signature on seq {msg.seq}, expected {signed.seq}")
    if not st.format.scheme.verify(st.peer_key, digest, msg.signature):
        raise violation(st, f"invalid signature on seq {msg.seq}")
    _complete(st, msg.signature)


def _complete(st: ChannelState, theirs: bytes) -> None:
    """Sign the oldest update in flight, which the follower signed with ``theirs``, and
    commit it; then propose what waits."""
    signed, state, digest, _ = st.in_flight.popleft()
    mine = signed.signatures[st.index]
    if mine is None:
        mine = st.signer.sign(digest)
    both = (mine, theirs) if st.index == 0 else (theirs, mine)
    commit(st, SignedUpdate(signed.update, both), state)
    # The COMMIT carries this party's signature: after the PersistUpdate commit queued.
    send(st, Commit(channel_id=st.channel_id, seq=signed.seq, signature=mine))
    pump(st)


def on_signed(st: ChannelState, msg: Signed) -> None:
    """On resync, an update the follower signed and has not seen committed.

    If it is still in flight here, it answers like an ACCEPT. After a crash this party
    has no copy: it takes the update if it extends its log and carries its own tag (so
    it proposed it), and completes it; its commands are re-executed like a peer's.
    """
    u = msg.update
    committed = st.committed
    if committed is not None and u.seq <= committed.seq:
        return  # committed here already; the follower learns it from the entries served
    if st.in_flight:
        signed = st.in_flight[0][0]
        if u.seq != signed.seq or u.body() != signed.update.body():
            if st.phase is Phase.DISPUTE:
                return
            raise violation(st, f"seq {u.seq} signed by the peer is not the proposal in flight")
        # The proposal in flight, signed by the peer: an ACCEPT in all but name.
        on_accept(st, Accept(channel_id=st.channel_id, seq=u.seq, signature=msg.signature))
        _resume_if_caught_up(st)
        return
    if st.phase is Phase.DISPUTE or u.seq != st.head_seq + 1:
        return  # not placeable now: after entries this party lacks (they come first)
    if u.prev_hash != st.head_hash or u.channel_id != st.channel_id:
        raise violation(st, f"seq {u.seq} signed by the peer does not extend this log")
    if u.app_id != st.params.app_id:
        raise violation(st, f"seq {u.seq} names app {u.app_id!r}")
    body = u.body()
    digest = st.format.digest(u, body)
    if not st.signer.check_tag(digest, msg.tag):
        raise violation(st, f"seq {u.seq} was never proposed by this party (its tag is wrong)")
    if not st.format.scheme.verify(st.peer_key, digest, msg.signature):
        raise violation(st, f"invalid signature on seq {u.seq}")
    if u.seq == 0 and u.final:
        raise violation(st, "seq 0: invalid transition: the opening update is final")
    state = replay(st, u, f"seq {u.seq}")
    check_result(st, u, state, f"seq {u.seq}")
    count_refs(st, u)
    st.head_seq, st.head_hash = u.seq, _hash(body)
    if u.final:
        st.close_wanted = st.final_proposed = True
        if st.phase is Phase.OPEN:
            set_phase(st, Phase.CLOSING)
    st.in_flight.append((SignedUpdate(u, (None, None)), state, digest, msg.tag))
    _rebase_queue(st, state)
    _complete(st, msg.signature)
    if u.final:
        _fail_queue(st, "channel closed")
    _resume_if_caught_up(st)


def _fail_queue(st: ChannelState, reason: str) -> None:
    """Nothing queued can be proposed any more (a final update ended the channel)."""
    while st.queue:
        entries, _, _ = st.queue.popleft()
        for entry in entries:
            if entry.actor == st.index:
                st.out.append(CommandFailed(ref=entry.ref, reason=reason))
            else:
                deny(st, entry.ref, reason)
    st.queued = 0


def _rebase_queue(st: ChannelState, base: Any) -> None:
    """Re-apply the queued commands on ``base``, a tip this party learned of after it
    queued them (a proposal of its own from before a crash); refuse those that no longer
    apply."""
    groups = list(st.queue)
    st.queue.clear()
    st.queued = 0
    state = base
    for entries, _, size in groups:
        after = state
        try:
            for entry in entries:
                after = apply_peer_command(st, after, entry.command, entry.actor)
        except CommandRejected as exc:
            for entry in entries:
                if entry.actor == st.index:
                    st.out.append(CommandFailed(ref=entry.ref, reason=exc.reason))
                else:
                    deny(st, entry.ref, exc.reason)
            continue
        state = after
        st.queue.append((entries, state, size))
        st.queued += len(entries)
    st.tip_state = state


def resume(st: ChannelState) -> None:
    """End a resync's wait, once the peer's HELLO has come and this party's chain covers
    every update the follower said it signed; then propose what waits."""
    if st.resume_at is None or st.head_seq < st.resume_at:
        return  # the follower's SIGNED updates are still to come
    st.awaiting_hello = False
    pump(st)


def _resume_if_caught_up(st: ChannelState) -> None:
    if st.awaiting_hello:
        resume(st)


def on_request(st: ChannelState, msg: Request) -> None:
    """Queue the follower's command, or deny it with a reason."""
    if repeated_request(st, msg.ref):
        return
    st.last_peer_ref = msg.ref
    if st.phase is not Phase.OPEN:
        deny(st, msg.ref, _NOT_SEQUENCING[st.phase])
        return
    if st.queued >= st.limits.max_queue:
        deny(st, msg.ref, "busy")
        return
    try:
        # The decoder allows a command the message's few extra levels of nesting;
        # one deeper than a local command may be is denied, like any other bad one.
        size = commands_size([msg.command], check_plain(msg.command))
    except CodecError as exc:
        deny(st, msg.ref, f"a command must be plain data: {exc.reason}"[:200])
        return
    except LocalError as exc:
        deny(st, msg.ref, str(exc)[:200])
        return
    try:
        state = apply_peer_command(st, st.tip_state, msg.command, st.peer_index)
    except CommandRejected as exc:
        deny(st, msg.ref, exc.reason)
        return
    entry = CommandEntry(st.peer_index, msg.ref, msg.command)
    st.queue.append(((entry,), state, size))
    st.queued += 1
    st.tip_state = state
    pump(st)


def on_close_request(st: ChannelState, msg: CloseRequest) -> None:
    """The follower asks for a close: propose the final update, or deny it."""
    if repeated_request(st, msg.ref):
        return
    st.last_peer_ref = msg.ref
    if st.phase is Phase.CLOSING:
        return  # the final update is already coming; it answers this request too
    if st.phase is not Phase.OPEN:
        deny(st, msg.ref, _NOT_SEQUENCING[st.phase])
        return
    if not st.app.may_close(st.tip_state):
        deny(st, msg.ref, f"{st.app.name} does not allow a cooperative close in this state")
        return
    close(st, None)


def repeated_request(st: ChannelState, ref: int) -> bool:
    """Handle a request whose ref was seen before (re-sent after a reconnect).

    Returns ``True`` if it was handled here (ignored, or denied as already handled),
    ``False`` if it is new.
    """
    if ref <= st.last_peer_ref:
        peer = st.peer_index
        queued = any(e.ref == ref for group, _, _ in st.queue for e in group if e.actor == peer)
        proposed = any(
            e.ref == ref and e.actor == peer for s, *_ in st.in_flight for e in s.update.commands
        )
        if not (queued or proposed):
            deny(st, ref, "already handled")
        return True
    return False
