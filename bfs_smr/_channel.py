"""The two-party channel protocol object (sans-IO).

One :class:`Channel` per party. Inputs are method calls (``start``, ``issue``, ``close``,
``receive``); outputs are :mod:`effects <bfs_smr._messages>` drained with
:meth:`Channel.effects`, to be carried out *in order* by the driver (persist before send).

**Sequencing (docs/design.md §4, I6).** Participant 0, the opener, is the channel's
sequencer: it alone proposes updates, chaining each on its previous proposal, with up to
``max_in_flight`` awaiting the follower's signature. The follower sends its commands as
requests; the sequencer orders them with its own. So there is exactly one candidate update
per sequence number, and each party signs each sequence number at most once (I1): the
follower first, when it accepts a proposal, and the sequencer when that ACCEPT comes.

**Validation (I2).** The follower signs only an update that extends the newest update it
signed, contains only commands it requested (in its order) besides the sequencer's own,
and whose state hash and outcome it reproduces by re-executing the commands. A violation
raises :class:`RemoteViolation` and changes nothing.

**One table.** Every legal ``(role, phase, input)`` is in :data:`TRANSITIONS`, with the
function that handles it and the phases it may lead to; anything else is refused (a
:class:`LocalError` for a call, a :class:`RemoteViolation` for a message), and a handler
that leaves the party in a phase its entry does not name raises :class:`InternalError`.
The handlers live in ``_sequencer.py``, ``_follower.py``, ``_dispute.py`` and
``_recovery.py``, and work on the party's :class:`~bfs_smr._state.ChannelState`; this
class is the public face over that record.
"""

from __future__ import annotations

from typing import Any

from . import _dispute, _follower, _recovery, _sequencer
from ._app import StateMachine
from ._crypto import Signer
from ._errors import CodecError, InternalError, LocalError
from ._l1 import L1Format
from ._limits import ChannelLimits
from ._messages import (
    Accept,
    CloseRequest,
    Commit,
    Denied,
    Effect,
    Entries,
    Hello,
    Propose,
    Request,
    Signed,
    parse_message,
)
from ._state import (
    MAX_UPDATE_COMMANDS,
    MAX_UPDATE_ITEMS,
    ChannelState,
    Handler,
    Input,
    Phase,
    Role,
    Transition,
    violation,
)
from ._update import ChannelParams, SignedUpdate

__all__ = [
    "MAX_UPDATE_COMMANDS",
    "MAX_UPDATE_ITEMS",
    "TRANSITIONS",
    "Channel",
    "Input",
    "Phase",
    "Role",
    "Transition",
]

_S, _F = Role.SEQUENCER, Role.FOLLOWER
_OPENING, _OPEN, _CLOSING, _CLOSED, _DISPUTE = Phase


def _noop(_st: ChannelState, _: Any) -> None:
    """Nothing to do: the input is legal here and already taken care of."""
    return None


def _ignore(_st: ChannelState, _: Any) -> None:
    """A message that needs no answer in this phase."""
    return None


#: ``(role, phase, input, handler, phases it may lead to)``; no phases: it stays.
_Row = tuple[Role, Phase, Input, Handler, tuple[Phase, ...]]

_ROWS: list[_Row] = [
    (_S, _OPENING, Input.START, _sequencer.start, ()),
    (_S, _OPENING, Input.RECV_ACCEPT, _sequencer.on_accept, (_OPEN,)),
    # After a crash the sequencer completes, from the follower's SIGNED, the updates it
    # proposed before it (recognised by its tag).
    (_S, _OPENING, Input.RECV_SIGNED, _sequencer.on_signed, (_OPENING, _OPEN)),
    (_S, _OPEN, Input.RECV_SIGNED, _sequencer.on_signed, (_OPEN, _CLOSED)),
    (_S, _CLOSING, Input.RECV_SIGNED, _sequencer.on_signed, (_CLOSING, _CLOSED)),
    (_S, _CLOSED, Input.RECV_SIGNED, _sequencer.on_signed, ()),
    (_S, _DISPUTE, Input.RECV_SIGNED, _sequencer.on_signed, (_DISPUTE, _CLOSED)),
    (_S, _OPEN, Input.ISSUE, _sequencer.issue, ()),
    (_S, _OPEN, Input.ISSUE_BATCH, _sequencer.issue_batch, ()),
    (_S, _OPEN, Input.CLOSE, _sequencer.close, (_CLOSING,)),
    (_S, _OPEN, Input.FORCE_MOVE, _dispute.force_move, (_DISPUTE,)),
    (_S, _OPEN, Input.RECV_ACCEPT, _sequencer.on_accept, ()),
    (_S, _OPEN, Input.RECV_REQUEST, _sequencer.on_request, ()),
    (_S, _OPEN, Input.RECV_CLOSE_REQUEST, _sequencer.on_close_request, (_OPEN, _CLOSING)),
    (_S, _CLOSING, Input.CLOSE, _noop, ()),
    (_S, _CLOSING, Input.FORCE_MOVE, _dispute.force_move, (_DISPUTE,)),
    (_S, _CLOSING, Input.RECV_ACCEPT, _sequencer.on_accept, (_CLOSING, _CLOSED)),
    (_S, _CLOSING, Input.RECV_REQUEST, _sequencer.on_request, ()),
    (_S, _CLOSING, Input.RECV_CLOSE_REQUEST, _sequencer.on_close_request, ()),
    # A signature that arrives after a force move still completes that update if it is
    # the one this party forced (it signed it already): a doubly-signed update can refute
    # on L1. Its other proposals were dropped unsigned; answers to them are ignored.
    (_S, _DISPUTE, Input.RECV_ACCEPT, _sequencer.on_accept, (_DISPUTE, _CLOSED)),
    # On L1, the other party forced a move: adopt it, then answer with a force move.
    (_S, _OPEN, Input.ADOPT_FORCED, _dispute.adopt_forced_move, (_DISPUTE,)),
    (_S, _CLOSING, Input.ADOPT_FORCED, _dispute.adopt_forced_move, (_DISPUTE,)),
    (_S, _DISPUTE, Input.ADOPT_FORCED, _dispute.adopt_forced_move, ()),
    (_S, _DISPUTE, Input.FORCE_MOVE, _dispute.force_move, ()),
    (_F, _OPEN, Input.ADOPT_FORCED, _dispute.adopt_forced_move, (_DISPUTE,)),
    (_F, _CLOSING, Input.ADOPT_FORCED, _dispute.adopt_forced_move, (_DISPUTE,)),
    (_F, _DISPUTE, Input.ADOPT_FORCED, _dispute.adopt_forced_move, ()),
    (_F, _DISPUTE, Input.FORCE_MOVE, _dispute.force_move, ()),
    (_F, _OPENING, Input.START, _noop, ()),
    (_F, _OPENING, Input.RECV_PROPOSE, _follower.on_propose, ()),
    (_F, _OPENING, Input.RECV_COMMIT, _follower.on_commit, (_OPEN,)),
    (_F, _OPEN, Input.RECV_COMMIT, _follower.on_commit, (_OPEN, _CLOSED)),
    (_F, _CLOSING, Input.RECV_COMMIT, _follower.on_commit, (_CLOSING, _CLOSED)),
    (_F, _CLOSED, Input.RECV_COMMIT, _follower.on_commit, ()),
    # A COMMIT of an update signed before this party forced a move completes it (one
    # signature per seq, I1): a doubly-signed update can refute on L1.
    (_F, _DISPUTE, Input.RECV_COMMIT, _follower.on_commit, (_DISPUTE, _CLOSED)),
    (_F, _OPEN, Input.ISSUE, _follower.issue, ()),
    (_F, _OPEN, Input.ISSUE_BATCH, _follower.issue_batch, ()),
    (_F, _OPEN, Input.CLOSE, _follower.close, (_CLOSING,)),
    (_F, _OPEN, Input.FORCE_MOVE, _dispute.force_move, (_DISPUTE,)),
    (_F, _OPEN, Input.RECV_PROPOSE, _follower.on_propose, ()),
    (_F, _OPEN, Input.RECV_DENIED, _follower.on_denied, ()),
    (_F, _CLOSING, Input.CLOSE, _noop, ()),
    (_F, _CLOSING, Input.FORCE_MOVE, _dispute.force_move, (_DISPUTE,)),
    (_F, _CLOSING, Input.RECV_PROPOSE, _follower.on_propose, ()),
    (_F, _CLOSING, Input.RECV_DENIED, _follower.on_denied, (_OPEN, _CLOSING)),
    (_F, _CLOSED, Input.RECV_PROPOSE, _follower.on_propose, ()),
    (_F, _CLOSED, Input.RECV_DENIED, _follower.on_denied, ()),
    # Between honest parties these arrive after a restart next to a channel that is over
    # or not open yet (a request re-sent by resync, an answer to one, a retransmission):
    # each gets a defined answer, never a violation. The sequencer denies what it cannot
    # sequence now; it takes a late counter-signature of the final update; the follower
    # takes any denial; in a dispute the follower ignores proposals (it signs nothing
    # off-chain any more, I1) and the answers go through L1.
    (_S, _OPENING, Input.RECV_REQUEST, _sequencer.on_request, ()),
    (_S, _OPENING, Input.RECV_CLOSE_REQUEST, _sequencer.on_close_request, ()),
    (_S, _CLOSED, Input.RECV_ACCEPT, _sequencer.on_accept, ()),
    (_S, _CLOSED, Input.RECV_REQUEST, _sequencer.on_request, ()),
    (_S, _CLOSED, Input.RECV_CLOSE_REQUEST, _sequencer.on_close_request, ()),
    (_S, _DISPUTE, Input.RECV_REQUEST, _sequencer.on_request, ()),
    (_S, _DISPUTE, Input.RECV_CLOSE_REQUEST, _sequencer.on_close_request, ()),
    (_F, _OPENING, Input.RECV_DENIED, _follower.on_denied, ()),
    (_F, _DISPUTE, Input.RECV_DENIED, _follower.on_denied, ()),
    (_F, _DISPUTE, Input.RECV_PROPOSE, _ignore, ()),
]

# Resynchronisation is possible in every phase, for both roles (see _recovery.py). Only
# adopting entries moves the phase: the opening update opens, a final one closes.
_ADOPTING: dict[Phase, tuple[Phase, ...]] = {
    _OPENING: (_OPEN, _CLOSED),
    _OPEN: (_OPEN, _CLOSED),
    _CLOSING: (_CLOSING, _CLOSED),
    _CLOSED: (),
    _DISPUTE: (_DISPUTE, _CLOSED),
}
for _role in Role:
    for _phase in Phase:
        _ROWS += [
            (_role, _phase, Input.RESYNC, _recovery.resync, ()),
            (_role, _phase, Input.SERVE_LOG, _recovery.serve_log, ()),
            (_role, _phase, Input.RECV_HELLO, _recovery.on_hello, ()),
            (_role, _phase, Input.RECV_ENTRIES, _recovery.on_entries, _ADOPTING[_phase]),
        ]

#: Every legal ``(role, phase, input)``: the function that handles it and every phase it
#: may leave the party in. One table, as in h11: docs/protocol.md is generated from it.
TRANSITIONS: dict[tuple[Role, Phase, Input], Transition] = {
    (role, phase, what): Transition(handler, frozenset(to or (phase,)))
    for role, phase, what, handler, to in _ROWS
}

# TRANSITIONS regrouped by role and phase, so a dispatch costs one lookup on the hot path.
_HANDLERS: dict[Role, dict[Phase, dict[Input, Transition]]] = {
    role: {
        phase: {i: t for (r, p, i), t in TRANSITIONS.items() if (r, p) == (role, phase)}
        for phase in Phase
    }
    for role in Role
}

_RECEIVE_INPUT: dict[type, Input] = {
    Hello: Input.RECV_HELLO,
    Entries: Input.RECV_ENTRIES,
    Propose: Input.RECV_PROPOSE,
    Accept: Input.RECV_ACCEPT,
    Commit: Input.RECV_COMMIT,
    Signed: Input.RECV_SIGNED,
    Request: Input.RECV_REQUEST,
    CloseRequest: Input.RECV_CLOSE_REQUEST,
    Denied: Input.RECV_DENIED,
}


class Channel:
    """One party's side of a two-party channel.

    Args:
        params: the channel parameters both parties agreed on.
        app: the app (state machine) instance.
        fmt: the L1's signing format (from the L1 adapter).
        signer: this party's key; its public key must be one of the participants.
        limits: how much it keeps in flight and queued (:class:`ChannelLimits`).

    Raises:
        LocalError: the signer is not a participant, or the app does not match params.
    """

    def __init__(
        self,
        params: ChannelParams,
        app: StateMachine[Any],
        fmt: L1Format,
        signer: Signer,
        *,
        limits: ChannelLimits = ChannelLimits(),
    ) -> None:
        if signer.public_key not in params.participants:
            raise LocalError("the signer's key is not a participant of this channel")
        if app.app_id != params.app_id:
            raise LocalError(f"app {app.app_id} does not match the channel's {params.app_id}")
        if type(fmt.scheme) is not type(signer.scheme):
            raise LocalError("the signer's scheme is not the L1's scheme")
        self.params = params
        self.app = app
        self.format = fmt
        self.channel_id = params.channel_id
        self.index = params.participants.index(signer.public_key)
        self.peer_index = 1 - self.index
        self.role = Role.SEQUENCER if self.index == 0 else Role.FOLLOWER
        self._st = ChannelState(
            params=params,
            app=app,
            format=fmt,
            signer=signer,
            limits=limits,
            index=self.index,
            role=self.role,
            table=_HANDLERS[self.role],
        )

    # -- public API ---------------------------------------------------------------

    @property
    def limits(self) -> ChannelLimits:
        """The limits the handlers apply now; set it to change them on a live channel, as
        ``bfs-smr channel bench --window`` does for a run."""
        return self._st.limits

    @limits.setter
    def limits(self, limits: ChannelLimits) -> None:
        self._st.limits = limits

    @property
    def max_in_flight(self) -> int:
        return self._st.limits.max_in_flight

    @property
    def max_batch(self) -> int:
        return self._st.limits.max_batch

    @property
    def max_queue(self) -> int:
        return self._st.limits.max_queue

    @property
    def phase(self) -> Phase:
        return self._st.phase

    @property
    def committed(self) -> SignedUpdate | None:
        """The newest doubly-signed update (what to close with on L1)."""
        return self._st.committed

    @property
    def state(self) -> Any:
        """The app state of :attr:`committed`."""
        return self._st.committed_state

    @property
    def seq(self) -> int:
        """Sequence number of :attr:`committed` (-1 before the opening update)."""
        committed = self._st.committed
        return -1 if committed is None else committed.seq

    @property
    def pending(self) -> int:
        """Commands issued here or requested of here that are not yet committed."""
        st = self._st
        if st.role is Role.SEQUENCER:
            return st.queued + sum(len(s.update.commands) for s, *_ in st.in_flight)
        index = st.index
        return len(st.requests) + sum(
            1 for s, *_ in st.in_flight for e in s.update.commands if e.actor == index
        )

    def in_flight(self) -> list[SignedUpdate]:
        """The updates past :attr:`committed`, oldest first: at the sequencer its
        proposals awaiting the follower's signature (not signed by it), at the follower
        the ones it signed awaiting the sequencer's (COMMIT)."""
        return [signed for signed, *_ in self._st.in_flight]

    def effects(self) -> list[Effect]:
        """Drain the effects produced so far, to be carried out in order."""
        st = self._st
        out, st.out = st.out, []
        return out

    def start(self) -> None:
        """Begin: the sequencer proposes the opening update; for the follower a no-op."""
        self._dispatch(Input.START)

    def issue(self, command: Any) -> int:
        """Issue an app command as this party.

        Returns:
            A reference number; :class:`CommandCommitted` or :class:`CommandFailed`
            effects with it follow.

        Raises:
            CommandRejected: the app refuses the command in the newest state this party
                knows (for the sequencer that is exact; for the follower an early check).
            LocalError: the channel is not open for commands.
        """
        result: int = self._dispatch(Input.ISSUE, command)
        return result

    def issue_batch(self, commands: Any) -> list[int]:
        """Issue several app commands as this party, to be committed together.

        At the sequencer they go into one update, in order (beside any commands the
        automatic batching adds under load, never split), and the app sees them one after
        the other; each still gets its own :class:`CommandCommitted`. Either every command
        is accepted or none is: if the app refuses one, nothing is issued. At the follower
        each becomes a request, which the sequencer batches under load.

        Returns:
            One reference number per command, in order.

        Raises:
            CommandRejected: the app refuses one of the commands (which one is in the
                message); nothing was issued.
            LocalError: the channel is not open for commands, the batch is empty, or it
                would overflow ``max_queue``.
        """
        result: list[int] = self._dispatch(Input.ISSUE_BATCH, list(commands))
        return result

    def close(self) -> None:
        """Ask for a cooperative close: a final update after the commands already issued.

        The sequencer checks :meth:`StateMachine.may_close` at once; the follower sends a
        request, which the sequencer may deny (a :class:`CommandFailed` effect follows).

        Raises:
            LocalError: not open, or (at the sequencer) the app does not allow closing now.
        """
        self._dispatch(Input.CLOSE)

    def force_move(self, command: Any = None) -> SignedUpdate:
        """Sign the next update on top of :attr:`committed` alone, for a force move on L1.

        If this party already signed an update at that sequence number (the follower's
        oldest update awaiting COMMIT), that same update is returned: never a second one
        (I1); a sequencer whose oldest proposal is a move of its own signs and returns
        that one. Otherwise ``command`` is applied as this party's move. Afterwards the
        channel is in :attr:`Phase.DISPUTE` and takes no more off-chain updates. Once the
        other party forced a move (see :meth:`adopt_forced_move`), the next force move
        builds on that one.

        Raises:
            LocalError: nothing committed yet, it is not this party's move, or no command.
            CommandRejected: the app refuses the move.
        """
        result: SignedUpdate = self._dispatch(Input.FORCE_MOVE, command)
        return result

    def adopt_forced_move(self, update: SignedUpdate) -> None:
        """Take the other party's move, forced on L1, as the base for answering it.

        It is checked like a proposal (links to this party's newest update or the last
        forced one, the mover's turn and signature, re-execution). Afterwards
        :meth:`force_move` builds on it and :attr:`force_base` returns it.

        Raises:
            RemoteViolation: the update is not a valid forced move here.
        """
        self._dispatch(Input.ADOPT_FORCED, update)

    @property
    def pending_force(self) -> tuple[SignedUpdate, Any, SignedUpdate] | None:
        """This party's own forced move, the state it applies to and the update it builds
        on (what L1 takes with it), while it is the newest step of the dispute; ``None``
        otherwise, and after a restart. If it is not on L1 (its post failed), post it
        again: :meth:`force_move` with no command returns it."""
        return self._st.own_forced

    @property
    def force_base(self) -> tuple[SignedUpdate, Any]:
        """``(update, state)`` the next force move builds on; post the state, encoded by the
        L1's format (:meth:`L1Format.encode_state`), and the update with it.

        Raises:
            LocalError: nothing committed yet.
        """
        return _dispute.force_base(self._st)

    def resync(self) -> None:
        """Call on every (re)connect, before passing on any message received on the new
        link: tell the peer where this party's log ends.

        The follower also re-sends its pending requests. See :mod:`bfs_smr._recovery`.
        """
        self._dispatch(Input.RESYNC)

    def serve_log(self, entries: list[SignedUpdate]) -> None:
        """Answer the oldest unanswered :class:`ServeLog` effect with exactly the entries
        it named (effects are carried out in order, so that is the one at hand).

        Raises:
            LocalError: nothing was asked for, or not exactly that range.
        """
        self._dispatch(Input.SERVE_LOG, entries)

    @property
    def next_ref(self) -> int:
        """The next reference this party will give a command (persist it: refs never repeat)."""
        return self._st.next_ref

    @property
    def last_peer_ref(self) -> int:
        """The newest peer request reference the sequencer has sequenced or denied."""
        return self._st.handled_peer_ref

    @classmethod
    def restore(
        cls,
        params: ChannelParams,
        app: StateMachine[Any],
        fmt: L1Format,
        signer: Signer,
        *,
        committed: SignedUpdate | None,
        state: Any,
        proposals: list[tuple[SignedUpdate, Any] | tuple[SignedUpdate, Any, bytes]] | None = None,
        requests: list[tuple[int, Any, bool]] | None = None,
        next_ref: int = 1,
        last_peer_ref: int = 0,
        limits: ChannelLimits = ChannelLimits(),
    ) -> Channel:
        """Rebuild a party's channel from what its store holds (after a restart).

        Args:
            committed: the newest doubly-signed update (``None``: nothing yet, e.g. when
                restoring from the peer's log).
            state: its state.
            proposals: updates this party signed that lack the peer's signature, oldest
                first, as ``(update, state)`` or ``(update, state, tag)``: the
                follower's updates awaiting COMMIT with the sequencer's tag, or a force
                move (no tag).
            requests: the follower's pending requests as ``(ref, command, is_close)``.
            next_ref, last_peer_ref: the counters persisted with the channel.

        Raises:
            LocalError: the stored data does not fit together (a damaged store).
        """
        chan = cls(params, app, fmt, signer, limits=limits)
        _recovery.restore(
            chan._st,
            committed=committed,
            state=state,
            proposals=proposals or [],
            requests=requests or [],
            next_ref=next_ref,
            last_peer_ref=last_peer_ref,
        )
        return chan

    def receive(self, data: bytes) -> None:
        """Take one message from the peer.

        Raises:
            RemoteViolation: the message is malformed, out of place, or breaks the
                protocol. The channel is unchanged; the error's ``recourse`` is the
                newest doubly-signed update to close with on L1.
        """
        try:
            msg = parse_message(data)
        except CodecError as exc:
            raise violation(self._st, f"malformed message: {exc.reason}") from None
        if msg.channel_id != self.channel_id:
            raise violation(self._st, "message for another channel")
        self._dispatch(_RECEIVE_INPUT[type(msg)], msg)

    # -- dispatch -----------------------------------------------------------------

    def _dispatch(self, what: Input, arg: Any = None) -> Any:
        st = self._st
        transition = st.handlers.get(what)
        if transition is None:
            where = f"{self.role.value} in phase {st.phase.value}"
            if what.name.startswith("RECV_"):
                raise violation(st, f"unexpected {what.value} message for the {where}")
            raise LocalError(f"cannot {what.value} as the {where}")
        result = transition.handler(st, arg)
        if st.phase not in transition.targets:
            raise InternalError(
                f"{transition.name} left the {self.role.value} in phase {st.phase.value} "
                f"after {what.value}, not one of "
                f"{sorted(p.value for p in transition.targets)} (see TRANSITIONS)"
            )
        return result
