"""Channel parameters, updates, and the hash-chained doubly-signed log.

An :class:`Update` is one log entry: it names its channel and sequence number, links to
the previous entry by hash, lists the commands it commits (each with the party that issued
it), and commits to the resulting state (by hash) and outcome. Both parties sign the L1's
digest of it; with both signatures it is a :class:`SignedUpdate` that any L1 will honour.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from ._codec import HASH_SIZE, encode, encode_signatures, hash_bytes
from ._errors import CommandRejected, LocalError, LogVerificationError

if TYPE_CHECKING:
    from ._app import StateMachine
    from ._l1 import L1Format

__all__ = [
    "ChannelParams",
    "CommandEntry",
    "SignedUpdate",
    "Update",
    "replay_commands",
    "verify_log",
]

#: Participant indices. Index 0 is the opener, which sequences every update (I6, docs/design.md §4).
PARTIES = (0, 1)


#: The most a channel locks in all, in the L1's smallest unit: the codec's largest integer.
MAX_AMOUNT = (1 << 64) - 1


# A plain Python class in the compiled build too (README.md, "A compiled build"): a native
# class would type-check its fields on assignment and raise TypeError before
# __post_init__ could refuse a wrong type with LocalError. It is built once per channel.
@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelParams:
    """What both parties agree on before the channel exists; hashed into its id.

    Attributes:
        l1: the L1's domain (chain and contract), so an id never repeats across L1s.
        participants: the two public keys, opener first.
        deposits: what each participant locks, in the L1's smallest unit.
        app: the app's registered name.
        app_version: the app's version; updates from another version never verify.
        options: app options (plain CBOR data).
        nonce: makes the id fresh when the same pair opens again.
        challenge_window: the unilateral-close window, in L1 time units (seconds).
        watch: the commitment to the channel's *watch secret*
            (:meth:`~bfs_smr.L1Format.watch_commitment`), or empty for none. When set, a
            unilateral close must reveal the secret on L1, and only then can a watchtower
            read what a party gave it (docs/watchtower.md).
    """

    l1: bytes
    participants: tuple[bytes, bytes]
    deposits: tuple[int, int]
    app: str
    app_version: int
    options: Mapping[str, Any] = field(default_factory=dict)
    nonce: int = 0
    challenge_window: int = 86_400
    watch: bytes = b""
    # The id and app_id, made once: every party's record, each update and the node's
    # tables hold them, and one object for all takes less memory than one for each.
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _app_id: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every field is checked, not only the numbers: parameters also come from peers and
        # from a tower's entries, and the id hashes them all (a non-mapping ``options``
        # once passed here and failed only when the id was taken). They are read as Any:
        # the compiled build would otherwise check each against its annotation on reading
        # and raise TypeError, where a wrong type is a LocalError.
        me: Any = self
        if type(me.l1) is not bytes or any(type(p) is not bytes for p in me.participants):
            raise LocalError("l1 and both participants must be bytes")
        if type(me.app) is not str or not isinstance(me.options, Mapping):
            raise LocalError("app must be a string and options a mapping")
        if type(me.watch) is not bytes or len(me.watch) not in (0, HASH_SIZE):
            raise LocalError(f"watch must be empty or {HASH_SIZE} bytes")
        if len(me.participants) != 2 or me.participants[0] == me.participants[1]:
            raise LocalError("a channel has two distinct participants")
        if len(me.deposits) != 2 or any(type(d) is not int or d < 0 for d in me.deposits):
            raise LocalError("deposits must be two non-negative integers")
        if type(me.challenge_window) is not int or me.challenge_window <= 0:
            raise LocalError("challenge_window must be a positive integer")
        if type(me.nonce) is not int or me.nonce < 0:
            raise LocalError("nonce must be a non-negative integer")
        locked = me.deposits[0] + me.deposits[1]
        if max(locked, me.nonce, me.challenge_window) > MAX_AMOUNT:
            # Every amount a channel's states and outcomes hold is at most the total locked:
            # beyond 64 bits the codec has no integer for it, and a channel opened with it
            # could never be read back (its funds stuck on L1).
            raise LocalError(
                f"deposits, nonce and challenge_window must stay at most 2**64 - 1 in all "
                f"(the codec's integers); the deposits total {locked}"
            )
        if not me.app or type(me.app_version) is not int:
            raise LocalError("app needs a name and an integer version")

    @property
    def locked(self) -> int:
        """Total value locked on L1 for this channel."""
        return self.deposits[0] + self.deposits[1]

    @property
    def app_id(self) -> str:
        """``name/version``, bound into every update."""
        app_id = self._app_id
        if app_id is None:
            app_id = sys.intern(f"{self.app}/{self.app_version}")  # one for all channels
            object.__setattr__(self, "_app_id", app_id)  # a cache: the value never changes
        return app_id

    def to_value(self) -> list[Any]:
        """Plain-data form, as encoded and hashed."""
        return [
            self.l1,
            list(self.participants),
            list(self.deposits),
            self.app,
            self.app_version,
            dict(self.options),
            self.nonce,
            self.challenge_window,
            # only when set, so channels without a watch secret keep their ids
            *([self.watch] if self.watch else []),
        ]

    @classmethod
    def from_value(cls, value: Any) -> ChannelParams:
        """Rebuild parameters from :meth:`to_value` output (as decoded from a store or an
        L1 file).

        Raises:
            ValueError: not an 8-item array (9 with a watch commitment) with two
                participants and two deposits.
            LocalError: the fields do not make valid parameters.
        """
        if type(value) is not list or len(value) not in (8, 9):
            raise ValueError("channel parameters must be an 8- or 9-item array")
        l1, participants, deposits, app, version, options, nonce, window = value[:8]
        watch = value[8] if len(value) == 9 else b""
        if len(value) == 9 and (type(watch) is not bytes or len(watch) != HASH_SIZE):
            raise ValueError(f"a watch commitment is {HASH_SIZE} bytes")
        if type(participants) is not list or len(participants) != 2:
            raise ValueError("participants must be a 2-item array")
        if type(deposits) is not list or len(deposits) != 2:
            raise ValueError("deposits must be a 2-item array")
        return cls(
            l1=l1,
            participants=(participants[0], participants[1]),
            deposits=(deposits[0], deposits[1]),
            app=app,
            app_version=version,
            options=options,
            nonce=nonce,
            challenge_window=window,
            watch=watch,
        )

    @property
    def channel_id(self) -> bytes:
        """The channel id: the hash of the parameters (fresh per nonce and L1)."""
        cid = self._id
        if cid is None:
            cid = hash_bytes(b"bfs-smr/channel/v1" + encode(self.to_value()))
            object.__setattr__(self, "_id", cid)  # a cache: the value never changes
        return cid

    @property
    def genesis_hash(self) -> bytes:
        """What the opening update (seq 0) links to as its previous hash."""
        return hash_bytes(b"bfs-smr/genesis/v1" + self.channel_id)


@dataclass(frozen=True, slots=True)
class CommandEntry:
    """One command in an update: who issued it, the issuer's reference, the command."""

    actor: int
    ref: int
    command: Any

    def to_value(self) -> list[Any]:
        return [self.actor, self.ref, self.command]


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """One entry of the channel's log (unsigned).

    Attributes:
        channel_id: the channel.
        seq: sequence number; the opening state is 0.
        prev_hash: :meth:`entry_hash` of entry ``seq - 1`` (the genesis hash for 0).
        app_id: ``name/version`` of the app.
        commands: the commands this entry commits, in order.
        state_hash: hash of the canonical encoding of the resulting state.
        outcome: what each participant is paid if the channel closes here.
        final: a final update closes the channel at once on L1.
    """

    channel_id: bytes
    seq: int
    prev_hash: bytes
    app_id: str
    commands: tuple[CommandEntry, ...]
    state_hash: bytes
    outcome: tuple[int, int]
    final: bool = False
    # The canonical encoding, made once: signing, hashing, sending and storing all need it,
    # and for a batch of a thousand commands encoding is most of a party's work.
    _body: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def to_value(self) -> list[Any]:
        return [
            self.channel_id,
            self.seq,
            self.prev_hash,
            self.app_id,
            [c.to_value() for c in self.commands],
            self.state_hash,
            list(self.outcome),
            self.final,
        ]

    def body(self) -> bytes:
        """The canonical encoding that is hashed (and, on the embedded L1, signed)."""
        body = self._body
        if body is None:
            body = encode(self.to_value())
            object.__setattr__(self, "_body", body)  # a cache: the value never changes
        return body

    def forget_body(self) -> None:
        """Drop the cached encoding (:meth:`body` makes it again): a node holds each
        channel's newest update while the channel is idle, and seldom encodes it again."""
        object.__setattr__(self, "_body", None)

    def entry_hash(self) -> bytes:
        """The hash the next entry links to."""
        return hash_bytes(self.body())

    @classmethod
    def from_value(cls, value: Any) -> Update:
        """Rebuild an update from untrusted plain data, checking every field's shape.

        Raises:
            ValueError: a field is missing or has the wrong type or size.
        """
        if type(value) is not list or len(value) != 8:
            raise ValueError("update must be an 8-item array")
        cid, seq, prev, app_id, commands, state_hash, outcome, final = value
        _need_hash(cid, "channel_id")
        _need_hash(prev, "prev_hash")
        _need_hash(state_hash, "state_hash")
        if type(seq) is not int or seq < 0 or seq >= 1 << 63:
            raise ValueError("seq must be an integer in [0, 2**63)")
        if type(app_id) is not str or not 0 < len(app_id) <= 128:
            raise ValueError("app_id must be a short string")
        if type(commands) is not list:
            raise ValueError("commands must be an array")
        entries = []
        for item in commands:
            if type(item) is not list or len(item) != 3:
                raise ValueError("a command entry is [actor, ref, command]")
            actor, ref, command = item
            if actor not in PARTIES or type(actor) is not int:
                raise ValueError("actor must be 0 or 1")
            if type(ref) is not int or ref < 0 or ref >= 1 << 63:
                raise ValueError("ref must be a non-negative integer")
            entries.append(CommandEntry(actor, ref, command))
        if (
            type(outcome) is not list
            or len(outcome) != 2
            or any(type(x) is not int or x < 0 for x in outcome)
        ):
            raise ValueError("outcome must be two non-negative integers")
        if type(final) is not bool:
            raise ValueError("final must be a boolean")
        return cls(
            channel_id=cid,
            seq=seq,
            prev_hash=prev,
            app_id=app_id,
            commands=tuple(entries),
            state_hash=state_hash,
            outcome=(outcome[0], outcome[1]),
            final=final,
        )


def _need_hash(value: Any, name: str) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class SignedUpdate:
    """An update with the signatures collected so far, indexed by participant.

    Doubly signed (both present and valid) it is binding on L1.
    """

    update: Update
    signatures: tuple[bytes | None, bytes | None]

    @property
    def seq(self) -> int:
        return self.update.seq

    @property
    def doubly_signed(self) -> bool:
        """Both signatures present (validity is checked by :meth:`verify`)."""
        return self.signatures[0] is not None and self.signatures[1] is not None

    def verify(
        self, params: ChannelParams, fmt: L1Format, *, require: Iterable[int] = PARTIES
    ) -> bool:
        """Check the signatures of the parties in ``require`` over the L1 digest."""
        digest = fmt.digest(self.update, self.update.body())
        for index in require:
            sig = self.signatures[index]
            if sig is None or not fmt.scheme.verify(params.participants[index], digest, sig):
                return False
        return True

    def to_value(self) -> list[Any]:
        return [self.update.to_value(), list(self.signatures)]

    def encoded(self) -> bytes:
        """``encode(self.to_value())``, reusing the update's cached body."""
        # A 2-item array is the byte 0x82 then its items, each canonical on its own.
        return b"\x82" + self.update.body() + encode_signatures(self.signatures)

    @classmethod
    def from_value(cls, value: Any) -> SignedUpdate:
        """Rebuild from untrusted plain data (shapes only; signatures are not checked)."""
        if type(value) is not list or len(value) != 2:
            raise ValueError("signed update must be [update, signatures]")
        update = Update.from_value(value[0])
        sigs = value[1]
        if type(sigs) is not list or len(sigs) != 2:
            raise ValueError("signatures must be a 2-item array")
        for sig in sigs:
            if sig is not None and (type(sig) is not bytes or len(sig) > 256):
                raise ValueError("a signature is null or at most 256 bytes")
        return cls(update, (sigs[0], sigs[1]))


def replay_commands(app: StateMachine[Any], state: Any, commands: Iterable[CommandEntry]) -> Any:
    """Apply ``commands`` in order; raises :class:`CommandRejected` on the first bad one."""
    for entry in commands:
        state = app.apply(state, entry.command, entry.actor)
    return state


def verify_log(
    params: ChannelParams,
    app: StateMachine[Any],
    fmt: L1Format,
    entries: Iterable[SignedUpdate],
) -> Any:
    """Verify a whole log from the opening update and return the state it ends in.

    Checks every link (sequence, previous hash, channel, app), both signatures of every
    entry, and — by replaying the commands — every state hash and outcome, and that every
    outcome pays out exactly the locked total and nothing follows a final entry.

    Raises:
        LogVerificationError: naming the first entry that fails and why.
    """
    state: Any = None
    prev_hash = params.genesis_hash
    expected_seq = 0
    finished = False
    for signed in entries:
        u = signed.update
        if finished:
            raise LogVerificationError("entry after a final update", u.seq)
        if u.seq != expected_seq:
            raise LogVerificationError(f"expected sequence {expected_seq}", u.seq)
        if u.channel_id != params.channel_id:
            raise LogVerificationError("belongs to another channel", u.seq)
        if u.app_id != params.app_id:
            raise LogVerificationError("names another app or version", u.seq)
        if u.prev_hash != prev_hash:
            raise LogVerificationError("previous-hash link is broken", u.seq)
        if not signed.verify(params, fmt):
            raise LogVerificationError("missing or invalid signature", u.seq)
        try:
            if u.seq == 0:
                if u.commands:
                    raise LogVerificationError("opening update has commands", 0)
                state = app.initial_state(params)
            else:
                state = replay_commands(app, state, u.commands)
        except CommandRejected as exc:
            raise LogVerificationError(f"invalid transition: {exc.reason}", u.seq) from None
        if fmt.state_hash(app, state) != u.state_hash:
            raise LogVerificationError("state hash differs from replay", u.seq)
        if tuple(app.checked_outcome(state, params)) != u.outcome:
            raise LogVerificationError("outcome differs from replay", u.seq)
        prev_hash = u.entry_hash()
        expected_seq += 1
        finished = u.final
    if expected_seq == 0:
        raise LogVerificationError("empty log", 0)
    return state
