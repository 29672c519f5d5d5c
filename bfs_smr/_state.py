"""What one party's channel holds, and the steps every handler of the protocol shares.

:class:`ChannelState` is the one record of a party's side of a channel: its fixed facts
(parameters, app, key, role) and everything that changes (phase, newest doubly-signed
update, the chain tip it signed, proposals in flight, queued commands, pending requests,
ref counters, the dispute's base, the resync bookkeeping). :class:`Channel
<bfs_smr._channel.Channel>` owns one and dispatches each input to a handler, a function
that takes the record and mutates it: the sequencer's in ``_sequencer.py``, the
follower's in ``_follower.py``, force moves in ``_dispute.py``, resynchronisation and
restore in ``_recovery.py``. No handler reaches into another class.

A handler reports what it did only by appending effects to :attr:`ChannelState.out`
and by the phase it leaves; :class:`Transition` names the phases it may leave, and the
channel checks that at dispatch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._app import StateMachine
from ._codec import MAX_MESSAGE_SIZE, check_plain, encode
from ._crypto import Signer
from ._errors import CodecError, CommandRejected, LocalError, RemoteViolation
from ._l1 import L1Format
from ._lazydeque import LazyDeque
from ._limits import ChannelLimits
from ._messages import (
    ChannelFinalized,
    ChannelOpened,
    CommandCommitted,
    Denied,
    Effect,
    Message,
    PersistUpdate,
    SendMessage,
    encode_message,
)
from ._update import ChannelParams, CommandEntry, SignedUpdate, Update

__all__ = [
    "CLOSE_MARK",
    "MAX_UPDATE_COMMANDS",
    "MAX_UPDATE_ITEMS",
    "ChannelState",
    "Handler",
    "Input",
    "Phase",
    "Role",
    "Transition",
    "apply_own",
    "apply_peer_command",
    "check_local_command",
    "check_result",
    "commands_size",
    "commit",
    "count_refs",
    "deny",
    "replay",
    "send",
    "set_phase",
    "violation",
]


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
    RECV_COMMIT = "commit"
    RECV_SIGNED = "signed"
    RECV_REQUEST = "request"
    RECV_CLOSE_REQUEST = "close_request"
    RECV_DENIED = "denied"


#: A handler: takes the party's record and the input's argument (a command, a parsed
#: message, entries, or ``None``), mutates the record, and returns what the public
#: method returns (refs for an issue, the signed update for a force move, else ``None``).
Handler = Callable[["ChannelState", Any], Any]


@dataclass(frozen=True, slots=True)
class Transition:
    """One legal ``(role, phase, input)``: who handles it and where it may lead.

    Attributes:
        handler: the function that carries it out.
        targets: every phase the party may be in after the handler returns (its own
            phase listed when it may stay). Anything else is a bug in the framework,
            and :meth:`Channel._dispatch <bfs_smr._channel.Channel>` raises
            :class:`~bfs_smr.InternalError`.
    """

    handler: Handler
    targets: frozenset[Phase]

    @property
    def name(self) -> str:
        """The handler as ``module.function``, e.g. ``_sequencer.on_accept``."""
        module = self.handler.__module__.rpartition(".")[2]
        return f"{module}.{self.handler.__qualname__}"


#: Marks a close request in the follower's request queue.
CLOSE_MARK = object()

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


@dataclass(slots=True, eq=False, kw_only=True)
class ChannelState:
    """Everything one party's side of a channel holds (see the module docstring).

    The first group never changes; :func:`set_phase` keeps ``phase`` and ``handlers``
    together. The sequencer uses the proposal, queue and peer-ref fields; the follower
    its ``requests``; both the rest.
    """

    # -- fixed for the channel's life
    params: ChannelParams
    app: StateMachine[Any]
    format: L1Format
    signer: Signer
    limits: ChannelLimits
    index: int  # this party's participant index
    role: Role
    #: The role's transitions by phase (from the channel's table).
    table: Mapping[Phase, Mapping[Input, Transition]]
    channel_id: bytes = b""
    peer_index: int = 0
    peer_key: bytes = b""
    # -- the phase and the transitions legal in it
    phase: Phase = Phase.OPENING
    handlers: Mapping[Input, Transition] = field(default_factory=dict)
    #: Effects produced and not yet drained, in order.
    out: list[Effect] = field(default_factory=list)
    # -- the log
    committed: SignedUpdate | None = None  # the newest doubly-signed update
    committed_state: Any = None
    #: Chain tip: for the sequencer its newest proposal, for the follower the newest
    #: update it signed (awaiting COMMIT, doubly signed, or its own force move).
    head_seq: int = -1
    head_hash: bytes = b""
    next_ref: int = 1  # the next ref this party gives a command of its own
    #: Updates past the newest doubly-signed one, oldest first: (update, state, digest,
    #: tag). At the sequencer its proposals awaiting ACCEPT, which it has not signed
    #: (unless it forced one of them as a move); at the follower the proposals it signed
    #: and ACCEPTed, awaiting COMMIT, with the sequencer's tag on each.
    in_flight: LazyDeque[tuple[SignedUpdate, Any, bytes, bytes]] = field(default_factory=LazyDeque)
    # -- sequencer
    #: Commands waiting for a window slot: groups that go into one update together (a
    #: caller's batch, or one command), each with the state after it and its size.
    queue: LazyDeque[tuple[tuple[CommandEntry, ...], Any, int]] = field(default_factory=LazyDeque)
    queued: int = 0  # commands in queue
    tip_state: Any = None  # the state after everything proposed and queued
    close_wanted: bool = False
    final_proposed: bool = False
    last_peer_ref: int = 0  # newest peer request seen (queued, proposed or denied)
    handled_peer_ref: int = 0  # newest peer request proposed or denied: durable ones
    # -- force moves
    #: The update the next force move builds on, once a dispute has begun.
    dispute_base: tuple[SignedUpdate, Any] | None = None
    #: This party's own forced move (the dispute base) and the state it applies to, until
    #: the peer's answer is adopted: what to post on L1 again if posting failed.
    own_forced: tuple[SignedUpdate, Any, SignedUpdate] | None = None
    # -- resynchronisation
    #: Log ranges asked for by ServeLog effects not yet answered, oldest first: one step
    #: may emit two (a HELLO, commits, another HELLO in one read).
    serving: LazyDeque[tuple[int, int]] = field(default_factory=LazyDeque)
    served_upto: int = -1  # newest entry served to the peer since the last resync
    retransmit_upto: int = -1  # newest proposal to re-send once the peer says HELLO
    awaiting_hello: bool = False
    #: Sequencer: the first seq the follower has not signed (its HELLO): proposals from
    #: there on are re-sent; those before are answered by its SIGNED.
    retransmit_from: int = 0
    #: Sequencer: the newest seq the follower said (HELLO) it has signed, ``None`` until
    #: its HELLO of this round. New proposals wait until this party's chain reaches it
    #: (after a crash, through SIGNED), or they would be second proposals at seqs the
    #: follower has signed once already.
    resume_at: int | None = None
    #: Follower: re-send SIGNED once the entries being served have gone out, so that a
    #: sequencer behind this party can place them.
    retransmit_after_serving: bool = False
    # -- follower
    #: Requests sent and not yet answered, oldest first: (ref, command or CLOSE_MARK).
    requests: LazyDeque[tuple[int, Any]] = field(default_factory=LazyDeque)

    def __post_init__(self) -> None:
        self.channel_id = self.params.channel_id
        self.peer_index = 1 - self.index
        self.peer_key = self.params.participants[self.peer_index]
        self.head_hash = self.params.genesis_hash
        self.handlers = self.table[self.phase]


# -- steps every handler shares ------------------------------------------------------


def set_phase(st: ChannelState, phase: Phase) -> None:
    st.phase = phase
    st.handlers = st.table[phase]


def violation(st: ChannelState, reason: str) -> RemoteViolation:
    """The error for a peer that broke the protocol; its recourse is the newest
    doubly-signed update."""
    return RemoteViolation(reason, recourse=st.committed)


def send(st: ChannelState, msg: Message) -> None:
    st.out.append(SendMessage(data=encode_message(msg)))


def deny(st: ChannelState, ref: int, reason: str) -> None:
    """The sequencer refuses the peer's request ``ref``."""
    st.handled_peer_ref = max(st.handled_peer_ref, ref)
    send(st, Denied(channel_id=st.channel_id, ref=ref, reason=reason))


def commit(st: ChannelState, signed: SignedUpdate, state: Any) -> None:
    """Take a doubly-signed update as the newest: persist it, report its commands, and
    open or close the channel with it."""
    st.committed = signed
    st.committed_state = state
    out = st.out
    out.append(PersistUpdate(update=signed, state=state, committed=True))
    u = signed.update
    append, seq, index = out.append, u.seq, st.index  # per command: keep it lean
    for entry in u.commands:
        actor = entry.actor
        append(
            CommandCommitted(
                seq=seq, actor=actor, ref=entry.ref, command=entry.command, local=actor == index
            )
        )
    if u.seq == 0:
        # Opens the channel, but leaves a dispute a dispute: only a damaged store can put
        # a party in one before its opening update is doubly signed.
        if st.phase is Phase.OPENING:
            set_phase(st, Phase.OPEN)
        out.append(ChannelOpened(update=signed))
    if u.final:
        set_phase(st, Phase.CLOSED)
        out.append(ChannelFinalized(update=signed))


def apply_peer_command(st: ChannelState, state: Any, command: Any, actor: int) -> Any:
    """Run the app on a command that came from the peer; any failure is a rejection."""
    try:
        return st.app.apply(state, command, actor)
    except CommandRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - an app tripping on hostile input must not crash us
        raise CommandRejected(f"malformed command ({type(exc).__name__})") from None


def replay(st: ChannelState, u: Update, what: str) -> Any:
    """The state after ``u``, run from this party's newest doubly-signed state (the
    app's initial state for the opening update) with every command as the peer's.

    Raises:
        RemoteViolation: the opening update has commands, or the app refuses a command.
    """
    try:
        if u.seq == 0:
            if u.commands:
                raise CommandRejected("the opening update has commands")
            return st.app.initial_state(st.params)
        state = st.committed_state
        for entry in u.commands:
            state = apply_peer_command(st, state, entry.command, entry.actor)
    except CommandRejected as exc:
        raise violation(st, f"{what}: invalid transition: {exc.reason}") from None
    return state


def count_refs(st: ChannelState, u: Update) -> None:
    """Move both ref counters past the refs of ``u``, an update this party takes without
    having built it here (an entry served by the peer, or its own proposal recovered
    after a crash).

    A party restored from an old backup, or a sequencer that lost its proposals, learns
    here of commands it issued: its next ref must not repeat theirs (refs never repeat).
    The sequencer likewise learns of requests it sequenced, so a replay of one is never
    run twice.
    """
    for entry in u.commands:
        if entry.actor == st.index:
            if entry.ref >= st.next_ref:
                st.next_ref = entry.ref + 1
        elif entry.ref > st.handled_peer_ref:
            st.handled_peer_ref = entry.ref
            st.last_peer_ref = max(st.last_peer_ref, entry.ref)


def check_result(st: ChannelState, u: Update, state: Any, what: str) -> None:
    """The update must commit to exactly the state and outcome this party computed.

    Raises:
        RemoteViolation: it does not.
    """
    if st.format.state_hash(st.app, state) != u.state_hash:
        raise violation(st, f"{what}: state hash differs from re-execution")
    outcome = st.app.checked_outcome(state, st.params)
    if outcome != u.outcome:
        raise violation(
            st, f"{what}: outcome {list(u.outcome)} differs from re-execution {list(outcome)}"
        )


def apply_own(st: ChannelState, state: Any, commands: list[Any]) -> Any:
    """``state`` after this party's ``commands``, in order; a refusal of one in a batch
    names it (nothing is issued either way)."""
    apply, index = st.app.apply, st.index
    for i, command in enumerate(commands):
        try:
            state = apply(state, command, index)
        except CommandRejected as exc:
            if len(commands) == 1:
                raise
            raise CommandRejected(f"command {i} of the batch: {exc.reason}") from None
    return state


def check_local_command(command: Any) -> int:
    """Refuse a command that is not plain data; return its items."""
    try:
        return check_plain(command)
    except CodecError as exc:
        raise LocalError(f"a command must be plain CBOR data: {exc.reason}") from None


def commands_size(commands: list[Any], items: int) -> int:
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
