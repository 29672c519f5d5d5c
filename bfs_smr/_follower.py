"""The follower's handlers (participant 1; docs/design.md §4, I2 and I6).

The follower sends its commands as requests and signs the sequencer's proposals first
(they come unsigned), but only one that extends the newest update it signed, contains only
commands it requested (in its order) besides the sequencer's own, and whose state hash
and outcome it reproduces by re-executing the commands. An update is doubly signed, and
its commands done, when the sequencer's COMMIT brings the sequencer's signature. A violation
raises :class:`~bfs_smr.RemoteViolation` and changes nothing. Each handler takes the
party's :class:`~bfs_smr._state.ChannelState`.
"""

from __future__ import annotations

from typing import Any

from ._codec import encode
from ._codec import hash_bytes as _hash
from ._errors import CommandRejected, LocalError
from ._limits import MAX_IN_FLIGHT
from ._messages import (
    Accept,
    CloseRequest,
    CommandFailed,
    Commit,
    Denied,
    PersistRequest,
    PersistUpdate,
    Propose,
    Request,
)
from ._state import (
    CLOSE_MARK,
    ChannelState,
    Phase,
    apply_own,
    apply_peer_command,
    check_local_command,
    check_result,
    commands_size,
    commit,
    send,
    set_phase,
    violation,
)
from ._update import SignedUpdate, Update

__all__ = ["close", "issue", "issue_batch", "on_commit", "on_denied", "on_propose"]


def issue(st: ChannelState, command: Any) -> int:
    refs: list[int] = issue_batch(st, [command])
    return refs[0]


def _request(st: ChannelState, command: Any) -> int:
    ref = st.next_ref
    st.next_ref += 1
    st.requests.append((ref, command))
    st.out.append(PersistRequest(ref=ref, command=command))
    send(st, Request(channel_id=st.channel_id, ref=ref, command=command))
    return ref


def issue_batch(st: ChannelState, commands: list[Any]) -> list[int]:
    if not commands:
        raise LocalError("a batch holds at least one command")
    for command in commands:
        # each goes in a request of its own
        commands_size([command], check_local_command(command))
    # Early check, all or nothing, against the newest state this party signed; the
    # sequencer's check against its tip is the one that counts.
    apply_own(st, st.committed_state, commands)
    return [_request(st, command) for command in commands]


def close(st: ChannelState, _: Any) -> None:
    """Ask the sequencer for a final update."""
    ref = st.next_ref
    st.next_ref += 1
    st.requests.append((ref, CLOSE_MARK))
    st.out.append(PersistRequest(ref=ref, command=None, close=True))
    set_phase(st, Phase.CLOSING)
    send(st, CloseRequest(channel_id=st.channel_id, ref=ref))


def on_denied(st: ChannelState, msg: Denied) -> None:
    # A denial may overtake earlier requests: the sequencer denies at once, while an
    # accepted request can wait in its queue for a window slot. So it may name any
    # pending request; the ones before it keep their order.
    position = next((i for i, (r, _) in enumerate(st.requests) if r == msg.ref), None)
    if position is None:
        if msg.ref < st.next_ref:
            # An answer to a request already resolved: failed when a final update
            # arrived, or committed and then re-sent after a reconnect.
            return
        raise violation(st, f"denial of request {msg.ref}, which was never sent")
    ref, what = st.requests[position]
    del st.requests[position]
    if what is CLOSE_MARK and st.phase is Phase.CLOSING:
        set_phase(st, Phase.OPEN)
    st.out.append(CommandFailed(ref=ref, reason=msg.reason))


def on_propose(st: ChannelState, msg: Propose) -> None:
    """Check a proposal (I2) and sign it, once per sequence number (I1): persist the
    signed update, then ACCEPT. It is doubly signed when the COMMIT comes."""
    u = msg.update
    committed = st.committed
    if committed is not None and u.seq <= committed.seq:
        # Compared as bytes: Python calls some different encodings equal (1 == True).
        if u.seq == committed.seq and u.body() == committed.update.body():
            # A retransmission of what this party already signed: same answer again.
            _accept_again(st, committed)
            return
        if u.seq == committed.seq:
            raise violation(
                st, f"asked to sign a second, different update at seq {u.seq}; refused (I1)"
            )
        raise violation(st, f"stale proposal for seq {u.seq}")
    if u.seq <= st.head_seq:
        # Signed already and awaiting COMMIT: only the very same update is answered.
        for signed, _, _, _ in st.in_flight:
            if signed.seq == u.seq:
                if u.body() != signed.update.body():
                    break
                _accept_again(st, signed)
                return
        raise violation(
            st, f"asked to sign a second, different update at seq {u.seq}; refused (I1)"
        )
    if u.channel_id != st.channel_id:
        # The message's id routed it here, but the update's id is what gets signed:
        # signing another channel's update would let it be closed with (I5).
        raise violation(st, f"seq {u.seq} is an update of another channel")
    if st.phase is Phase.CLOSED or (st.in_flight and st.in_flight[-1][0].update.final):
        raise violation(st, "proposal after the final update")
    expected = st.head_seq + 1
    if u.seq != expected:
        raise violation(st, f"proposal for seq {u.seq}, expected {expected}")
    if u.prev_hash != st.head_hash:
        raise violation(st, f"seq {u.seq} does not link to this party's newest update")
    if u.app_id != st.params.app_id:
        raise violation(st, f"seq {u.seq} names app {u.app_id!r}")
    if len(st.in_flight) >= MAX_IN_FLIGHT:
        raise violation(
            st, f"more than {MAX_IN_FLIGHT} updates signed here await the sequencer's signature"
        )
    if u.seq > 0:
        # In a game, on this party's turn, the next update is its move alone: it signs
        # first, so an update holding more could never be forced on L1 (one command by
        # the mover), nor be signed a second time as a single move (I1).
        before = st.in_flight[-1][1] if st.in_flight else st.committed_state
        mine = len(u.commands) == 1 and u.commands[0].actor == st.index
        if st.app.to_move(before) == st.index and not mine and not u.final:
            raise violation(st, f"seq {u.seq} is this party's turn and not its move alone")
    consumed, state = _re_execute(st, u)
    check_result(st, u, state, f"seq {u.seq}")
    # Everything checks out: sign (once for this seq), persist, then answer.
    body = u.body()
    digest = st.format.digest(u, body)
    sig = st.signer.sign(digest)
    sigs = (None, sig) if st.index == 1 else (sig, None)
    signed = SignedUpdate(u, sigs)
    requests = st.requests
    for _ in range(consumed):
        requests.popleft()
    st.head_seq = u.seq
    st.head_hash = _hash(body)
    st.in_flight.append((signed, state, digest, msg.tag))
    st.out.append(PersistUpdate(update=signed, state=state, committed=False, tag=msg.tag))
    # The Accept carries this party's signature, so it goes after the PersistUpdate (I1).
    send(st, Accept(channel_id=st.channel_id, seq=u.seq, signature=sig))


def _accept_again(st: ChannelState, signed: SignedUpdate) -> None:
    sig = signed.signatures[st.index]
    assert sig is not None
    send(st, Accept(channel_id=st.channel_id, seq=signed.seq, signature=sig))


def on_commit(st: ChannelState, msg: Commit) -> None:
    """The sequencer's signature on the oldest update this party signed: it is doubly
    signed now. Persist it, then report its commands (I3)."""
    committed = st.committed
    if committed is not None and msg.seq <= committed.seq:
        return  # a repeat after a reconnect: already committed (from served entries)
    if not st.in_flight or st.in_flight[0][0].seq != msg.seq:
        raise violation(st, f"COMMIT of seq {msg.seq}, which this party has not signed")
    signed, state, digest, _ = st.in_flight[0]
    if not st.format.scheme.verify(st.peer_key, digest, msg.signature):
        raise violation(st, f"invalid sequencer signature on seq {msg.seq}")
    st.in_flight.popleft()
    mine = signed.signatures[st.index]
    both = (msg.signature, mine) if st.index == 1 else (mine, msg.signature)
    commit(st, SignedUpdate(signed.update, both), state)
    if signed.update.final:
        requests = st.requests
        while requests:
            ref, _ = requests.popleft()
            st.out.append(CommandFailed(ref=ref, reason="channel closed"))


def _re_execute(st: ChannelState, u: Update) -> tuple[int, Any]:
    """Check the commands of a proposal and replay them; returns (requests used, state)."""
    if u.seq == 0:
        if u.commands or u.final:
            raise violation(st, "the opening update must have no commands and not be final")
        try:
            return 0, st.app.initial_state(st.params)
        except CommandRejected as exc:
            raise violation(st, f"app refuses the channel parameters: {exc.reason}") from None
    if u.final and u.commands:
        raise violation(st, f"final update {u.seq} carries commands")
    consumed = 0
    # On the newest update this party signed: proposals chain on each other.
    state = st.in_flight[-1][1] if st.in_flight else st.committed_state
    requests, index = st.requests, st.index
    for entry in u.commands:
        if entry.actor == index:
            if consumed >= len(requests):
                raise violation(st, f"seq {u.seq} has a command this party never issued")
            ref, command = requests[consumed]
            # Canonical bytes, not Python equality: 1 == True and 0 == False, so a
            # sequencer could swap a command for another that encodes (and may
            # execute, on L1 too) differently, and this party would sign it as its own.
            if (
                command is CLOSE_MARK
                or entry.ref != ref
                or encode(entry.command) != encode(command)
            ):
                raise violation(
                    st, f"seq {u.seq} has a command this party never issued (ref {entry.ref})"
                )
            consumed += 1
        try:
            state = apply_peer_command(st, state, entry.command, entry.actor)
        except CommandRejected as exc:
            raise violation(st, f"seq {u.seq}: invalid transition: {exc.reason}") from None
    if u.final:
        if not st.app.may_close(state):
            raise violation(st, f"final update {u.seq} where {st.app.name} forbids closing")
        if consumed < len(requests) and requests[consumed][1] is CLOSE_MARK:
            consumed += 1
    return consumed, state
