"""The sequencer's handlers (participant 0; docs/design.md §4, I6).

The sequencer alone proposes updates, chaining each on its previous proposal, with up to
``max_in_flight`` awaiting the follower's counter-signature. Its own commands and the
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
    PersistUpdate,
    Request,
    SendMessage,
    encode_propose,
)
from ._state import (
    MAX_UPDATE_COMMANDS,
    ChannelState,
    Phase,
    apply_own,
    apply_peer_command,
    check_local_command,
    commands_size,
    commit,
    deny,
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
    "propose",
    "pump",
    "repeated_request",
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
    """Sign the next update on the chain tip, persist it, then send it."""
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
    sig = st.signer.sign(digest)
    sigs = (sig, None) if st.index == 0 else (None, sig)
    signed = SignedUpdate(update, sigs)
    st.head_seq = update.seq
    st.head_hash = _hash(body)
    st.in_flight.append((signed, state, digest))
    peer = st.peer_index
    for entry in entries:
        if entry.actor == peer and entry.ref > st.handled_peer_ref:
            st.handled_peer_ref = entry.ref
    st.out.append(PersistUpdate(update=signed, state=state, committed=False))
    st.out.append(SendMessage(data=encode_propose(st.channel_id, body, sig)))


def pump(st: ChannelState) -> None:
    """Propose what is queued while the window has room; then the final update, if a
    close is wanted and nothing is left before it."""
    if st.phase is Phase.DISPUTE or st.awaiting_hello:
        return
    queue, in_flight = st.queue, st.in_flight
    max_in_flight, max_batch = st.limits.max_in_flight, st.limits.max_batch
    while queue and len(in_flight) < max_in_flight:
        entries, state, size = queue.popleft()
        # Under load (the window full, so commands queued up), fill the update up to
        # max_batch commands and MAX_UPDATE_COMMANDS bytes; a caller's batch is never
        # split.
        while (
            queue
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
    """The follower's counter-signature on the oldest proposal in flight."""
    committed = st.committed
    if committed is not None and msg.seq <= committed.seq:
        # The answer to a retransmitted proposal (after a reconnect) that was already
        # counter-signed: both signatures are in hand, there is nothing to learn.
        return
    if not st.in_flight:
        raise violation(st, "counter-signature for an update that was not proposed")
    signed, state, digest = st.in_flight[0]
    if msg.seq != signed.seq:
        raise violation(st, f"counter-signature for seq {msg.seq}, expected {signed.seq}")
    if not st.format.scheme.verify(st.peer_key, digest, msg.signature):
        raise violation(st, f"invalid counter-signature on seq {msg.seq}")
    st.in_flight.popleft()
    mine = signed.signatures[st.index]
    both = (mine, msg.signature) if st.index == 0 else (msg.signature, mine)
    commit(st, SignedUpdate(signed.update, both), state)
    pump(st)


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
            e.ref == ref and e.actor == peer for s, _, _ in st.in_flight for e in s.update.commands
        )
        if not (queued or proposed):
            deny(st, ref, "already handled")
        return True
    return False
