"""Wire messages between the two parties of a channel, and the effects the protocol emits.

Messages are canonical CBOR arrays ``[kind, channel_id, ...fields]``. :func:`parse_message`
checks every field's type and size before anything else looks at it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._codec import HASH_SIZE, MAX_MESSAGE_SIZE, decode, encode, item_head
from ._errors import CodecError
from ._update import SignedUpdate, Update

__all__ = [
    "Accept",
    "ChannelFinalized",
    "ChannelOpened",
    "CloseRequest",
    "CommandCommitted",
    "CommandFailed",
    "Commit",
    "Denied",
    "Effect",
    "Entries",
    "Hello",
    "Message",
    "MessageKind",
    "PersistRequest",
    "PersistUpdate",
    "Propose",
    "Request",
    "SendMessage",
    "ServeLog",
    "Signed",
    "encode_message",
    "encode_propose",
    "parse_message",
]

MAX_REASON = 200


class MessageKind(enum.IntEnum):
    PROPOSE = 1  # sequencer -> follower: a new update, with the sequencer's tag (unsigned)
    ACCEPT = 2  # follower -> sequencer: the follower's signature on that update
    REQUEST = 3  # follower -> sequencer: please sequence this command of mine
    CLOSE_REQUEST = 4  # follower -> sequencer: please propose a final update
    DENIED = 5  # sequencer -> follower: your request `ref` was not sequenced
    HELLO = 6  # either way, on (re)connect: where this party's log ends
    ENTRIES = 7  # either way: doubly-signed entries the peer lacks
    COMMIT = 8  # sequencer -> follower: the sequencer's signature on an accepted update
    SIGNED = 9  # follower -> sequencer, on resync: an update it signed, awaiting COMMIT


#: Most entries in one ENTRIES message (each is a few hundred bytes).
MAX_ENTRIES = 1024


# -- messages (data only) -------------------------------------------------------------


#: Bytes of the sequencer's tag on a proposal (:meth:`Signer.tag <bfs_smr.Signer.tag>`).
TAG_SIZE = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Propose:
    """A new update. Nobody has signed it yet: the follower signs first. ``tag`` lets the
    sequencer recognise it as its own after a crash (it keeps no copy)."""

    channel_id: bytes
    update: Update
    tag: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    channel_id: bytes
    seq: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """The sequencer's signature on update ``seq``, which the follower has signed: the
    update is now doubly signed."""

    channel_id: bytes
    seq: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Signed:
    """On resync: an update the follower signed (``signature``) and has not seen
    committed, with the tag of the proposal it came in, for a sequencer that may have
    lost it in a crash."""

    channel_id: bytes
    update: Update
    signature: bytes
    tag: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    channel_id: bytes
    ref: int
    command: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequest:
    channel_id: bytes
    ref: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Denied:
    channel_id: bytes
    ref: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Sent on (re)connect. ``next_seq`` is one past this party's newest doubly-signed
    update (0 if it has none), ``head_hash`` that update's entry hash (the genesis hash if
    none), ``signed_next`` one past the newest update this party has signed (the
    follower's may be ahead of ``next_seq``: updates it signed, awaiting COMMIT)."""

    channel_id: bytes
    next_seq: int
    head_hash: bytes
    signed_next: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Entries:
    """Consecutive doubly-signed updates, oldest first, for a peer that is behind."""

    channel_id: bytes
    entries: tuple[SignedUpdate, ...]


Message = Propose | Accept | Commit | Signed | Request | CloseRequest | Denied | Hello | Entries


def encode_message(msg: Message) -> bytes:
    """Canonical bytes of ``msg``."""
    if isinstance(msg, Propose):
        value: list[Any] = [
            MessageKind.PROPOSE,
            msg.channel_id,
            msg.update.to_value(),
            msg.tag,
        ]
    elif isinstance(msg, Accept):
        value = [MessageKind.ACCEPT, msg.channel_id, msg.seq, msg.signature]
    elif isinstance(msg, Commit):
        value = [MessageKind.COMMIT, msg.channel_id, msg.seq, msg.signature]
    elif isinstance(msg, Signed):
        value = [
            MessageKind.SIGNED,
            msg.channel_id,
            msg.update.to_value(),
            msg.signature,
            msg.tag,
        ]
    elif isinstance(msg, Request):
        value = [MessageKind.REQUEST, msg.channel_id, msg.ref, msg.command]
    elif isinstance(msg, CloseRequest):
        value = [MessageKind.CLOSE_REQUEST, msg.channel_id, msg.ref]
    elif isinstance(msg, Denied):
        value = [MessageKind.DENIED, msg.channel_id, msg.ref, msg.reason[:MAX_REASON]]
    elif isinstance(msg, Hello):
        value = [
            MessageKind.HELLO,
            msg.channel_id,
            msg.next_seq,
            msg.head_hash,
            msg.signed_next,
        ]
    else:
        value = [MessageKind.ENTRIES, msg.channel_id, [e.to_value() for e in msg.entries]]
    return encode([int(value[0]), *value[1:]])


_PROPOSE_PREFIX = b"\x84" + encode(int(MessageKind.PROPOSE))


def encode_propose(channel_id: bytes, body: bytes, tag: bytes) -> bytes:
    """``encode_message(Propose(...))`` from an update's already-encoded ``body``.

    A canonical CBOR array is its header followed by its items' canonical encodings, so
    the proposer need not encode the update a second time on the hot path.
    """
    return (
        _PROPOSE_PREFIX
        + item_head(2, len(channel_id))
        + channel_id
        + body
        + item_head(2, len(tag))
        + tag
    )


def _int(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise CodecError(f"{name} must be an integer in [0, 2**63)")
    return value


def _sig(value: Any) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= 256:
        raise CodecError("signature must be 1 to 256 bytes")
    return value


def _tag(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != TAG_SIZE:
        raise CodecError(f"tag must be {TAG_SIZE} bytes")
    return value


def _update(value: Any) -> Update:
    try:
        return Update.from_value(value)
    except ValueError as exc:
        raise CodecError(f"malformed update: {exc}") from None


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> Message:
    """Decode and shape-check one message from the peer.

    Raises:
        CodecError: undecodable, oversized, unknown kind, or a field of the wrong shape.
    """
    value = decode(data, max_size=max_size)
    if type(value) is not list or len(value) < 2:
        raise CodecError("a message is an array [kind, channel_id, ...]")
    kind, cid = value[0], value[1]
    if type(cid) is not bytes or len(cid) != HASH_SIZE:
        raise CodecError("channel_id must be 32 bytes")
    n = len(value)
    if kind == MessageKind.PROPOSE and n == 4:
        return Propose(channel_id=cid, update=_update(value[2]), tag=_tag(value[3]))
    if kind == MessageKind.ACCEPT and n == 4:
        return Accept(channel_id=cid, seq=_int(value[2], "seq"), signature=_sig(value[3]))
    if kind == MessageKind.COMMIT and n == 4:
        return Commit(channel_id=cid, seq=_int(value[2], "seq"), signature=_sig(value[3]))
    if kind == MessageKind.SIGNED and n == 5:
        return Signed(
            channel_id=cid, update=_update(value[2]), signature=_sig(value[3]), tag=_tag(value[4])
        )
    if kind == MessageKind.REQUEST and n == 4:
        return Request(channel_id=cid, ref=_int(value[2], "ref"), command=value[3])
    if kind == MessageKind.CLOSE_REQUEST and n == 3:
        return CloseRequest(channel_id=cid, ref=_int(value[2], "ref"))
    if kind == MessageKind.DENIED and n == 4:
        reason = value[3]
        if type(reason) is not str or len(reason) > MAX_REASON:
            raise CodecError("reason must be a short string")
        return Denied(channel_id=cid, ref=_int(value[2], "ref"), reason=reason)
    if kind == MessageKind.HELLO and n == 5:
        head = value[3]
        if type(head) is not bytes or len(head) != HASH_SIZE:
            raise CodecError("head_hash must be 32 bytes")
        return Hello(
            channel_id=cid,
            next_seq=_int(value[2], "next_seq"),
            head_hash=head,
            signed_next=_int(value[4], "signed_next"),
        )
    if kind == MessageKind.ENTRIES and n == 3:
        items = value[2]
        if type(items) is not list or not 0 < len(items) <= MAX_ENTRIES:
            raise CodecError(f"entries must be 1 to {MAX_ENTRIES} signed updates")
        try:
            entries = tuple(SignedUpdate.from_value(item) for item in items)
        except ValueError as exc:
            raise CodecError(f"malformed entry: {exc}") from None
        return Entries(channel_id=cid, entries=entries)
    raise CodecError(f"unknown message kind or wrong length: {kind!r}/{n}")


# -- effects: what the protocol asks its driver to do, in order ---------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendMessage:
    """Send ``data`` to the peer. Comes after any :class:`PersistUpdate` it depends on."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistUpdate:
    """Make this update (and its state) durable before acting on later effects.

    ``committed`` is ``False`` for an update this party signed that still lacks the
    peer's signature (I1, docs/design.md §4: the fact of signing is durable before the signature
    leaves), ``True`` once it is doubly signed (I3). ``tag`` is the sequencer's tag on
    the proposal the follower signed (keep it with the update: after both parties
    restart, the follower shows it to the sequencer); empty otherwise.
    """

    update: SignedUpdate
    state: Any
    committed: bool
    tag: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandCommitted:
    """A command is in a doubly-signed update (a payment sent or received).

    ``local`` is ``True`` for commands this party issued (``ref`` is what ``issue``
    returned).
    """

    seq: int
    actor: int
    ref: int
    command: Any
    local: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFailed:
    """A command this party issued will never be committed."""

    ref: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistRequest:
    """Make this request of the follower's durable before it is sent.

    After a crash the follower must still recognise its own commands in the sequencer's
    proposals (it signs only commands it issued, I2); a request it cannot recognise would
    leave the sequencer's signed proposal uncompletable.
    """

    ref: int
    command: Any
    close: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeLog:
    """The peer lacks doubly-signed entries ``first_seq..last_seq`` (inclusive): read them
    from the store and pass them to :meth:`Channel.serve_log`, before later effects."""

    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpened:
    """The opening update (seq 0) is doubly signed: it is now safe to fund on L1."""

    update: SignedUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelFinalized:
    """A final update is doubly signed: submit it for a cooperative close."""

    update: SignedUpdate


Effect = (
    SendMessage
    | PersistUpdate
    | PersistRequest
    | ServeLog
    | CommandCommitted
    | CommandFailed
    | ChannelOpened
    | ChannelFinalized
)
