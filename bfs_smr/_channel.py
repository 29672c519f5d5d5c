"""The two-party channel protocol object (sans-IO).

One :class:`Channel` per party. Inputs are method calls (``start``, ``issue``, ``close``,
``receive``); outputs are :mod:`effects <bfs_smr._messages>` drained with
:meth:`Channel.effects`, to be carried out *in order* by the driver (persist before send).

**Sequencing (I6).** Participant 0, the opener, is the channel's sequencer: it alone
proposes updates, chaining each on its previous proposal, with up to ``max_in_flight``
awaiting the follower's counter-signature. The follower sends its commands as requests;
the sequencer orders them with its own. So there is exactly one candidate update per
sequence number, and each party signs each sequence number at most once (I1): the
sequencer when it proposes, the follower when it counter-signs.

**Validation (I2).** The follower counter-signs only an update that extends its newest
doubly-signed update, is signed by the sequencer, contains only commands it requested (in
its order) besides the sequencer's own, and whose state hash and outcome it reproduces by
re-executing the commands. A violation raises :class:`RemoteViolation` and changes nothing.

All legal ``(role, phase, input)`` triples are in :data:`TRANSITIONS`; anything else is
refused (a :class:`LocalError` for a call, a :class:`RemoteViolation` for a message).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from . import _recovery
from ._app import StateMachine
from ._codec import MAX_MESSAGE_SIZE, check_plain, encode
from ._codec import hash_bytes as _hash
from ._crypto import Signer
from ._errors import CodecError, CommandRejected, LocalError, RemoteViolation
from ._l1 import L1Format
from ._limits import ChannelLimits
from ._messages import (
    Accept,
    ChannelFinalized,
    ChannelOpened,
    CloseRequest,
    CommandCommitted,
    CommandFailed,
    Denied,
    Effect,
    Entries,
    Hello,
    Message,
    PersistRequest,
    PersistUpdate,
    Propose,
    Request,
    SendMessage,
    encode_message,
    encode_propose,
    parse_message,
)
from ._recovery import CLOSE_MARK as _CLOSE
from ._update import ChannelParams, CommandEntry, SignedUpdate, Update

__all__ = ["TRANSITIONS", "Channel", "Input", "Phase", "Role"]


class Role(enum.Enum):
    SEQUENCER = "sequencer"  # participant 0: proposes every update
    FOLLOWER = "follower"  # participant 1: requests, validates and counter-signs


class Phase(enum.Enum):
    OPENING = "opening"  # the opening update (seq 0) is not doubly signed yet
    OPEN = "open"
    CLOSING = "closing"  # a cooperative close was asked for; no new commands
    CLOSED = "closed"  # a final update is doubly signed
    DISPUTE = "dispute"  # this party signed a force move: off-chain updates are over


class Input(enum.Enum):
    START = "start"
    ISSUE = "issue"
    ISSUE_BATCH = "issue_batch"
    CLOSE = "close"
    FORCE_MOVE = "force_move"
    ADOPT_FORCED = "adopt_forced_move"
    RESYNC = "resync"
    SERVE_LOG = "serve_log"
    RECV_HELLO = "hello"
    RECV_ENTRIES = "entries"
    RECV_PROPOSE = "propose"
    RECV_ACCEPT = "accept"
    RECV_REQUEST = "request"
    RECV_CLOSE_REQUEST = "close_request"
    RECV_DENIED = "denied"


#: Most bytes the commands of one update may encode to: every proposal, request and
#: resync message must fit in one peer message (MAX_MESSAGE_SIZE), or the peer refuses it
#: and the channel would retry it forever. Half a message leaves room for the rest.
MAX_UPDATE_COMMANDS = MAX_MESSAGE_SIZE // 2
#: Most items (as the decoder counts them) the commands of one update may hold, with
#: their entries: with the update around it, a proposal or a resync message stays within
#: the decoder's MAX_ITEMS. A batch of 10,000 payments holds 70,000.
MAX_UPDATE_ITEMS = MAX_UPDATE_COMMANDS // 6
#: What a command entry adds around its command ([actor, ref, …]), at most: bytes, items.
_ENTRY_OVERHEAD = 12
_ENTRY_ITEMS = 4

_S, _F = Role.SEQUENCER, Role.FOLLOWER
_OPENING, _OPEN, _CLOSING, _CLOSED, _DISPUTE = Phase

#: Every legal (role, phase, input) and the method that handles it. One table, as in
#: h11: docs/protocol.md draws the state diagram from it.
TRANSITIONS: dict[tuple[Role, Phase, Input], str] = {
    (_S, _OPENING, Input.START): "_seq_start",
    (_S, _OPENING, Input.RECV_ACCEPT): "_seq_on_accept",
    (_S, _OPEN, Input.ISSUE): "_seq_issue",
    (_S, _OPEN, Input.ISSUE_BATCH): "_seq_issue_batch",
    (_S, _OPEN, Input.CLOSE): "_seq_close",
    (_S, _OPEN, Input.FORCE_MOVE): "_force_move",
    (_S, _OPEN, Input.RECV_ACCEPT): "_seq_on_accept",
    (_S, _OPEN, Input.RECV_REQUEST): "_seq_on_request",
    (_S, _OPEN, Input.RECV_CLOSE_REQUEST): "_seq_on_close_request",
    (_S, _CLOSING, Input.CLOSE): "_noop",
    (_S, _CLOSING, Input.FORCE_MOVE): "_force_move",
    (_S, _CLOSING, Input.RECV_ACCEPT): "_seq_on_accept",
    (_S, _CLOSING, Input.RECV_REQUEST): "_seq_on_request",
    (_S, _CLOSING, Input.RECV_CLOSE_REQUEST): "_seq_on_close_request",
    # A counter-signature that arrives after a force move still completes that update:
    # a doubly-signed update can refute on L1. Nothing new is proposed in DISPUTE.
    (_S, _DISPUTE, Input.RECV_ACCEPT): "_seq_on_accept",
    # On L1, the other party forced a move: adopt it, then answer with a force move.
    (_S, _OPEN, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_S, _CLOSING, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_S, _DISPUTE, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_S, _DISPUTE, Input.FORCE_MOVE): "_force_move",
    (_F, _OPEN, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_F, _CLOSING, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_F, _DISPUTE, Input.ADOPT_FORCED): "_adopt_forced_move",
    (_F, _DISPUTE, Input.FORCE_MOVE): "_force_move",
    (_F, _OPENING, Input.START): "_noop",
    (_F, _OPENING, Input.RECV_PROPOSE): "_fol_on_propose",
    (_F, _OPEN, Input.ISSUE): "_fol_issue",
    (_F, _OPEN, Input.ISSUE_BATCH): "_fol_issue_batch",
    (_F, _OPEN, Input.CLOSE): "_fol_close",
    (_F, _OPEN, Input.FORCE_MOVE): "_force_move",
    (_F, _OPEN, Input.RECV_PROPOSE): "_fol_on_propose",
    (_F, _OPEN, Input.RECV_DENIED): "_fol_on_denied",
    (_F, _CLOSING, Input.CLOSE): "_noop",
    (_F, _CLOSING, Input.FORCE_MOVE): "_force_move",
    (_F, _CLOSING, Input.RECV_PROPOSE): "_fol_on_propose",
    (_F, _CLOSING, Input.RECV_DENIED): "_fol_on_denied",
    (_F, _CLOSED, Input.RECV_PROPOSE): "_fol_on_propose",
    (_F, _CLOSED, Input.RECV_DENIED): "_fol_on_denied",
    # Between honest parties these arrive after a restart next to a channel that is over
    # or not open yet (a request re-sent by resync, an answer to one, a retransmission):
    # each gets a defined answer, never a violation. The sequencer denies what it cannot
    # sequence now; it takes a late counter-signature of the final update; the follower
    # takes any denial; in a dispute the follower ignores proposals (it signs nothing
    # off-chain any more, I1) and the answers go through L1.
    (_S, _OPENING, Input.RECV_REQUEST): "_seq_on_request",
    (_S, _OPENING, Input.RECV_CLOSE_REQUEST): "_seq_on_close_request",
    (_S, _CLOSED, Input.RECV_ACCEPT): "_seq_on_accept",
    (_S, _CLOSED, Input.RECV_REQUEST): "_seq_on_request",
    (_S, _CLOSED, Input.RECV_CLOSE_REQUEST): "_seq_on_close_request",
    (_S, _DISPUTE, Input.RECV_REQUEST): "_seq_on_request",
    (_S, _DISPUTE, Input.RECV_CLOSE_REQUEST): "_seq_on_close_request",
    (_F, _OPENING, Input.RECV_DENIED): "_fol_on_denied",
    (_F, _DISPUTE, Input.RECV_DENIED): "_fol_on_denied",
    (_F, _DISPUTE, Input.RECV_PROPOSE): "_ignore",
}

#: Why the sequencer denies a request in each phase but OPEN.
_NOT_SEQUENCING = {
    _OPENING: "the channel is not open yet",
    _CLOSING: "channel is closing",
    _CLOSED: "the channel is closed",
    _DISPUTE: "the channel is in dispute on L1",
}

# Resynchronisation is possible in every phase, for both roles (see _recovery.py).
for _role in Role:
    for _phase in Phase:
        TRANSITIONS[_role, _phase, Input.RESYNC] = "_resync"
        TRANSITIONS[_role, _phase, Input.SERVE_LOG] = "_serve_log"
        TRANSITIONS[_role, _phase, Input.RECV_HELLO] = "_on_hello"
        TRANSITIONS[_role, _phase, Input.RECV_ENTRIES] = "_on_entries"

_RECEIVE_INPUT: dict[type, Input] = {
    Hello: Input.RECV_HELLO,
    Entries: Input.RECV_ENTRIES,
    Propose: Input.RECV_PROPOSE,
    Accept: Input.RECV_ACCEPT,
    Request: Input.RECV_REQUEST,
    CloseRequest: Input.RECV_CLOSE_REQUEST,
    Denied: Input.RECV_DENIED,
}

# TRANSITIONS regrouped by (role, phase), so a dispatch costs one lookup on the hot path.
_HANDLERS: dict[tuple[Role, Phase], dict[Input, str]] = {
    (role, phase): {i: h for (r, p, i), h in TRANSITIONS.items() if (r, p) == (role, phase)}
    for role in Role
    for phase in Phase
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
        self.max_in_flight = limits.max_in_flight
        self.max_batch = limits.max_batch
        self.max_queue = limits.max_queue
        self._signer = signer
        self._peer_key = params.participants[self.peer_index]
        self._phase = Phase.OPENING
        self._handlers = _HANDLERS[self.role, Phase.OPENING]
        self._out: list[Effect] = []
        self._committed: SignedUpdate | None = None
        self._committed_state: Any = None
        # Chain tip this party has signed: for the sequencer its newest proposal, for
        # the follower its newest doubly-signed update.
        self._head_seq = -1
        self._head_hash = params.genesis_hash
        self._next_ref = 1
        # sequencer
        self._in_flight: deque[tuple[SignedUpdate, Any, bytes]] = deque()
        # Commands waiting for a window slot: groups that go into one update together
        # (a caller's batch, or one command), each with the state after it.
        self._queue: deque[tuple[tuple[CommandEntry, ...], Any, int]] = deque()
        self._queued = 0  # commands in _queue
        self._tip_state: Any = None
        self._close_wanted = False
        self._final_proposed = False
        self._last_peer_ref = 0  # newest peer request seen (queued, proposed or denied)
        self._handled_peer_ref = 0  # newest peer request proposed or denied: durable ones
        # force moves: the update the next one builds on, once a dispute has begun
        self._dispute_base: tuple[SignedUpdate, Any] | None = None
        # This party's own forced move (the dispute base) and the state it applies to,
        # until the peer's answer is adopted: what to post on L1 again if posting failed.
        self._own_forced: tuple[SignedUpdate, Any] | None = None
        # Log ranges asked for by ServeLog effects not yet answered, oldest first: one
        # step may emit two (a HELLO, commits, another HELLO in one read).
        self._serving: deque[tuple[int, int]] = deque()
        self._served_upto = -1  # newest entry served to the peer since the last resync
        self._retransmit_upto = -1
        self._awaiting_hello = False
        # follower
        self._requests: deque[tuple[int, Any]] = deque()

    # -- public API ---------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def committed(self) -> SignedUpdate | None:
        """The newest doubly-signed update (what to close with on L1)."""
        return self._committed

    @property
    def state(self) -> Any:
        """The app state of :attr:`committed`."""
        return self._committed_state

    @property
    def seq(self) -> int:
        """Sequence number of :attr:`committed` (-1 before the opening update)."""
        return -1 if self._committed is None else self._committed.seq

    @property
    def pending(self) -> int:
        """Commands issued here or requested of here that are not yet committed."""
        return (
            self._queued
            + sum(len(s.update.commands) for s, _, _ in self._in_flight)
            + len(self._requests)
        )

    def in_flight(self) -> list[SignedUpdate]:
        """The sequencer's proposals still lacking the follower's signature, oldest first."""
        return [signed for signed, _, _ in self._in_flight]

    def effects(self) -> list[Effect]:
        """Drain the effects produced so far, to be carried out in order."""
        out, self._out = self._out, []
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

        If this party already signed an update at that sequence number (the sequencer's
        oldest in-flight proposal), that same update is returned: never a second one
        (I1). Otherwise ``command`` is applied as this party's move. Afterwards the
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
    def pending_force(self) -> tuple[SignedUpdate, Any] | None:
        """This party's own forced move and the state it applies to (what L1 takes with
        it), while it is the newest step of the dispute; ``None`` otherwise, and after a
        restart. If it is not on L1 (its post failed), post it again: :meth:`force_move`
        with no command returns it."""
        return self._own_forced

    @property
    def force_base(self) -> tuple[SignedUpdate, Any]:
        """``(update, state)`` the next force move builds on; post the encoded state with it.

        Raises:
            LocalError: nothing committed yet.
        """
        return self._force_base()

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
        return self._next_ref

    @property
    def last_peer_ref(self) -> int:
        """The newest peer request reference the sequencer has sequenced or denied."""
        return self._handled_peer_ref

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
        proposals: list[tuple[SignedUpdate, Any]] | None = None,
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
                first (the sequencer's in-flight proposals, or a force move).
            requests: the follower's pending requests as ``(ref, command, is_close)``.
            next_ref, last_peer_ref: the counters persisted with the channel.

        Raises:
            LocalError: the stored data does not fit together (a damaged store).
        """
        chan = cls(params, app, fmt, signer, limits=limits)
        chan._next_ref = next_ref
        # Requests that were only queued died with the process; the peer re-sends them.
        chan._last_peer_ref = chan._handled_peer_ref = last_peer_ref
        if committed is not None:
            u = committed.update
            if u.channel_id != chan.channel_id or not committed.verify(params, fmt):
                raise LocalError("stored head is not a doubly-signed update of this channel")
            if app.state_hash(state) != u.state_hash:
                raise LocalError("stored state does not match the stored head's state hash")
            chan._committed, chan._committed_state = committed, state
            chan._head_seq, chan._head_hash = u.seq, u.entry_hash()
            chan._tip_state = state
            chan._set_phase(Phase.CLOSED if u.final else Phase.OPEN)
        committed_seq = chan._head_seq
        for signed, pstate in proposals or []:
            u = signed.update
            if not signed.verify(params, fmt, require=(chan.index,)):
                raise LocalError(f"stored proposal {u.seq} is not signed by this party")
            extends = u.seq == chan._head_seq + 1 and u.prev_hash == chan._head_hash
            # A force move answering the peer's: it builds on the peer's forced move,
            # which is on L1 and not in this store, so it does not extend what is stored
            # (it skips that seq, or follows an own proposal the peer's move replaced).
            answers = (
                not extends
                and u.seq > committed_seq + 1
                and not u.final
                and len(u.commands) == 1
                and u.commands[0].actor == chan.index
            )
            if not extends and not answers:
                raise LocalError(f"stored proposal {u.seq} does not extend the stored log")
            chan._head_seq, chan._head_hash = u.seq, u.entry_hash()
            if answers:
                chan._dispute_base = (signed, pstate)
                chan._set_phase(Phase.DISPUTE)
            elif chan.role is Role.SEQUENCER:
                digest = fmt.digest(u, u.body())
                chan._in_flight.append((signed, pstate, digest))
                chan._tip_state = pstate
                if u.final:
                    chan._close_wanted = chan._final_proposed = True
                    chan._set_phase(Phase.CLOSING)
            else:  # a follower signs alone only to force a move
                chan._dispute_base = (signed, pstate)
                chan._set_phase(Phase.DISPUTE)
        for ref, command, is_close in requests or []:
            if chan._phase is Phase.CLOSED:
                break  # the final update answered them all (a store may still list some)
            chan._requests.append((ref, _CLOSE if is_close else command))
            if is_close and chan._phase is Phase.OPEN:
                chan._set_phase(Phase.CLOSING)
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
            raise self._violation(f"malformed message: {exc.reason}") from None
        if msg.channel_id != self.channel_id:
            raise self._violation("message for another channel")
        self._dispatch(_RECEIVE_INPUT[type(msg)], msg)

    # -- dispatch -----------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        self._phase = phase
        self._handlers = _HANDLERS[self.role, phase]

    def _dispatch(self, what: Input, arg: Any = None) -> Any:
        handler = self._handlers.get(what)
        if handler is None:
            where = f"{self.role.value} in phase {self._phase.value}"
            if what.name.startswith("RECV_"):
                raise self._violation(f"unexpected {what.value} message for the {where}")
            raise LocalError(f"cannot {what.value} as the {where}")
        return getattr(self, handler)(arg)

    def _violation(self, reason: str) -> RemoteViolation:
        return RemoteViolation(reason, recourse=self._committed)

    def _send(self, msg: Message) -> None:
        self._out.append(SendMessage(data=encode_message(msg)))

    def _noop(self, _: Any) -> None:
        return None

    def _ignore(self, _: Message) -> None:
        """A message that needs no answer in this phase (see TRANSITIONS)."""
        return None

    def _apply_peer_command(self, state: Any, command: Any, actor: int) -> Any:
        """Run the app on a command that came from the peer; any failure is a rejection."""
        try:
            return self.app.apply(state, command, actor)
        except CommandRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - an app tripping on hostile input must not crash us
            raise CommandRejected(f"malformed command ({type(exc).__name__})") from None

    def _commit(self, signed: SignedUpdate, state: Any) -> None:
        self._committed = signed
        self._committed_state = state
        self._out.append(PersistUpdate(update=signed, state=state, committed=True))
        u = signed.update
        append, seq, index = self._out.append, u.seq, self.index  # per command: keep it lean
        for entry in u.commands:
            actor = entry.actor
            append(
                CommandCommitted(
                    seq=seq, actor=actor, ref=entry.ref, command=entry.command, local=actor == index
                )
            )
        if u.seq == 0:
            self._set_phase(Phase.OPEN)
            self._out.append(ChannelOpened(update=signed))
        if u.final:
            self._set_phase(Phase.CLOSED)
            self._out.append(ChannelFinalized(update=signed))

    # -- sequencer ----------------------------------------------------------------

    def _seq_start(self, _: Any) -> None:
        if self._head_seq >= 0:
            return  # already proposed the opening update
        try:
            state = self.app.initial_state(self.params)
        except CommandRejected as exc:
            raise LocalError(f"app refuses these channel parameters: {exc.reason}") from None
        self._tip_state = state
        self._propose((), state, final=False)

    def _propose(self, entries: tuple[CommandEntry, ...], state: Any, *, final: bool) -> None:
        update = Update(
            channel_id=self.channel_id,
            seq=self._head_seq + 1,
            prev_hash=self._head_hash,
            app_id=self.params.app_id,
            commands=entries,
            state_hash=self.app.state_hash(state),
            outcome=self.app.checked_outcome(state, self.params),
            final=final,
        )
        body = update.body()
        digest = self.format.digest(update, body)
        sig = self._signer.sign(digest)
        sigs = (sig, None) if self.index == 0 else (None, sig)
        signed = SignedUpdate(update, sigs)
        self._head_seq = update.seq
        self._head_hash = _hash(body)
        self._in_flight.append((signed, state, digest))
        for entry in entries:
            if entry.actor == self.peer_index and entry.ref > self._handled_peer_ref:
                self._handled_peer_ref = entry.ref
        self._out.append(PersistUpdate(update=signed, state=state, committed=False))
        self._out.append(SendMessage(data=encode_propose(self.channel_id, body, sig)))

    def _pump(self) -> None:
        if self._phase is Phase.DISPUTE or self._awaiting_hello:
            return
        queue = self._queue
        while queue and len(self._in_flight) < self.max_in_flight:
            entries, state, size = queue.popleft()
            # Under load (the window full, so commands queued up), fill the update up to
            # max_batch commands and MAX_UPDATE_COMMANDS bytes; a caller's batch is never
            # split.
            while (
                queue
                and len(entries) + len(queue[0][0]) <= self.max_batch
                and size + queue[0][2] <= MAX_UPDATE_COMMANDS
            ):
                more, state, more_size = queue.popleft()
                entries += more
                size += more_size
            self._queued -= len(entries)
            self._propose(entries, state, final=False)
        if (
            self._close_wanted
            and not self._final_proposed
            and not self._queue
            and len(self._in_flight) < self.max_in_flight
        ):
            self._final_proposed = True
            self._propose((), self._tip_state, final=True)

    def _apply_own(self, state: Any, commands: list[Any]) -> Any:
        """``state`` after this party's ``commands``, in order; a refusal of one in a batch
        names it (nothing is issued either way)."""
        apply, index = self.app.apply, self.index
        for i, command in enumerate(commands):
            try:
                state = apply(state, command, index)
            except CommandRejected as exc:
                if len(commands) == 1:
                    raise
                raise CommandRejected(f"command {i} of the batch: {exc.reason}") from None
        return state

    def _check_local_command(self, command: Any) -> int:
        """Refuse a command that is not plain data; return its items."""
        try:
            return check_plain(command)
        except CodecError as exc:
            raise LocalError(f"a command must be plain CBOR data: {exc.reason}") from None

    def _seq_issue(self, command: Any) -> int:
        refs: list[int] = self._seq_issue_batch([command])
        return refs[0]

    def _seq_issue_batch(self, commands: list[Any]) -> list[int]:
        if not commands:
            raise LocalError("a batch holds at least one command")
        if self._queued + len(commands) > self.max_queue:
            raise LocalError(f"{self.max_queue} commands are already waiting; try again later")
        items = sum(self._check_local_command(command) for command in commands)
        size = _commands_size(commands, items)
        state = self._apply_own(self._tip_state, commands)
        index = self.index
        first = self._next_ref
        self._next_ref += len(commands)
        refs = list(range(first, first + len(commands)))
        entries = tuple(CommandEntry(index, ref, c) for ref, c in zip(refs, commands, strict=True))
        self._queue.append((entries, state, size))
        self._queued += len(commands)
        self._tip_state = state
        self._pump()
        return refs

    def _seq_close(self, _: Any) -> None:
        if not self.app.may_close(self._tip_state):
            raise LocalError(f"{self.app.name} does not allow a cooperative close in this state")
        self._set_phase(Phase.CLOSING)
        self._close_wanted = True
        self._pump()

    def _seq_on_accept(self, msg: Accept) -> None:
        if msg.seq <= self.seq:
            # The answer to a retransmitted proposal (after a reconnect) that was already
            # counter-signed: both signatures are in hand, there is nothing to learn.
            return
        if not self._in_flight:
            raise self._violation("counter-signature for an update that was not proposed")
        signed, state, digest = self._in_flight[0]
        if msg.seq != signed.seq:
            raise self._violation(f"counter-signature for seq {msg.seq}, expected {signed.seq}")
        if not self.format.scheme.verify(self._peer_key, digest, msg.signature):
            raise self._violation(f"invalid counter-signature on seq {msg.seq}")
        self._in_flight.popleft()
        both = (
            (signed.signatures[0], msg.signature)
            if self.index == 0
            else (
                msg.signature,
                signed.signatures[1],
            )
        )
        self._commit(SignedUpdate(signed.update, both), state)
        self._pump()

    def _deny(self, ref: int, reason: str) -> None:
        self._handled_peer_ref = max(self._handled_peer_ref, ref)
        self._send(Denied(channel_id=self.channel_id, ref=ref, reason=reason))

    def _seq_on_request(self, msg: Request) -> None:
        if _recovery.repeated_request(self, msg.ref):
            return
        self._last_peer_ref = msg.ref
        if self._phase is not Phase.OPEN:
            self._deny(msg.ref, _NOT_SEQUENCING[self._phase])
            return
        if self._queued >= self.max_queue:
            self._deny(msg.ref, "busy")
            return
        try:
            # The decoder allows a command the message's few extra levels of nesting;
            # one deeper than a local command may be is denied, like any other bad one.
            size = _commands_size([msg.command], check_plain(msg.command))
        except CodecError as exc:
            self._deny(msg.ref, f"a command must be plain data: {exc.reason}"[:200])
            return
        except LocalError as exc:
            self._deny(msg.ref, str(exc)[:200])
            return
        try:
            state = self._apply_peer_command(self._tip_state, msg.command, self.peer_index)
        except CommandRejected as exc:
            self._deny(msg.ref, exc.reason)
            return
        entry = CommandEntry(self.peer_index, msg.ref, msg.command)
        self._queue.append(((entry,), state, size))
        self._queued += 1
        self._tip_state = state
        self._pump()

    def _seq_on_close_request(self, msg: CloseRequest) -> None:
        if _recovery.repeated_request(self, msg.ref):
            return
        self._last_peer_ref = msg.ref
        if self._phase is Phase.CLOSING:
            return  # the final update is already coming; it answers this request too
        if self._phase is not Phase.OPEN:
            self._deny(msg.ref, _NOT_SEQUENCING[self._phase])
            return
        if not self.app.may_close(self._tip_state):
            reason = f"{self.app.name} does not allow a cooperative close in this state"
            self._deny(msg.ref, reason)
            return
        self._seq_close(None)

    # -- follower -----------------------------------------------------------------

    def _fol_issue(self, command: Any) -> int:
        refs: list[int] = self._fol_issue_batch([command])
        return refs[0]

    def _fol_request(self, command: Any) -> int:
        ref = self._next_ref
        self._next_ref += 1
        self._requests.append((ref, command))
        self._out.append(PersistRequest(ref=ref, command=command))
        self._send(Request(channel_id=self.channel_id, ref=ref, command=command))
        return ref

    def _fol_issue_batch(self, commands: list[Any]) -> list[int]:
        if not commands:
            raise LocalError("a batch holds at least one command")
        for command in commands:
            # each goes in a request of its own
            _commands_size([command], self._check_local_command(command))
        # Early check, all or nothing, against the newest state this party signed; the
        # sequencer's check against its tip is the one that counts.
        self._apply_own(self._committed_state, commands)
        return [self._fol_request(command) for command in commands]

    def _fol_close(self, _: Any) -> None:
        ref = self._next_ref
        self._next_ref += 1
        self._requests.append((ref, _CLOSE))
        self._out.append(PersistRequest(ref=ref, command=None, close=True))
        self._set_phase(Phase.CLOSING)
        self._send(CloseRequest(channel_id=self.channel_id, ref=ref))

    def _fol_on_denied(self, msg: Denied) -> None:
        # A denial may overtake earlier requests: the sequencer denies at once, while an
        # accepted request can wait in its queue for a window slot. So it may name any
        # pending request; the ones before it keep their order.
        position = next((i for i, (r, _) in enumerate(self._requests) if r == msg.ref), None)
        if position is None:
            if msg.ref < self._next_ref:
                # An answer to a request already resolved: failed when a final update
                # arrived, or committed and then re-sent after a reconnect.
                return
            raise self._violation(f"denial of request {msg.ref}, which was never sent")
        ref, what = self._requests[position]
        del self._requests[position]
        if what is _CLOSE and self._phase is Phase.CLOSING:
            self._set_phase(Phase.OPEN)
        self._out.append(CommandFailed(ref=ref, reason=msg.reason))

    def _fol_on_propose(self, msg: Propose) -> None:
        u = msg.update
        committed = self._committed
        if committed is not None and u.seq <= committed.seq:
            # Compared as bytes: Python calls some different encodings equal (1 == True).
            if u.seq == committed.seq and u.body() == committed.update.body():
                # A retransmission of what this party already signed: same answer again.
                sig = committed.signatures[self.index]
                assert sig is not None
                self._send(Accept(channel_id=self.channel_id, seq=u.seq, signature=sig))
                return
            if u.seq == committed.seq:
                raise self._violation(
                    f"asked to sign a second, different update at seq {u.seq}; refused (I1)"
                )
            raise self._violation(f"stale proposal for seq {u.seq}")
        if u.channel_id != self.channel_id:
            # The message's id routed it here, but the update's id is what gets signed:
            # signing another channel's update would let it be closed with (I5).
            raise self._violation(f"seq {u.seq} is an update of another channel")
        if self._phase is Phase.CLOSED:
            raise self._violation("proposal after the final update")
        expected = self._head_seq + 1
        if u.seq != expected:
            raise self._violation(f"proposal for seq {u.seq}, expected {expected}")
        if u.prev_hash != self._head_hash:
            raise self._violation(f"seq {u.seq} does not link to this party's newest update")
        if u.app_id != self.params.app_id:
            raise self._violation(f"seq {u.seq} names app {u.app_id!r}")
        body = u.body()
        digest = self.format.digest(u, body)
        if not self.format.scheme.verify(self._peer_key, digest, msg.signature):
            raise self._violation(f"invalid or missing proposer signature on seq {u.seq}")
        consumed, state = self._re_execute(u)
        self._check_result(u, state, f"seq {u.seq}")
        # Everything checks out: sign (once for this seq), persist, then answer.
        sig = self._signer.sign(digest)
        sigs = (msg.signature, sig) if self.index == 1 else (sig, msg.signature)
        for _ in range(consumed):
            self._requests.popleft()
        self._head_seq = u.seq
        self._head_hash = _hash(body)
        self._commit(SignedUpdate(u, sigs), state)
        # The Accept carries this party's signature, so it goes after the PersistUpdate
        # that _commit queued (I1).
        self._send(Accept(channel_id=self.channel_id, seq=u.seq, signature=sig))
        if u.final:
            while self._requests:
                ref, _ = self._requests.popleft()
                self._out.append(CommandFailed(ref=ref, reason="channel closed"))

    def _check_result(self, u: Update, state: Any, what: str) -> None:
        """The update must commit to exactly the state and outcome this party computed."""
        if self.app.state_hash(state) != u.state_hash:
            raise self._violation(f"{what}: state hash differs from re-execution")
        outcome = self.app.checked_outcome(state, self.params)
        if outcome != u.outcome:
            raise self._violation(
                f"{what}: outcome {list(u.outcome)} differs from re-execution {list(outcome)}"
            )

    def _re_execute(self, u: Update) -> tuple[int, Any]:
        """Check the commands of a proposal and replay them; returns (requests used, state)."""
        if u.seq == 0:
            if u.commands or u.final:
                raise self._violation("the opening update must have no commands and not be final")
            try:
                return 0, self.app.initial_state(self.params)
            except CommandRejected as exc:
                raise self._violation(f"app refuses the channel parameters: {exc.reason}") from None
        if u.final and u.commands:
            raise self._violation(f"final update {u.seq} carries commands")
        consumed = 0
        state = self._committed_state
        for entry in u.commands:
            if entry.actor == self.index:
                if consumed >= len(self._requests):
                    raise self._violation(f"seq {u.seq} has a command this party never issued")
                ref, command = self._requests[consumed]
                # Canonical bytes, not Python equality: 1 == True and 0 == False, so a
                # sequencer could swap a command for another that encodes (and may
                # execute, on L1 too) differently, and this party would sign it as its own.
                if (
                    command is _CLOSE
                    or entry.ref != ref
                    or encode(entry.command) != encode(command)
                ):
                    raise self._violation(
                        f"seq {u.seq} has a command this party never issued (ref {entry.ref})"
                    )
                consumed += 1
            try:
                state = self._apply_peer_command(state, entry.command, entry.actor)
            except CommandRejected as exc:
                raise self._violation(f"seq {u.seq}: invalid transition: {exc.reason}") from None
        if u.final:
            if not self.app.may_close(state):
                raise self._violation(f"final update {u.seq} where {self.app.name} forbids closing")
            if consumed < len(self._requests) and self._requests[consumed][1] is _CLOSE:
                consumed += 1
        return consumed, state

    # -- resynchronisation (the logic lives in _recovery.py) ------------------------

    def _resync(self, _: Any) -> None:
        _recovery.resync(self)

    def _serve_log(self, entries: list[SignedUpdate]) -> None:
        _recovery.serve_log(self, entries)

    def _on_hello(self, msg: Hello) -> None:
        _recovery.on_hello(self, msg)

    def _on_entries(self, msg: Entries) -> None:
        _recovery.on_entries(self, msg)

    # -- force move ----------------------------------------------------------------

    def _force_base(self) -> tuple[SignedUpdate, Any]:
        if self._dispute_base is not None:
            return self._dispute_base
        if self._committed is None:
            raise LocalError("nothing committed yet")
        return self._committed, self._committed_state

    def _force_move(self, command: Any) -> SignedUpdate:
        base, base_state = self._force_base()
        seq = base.seq + 1
        if self._dispute_base is None and self._in_flight:
            # The sequencer already signed an update at seq: that one, never a second (I1).
            signed, state, _ = self._in_flight[0]
            entries = signed.update.commands
            if signed.update.final or len(entries) != 1 or entries[0].actor != self.index:
                raise LocalError(
                    f"this party already signed seq {seq}, and not as a single move of its "
                    "own; it cannot force a move there (I1)"
                )
            self._dispute_base = (signed, state)
            self._own_forced = (signed, base_state)
            self._set_phase(Phase.DISPUTE)
            return signed
        own = self._own_forced
        if command is None and own is not None and own[0] is base:
            return base  # signed already: posted again (the first post may have failed)
        if self._head_seq >= seq:
            raise LocalError(
                f"this party already signed an update at seq {seq}; "
                "a force move there would be a second signature (I1)"
            )
        if command is None:
            raise LocalError("a force move needs a command")
        if self.app.to_move(base_state) != self.index:
            raise LocalError("it is not this party's move")
        self._check_local_command(command)
        state = self.app.apply(base_state, command, self.index)
        ref = self._next_ref
        self._next_ref += 1
        update = Update(
            channel_id=self.channel_id,
            seq=seq,
            prev_hash=base.update.entry_hash(),
            app_id=self.params.app_id,
            commands=(CommandEntry(self.index, ref, command),),
            state_hash=self.app.state_hash(state),
            outcome=self.app.checked_outcome(state, self.params),
            final=False,
        )
        body = update.body()
        sig = self._signer.sign(self.format.digest(update, body))
        sigs = (sig, None) if self.index == 0 else (None, sig)
        signed = SignedUpdate(update, sigs)
        self._head_seq = update.seq
        self._head_hash = _hash(body)
        self._dispute_base = (signed, state)
        self._own_forced = (signed, base_state)
        self._set_phase(Phase.DISPUTE)
        self._out.append(PersistUpdate(update=signed, state=state, committed=False))
        return signed

    def _adopt_forced_move(self, signed: SignedUpdate) -> None:
        base, base_state = self._force_base()
        u = signed.update
        if u.channel_id != self.channel_id or u.app_id != self.params.app_id or u.final:
            raise self._violation("forced move of another channel or app, or a final one")
        if u.seq != base.seq + 1 or u.prev_hash != base.update.entry_hash():
            raise self._violation(f"forced move at seq {u.seq} does not follow seq {base.seq}")
        if self.app.to_move(base_state) != self.peer_index:
            raise self._violation("forced move by a party whose move it was not")
        if len(u.commands) != 1 or u.commands[0].actor != self.peer_index:
            raise self._violation("a forced move is exactly one command by the mover")
        if not signed.verify(self.params, self.format, require=(self.peer_index,)):
            raise self._violation("forced move without a valid signature of the mover")
        try:
            state = self._apply_peer_command(base_state, u.commands[0].command, self.peer_index)
        except CommandRejected as exc:
            raise self._violation(f"forced move is invalid: {exc.reason}") from None
        self._check_result(u, state, "forced move")
        self._dispute_base = (signed, state)
        self._own_forced = None
        self._set_phase(Phase.DISPUTE)


def _commands_size(commands: list[Any], items: int) -> int:
    """What ``commands`` (holding ``items`` items) add to an update, as a size in bytes
    that also answers for their items, so that bounding the sum of sizes bounds both;
    refuse more than one update carries.

    Raises:
        LocalError: over :data:`MAX_UPDATE_COMMANDS` bytes or :data:`MAX_UPDATE_ITEMS`
            items.
    """
    size = len(encode(commands)) + _ENTRY_OVERHEAD * len(commands)
    if size > MAX_UPDATE_COMMANDS:
        raise LocalError(
            f"the commands encode to {size:,} bytes; one update carries at most "
            f"{MAX_UPDATE_COMMANDS:,} (split them)"
        )
    items += _ENTRY_ITEMS * len(commands)
    if items > MAX_UPDATE_ITEMS:
        raise LocalError(
            f"the commands hold {items:,} items; one update carries at most "
            f"{MAX_UPDATE_ITEMS:,} (split them)"
        )
    return max(size, items * (MAX_UPDATE_COMMANDS // MAX_UPDATE_ITEMS))
