"""Force moves: a party's own, signed alone for L1, and the peer's, adopted from L1.

Once a party signs a force move the channel is in :attr:`Phase.DISPUTE` and takes no
more off-chain updates; each later move, its own or the peer's, builds on the newest
one (the dispute's base). Never two signatures at one sequence number (I1): a follower
that signed an update awaiting COMMIT forces that same update, and a sequencer forces its
oldest proposal if that is a move of its own, else drops its proposals (unsigned) first.
Each handler takes the party's :class:`~bfs_smr._state.ChannelState`.
"""

from __future__ import annotations

from typing import Any

from ._codec import hash_bytes as _hash
from ._errors import CommandRejected, LocalError
from ._messages import PersistUpdate
from ._state import (
    ChannelState,
    Phase,
    apply_peer_command,
    check_local_command,
    check_result,
    set_phase,
    violation,
)
from ._update import CommandEntry, SignedUpdate, Update

__all__ = ["adopt_forced_move", "force_base", "force_move"]


def force_base(st: ChannelState) -> tuple[SignedUpdate, Any]:
    """``(update, state)`` the next force move builds on.

    Raises:
        LocalError: nothing committed yet.
    """
    if st.dispute_base is not None:
        return st.dispute_base
    if st.committed is None:
        raise LocalError("nothing committed yet")
    return st.committed, st.committed_state


def force_move(st: ChannelState, command: Any) -> SignedUpdate:
    base, base_state = force_base(st)
    seq = base.seq + 1
    if st.dispute_base is None and st.in_flight:
        signed, state, digest, tag = st.in_flight[0]
        mine = signed.signatures[st.index]
        if _own_single_move(st, signed.update):
            # An update at seq is already out: that one, never a second (I1). The
            # sequencer's proposals are unsigned until now; the follower's are signed.
            if mine is None:
                # The proposals behind it stay: a late ACCEPT still completes them, one
                # signature each, and no move is forced at their seqs (head_seq).
                mine = st.signer.sign(digest)
                sigs = (mine, None) if st.index == 0 else (None, mine)
                signed = SignedUpdate(signed.update, sigs)
                st.in_flight[0] = (signed, state, digest, tag)
            # Stored again without the tag: a restart then finds it as this party's
            # force move, the dispute's base (restore), not as an update awaiting COMMIT.
            st.out.append(PersistUpdate(update=signed, state=state, committed=False))
            st.dispute_base = (signed, state)
            st.own_forced = (signed, base_state, base)
            set_phase(st, Phase.DISPUTE)
            return signed
        if mine is not None:
            raise LocalError(
                f"this party already signed seq {seq}, and not as a single move of its "
                "own; it cannot force a move there (I1)"
            )
        # The sequencer's proposals: it signed none of them, and will not now. They are
        # dropped once the move is signed (a refused move leaves them as they are).
        unsigned = True
    else:
        unsigned = False
    own = st.own_forced
    if command is None and own is not None and own[0] is base:
        return base  # signed already: posted again (the first post may have failed)
    if not unsigned and st.head_seq >= seq:
        raise LocalError(
            f"this party already signed an update at seq {seq}; "
            "a force move there would be a second signature (I1)"
        )
    if command is None:
        raise LocalError("a force move needs a command")
    if st.app.to_move(base_state) != st.index:
        raise LocalError("it is not this party's move")
    check_local_command(command)
    state = st.app.apply(base_state, command, st.index)
    if unsigned:
        _drop_unsigned(st)
    ref = st.next_ref
    st.next_ref += 1
    update = Update(
        channel_id=st.channel_id,
        seq=seq,
        prev_hash=base.update.entry_hash(),
        app_id=st.params.app_id,
        commands=(CommandEntry(st.index, ref, command),),
        state_hash=st.format.state_hash(st.app, state),
        outcome=st.app.checked_outcome(state, st.params),
        final=False,
    )
    body = update.body()
    sig = st.signer.sign(st.format.digest(update, body))
    sigs = (sig, None) if st.index == 0 else (None, sig)
    signed = SignedUpdate(update, sigs)
    st.head_seq = update.seq
    st.head_hash = _hash(body)
    st.dispute_base = (signed, state)
    st.own_forced = (signed, base_state, base)
    set_phase(st, Phase.DISPUTE)
    st.out.append(PersistUpdate(update=signed, state=state, committed=False))
    return signed


def adopt_forced_move(st: ChannelState, signed: SignedUpdate) -> None:
    u = signed.update
    if st.dispute_base is None:
        _drop_unsigned(st)
    if _answers_own_proposal(st, u):
        # The peer's move builds on this party's oldest proposal, a move of its own that
        # reached L1 as a forced move: posted by this party before a restart (its store
        # keeps it as a proposal in flight), or by the peer (anyone may post it: it
        # carries this party's signature). It becomes the dispute's base, as if this party
        # had forced it now; nothing new is signed (I1).
        force_move(st, None)
    base, base_state = force_base(st)
    peer = st.peer_index
    if u.channel_id != st.channel_id or u.app_id != st.params.app_id or u.final:
        raise violation(st, "forced move of another channel or app, or a final one")
    if u.seq != base.seq + 1 or u.prev_hash != base.update.entry_hash():
        raise violation(st, f"forced move at seq {u.seq} does not follow seq {base.seq}")
    if st.app.to_move(base_state) != peer:
        raise violation(st, "forced move by a party whose move it was not")
    if len(u.commands) != 1 or u.commands[0].actor != peer:
        raise violation(st, "a forced move is exactly one command by the mover")
    if not signed.verify(st.params, st.format, require=(peer,)):
        raise violation(st, "forced move without a valid signature of the mover")
    try:
        state = apply_peer_command(st, base_state, u.commands[0].command, peer)
    except CommandRejected as exc:
        raise violation(st, f"forced move is invalid: {exc.reason}") from None
    check_result(st, u, state, "forced move")
    st.dispute_base = (signed, state)
    st.own_forced = None
    set_phase(st, Phase.DISPUTE)


def _answers_own_proposal(st: ChannelState, u: Update) -> bool:
    if st.dispute_base is not None or not st.in_flight:
        return False
    signed = st.in_flight[0][0]
    if signed.signatures[st.index] is None:
        return False  # not signed by this party: nobody can have posted it
    own = signed.update
    return u.seq == own.seq + 1 and u.prev_hash == own.entry_hash() and _own_single_move(st, own)


def _drop_unsigned(st: ChannelState) -> None:
    """Off-chain updates are over: forget the sequencer's proposals, none of which it has
    signed (it never will now, I1); the chain tip goes back to its newest doubly-signed
    update."""
    if any(s.signatures[st.index] is not None for s, *_ in st.in_flight):
        return  # the follower's: each signed here, kept to answer a late COMMIT
    st.in_flight.clear()
    if st.committed is not None:
        tip = st.committed.update
        st.head_seq, st.head_hash = tip.seq, tip.entry_hash()


def _own_single_move(st: ChannelState, u: Update) -> bool:
    """Whether ``u`` is one move of this party's own and not final: what a force move is."""
    return not u.final and len(u.commands) == 1 and u.commands[0].actor == st.index
