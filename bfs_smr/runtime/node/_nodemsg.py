"""Node messages: what two nodes say to each other outside any channel.

Frames on a link (inside the transport's encryption): ``0x01 ‖ channel id ‖ message``
for a channel message (:data:`CHANNEL_FRAME`), ``0x02 ‖ CBOR`` for a node message
(:data:`NODE_FRAME`). A node message's value is one of:

- ``["account", l1_domain, key]``: the key the sender signs channel updates with on the L1
  named by ``l1_domain`` (sent first on every link);
- ``["open", params]``: the sender opens a channel with these parameters;
- ``["open-reply", channel_id, reason]``: ``reason`` is ``None`` if the channel was
  accepted, else why it was refused.

:func:`parse_node_message` is pure: it decodes with the hardened decoder and checks the
shape of every field, so the node acts only on a message it has fully understood. What a
field means (is the account the right size for this L1, are the parameters acceptable) is
the node's to judge. The ``*_frame`` functions build the frames this node sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bfs_smr._codec import HASH_SIZE, decode, encode
from bfs_smr._errors import CodecError

__all__ = [
    "CHANNEL_FRAME",
    "MAX_NODE_ITEMS",
    "MAX_NODE_MESSAGE",
    "MAX_REASON",
    "NODE_FRAME",
    "Account",
    "NodeMessage",
    "Open",
    "OpenReply",
    "account_frame",
    "open_frame",
    "open_reply_frame",
    "parse_node_message",
]

#: The first byte of a frame carrying a channel message.
CHANNEL_FRAME = 0x01
#: The first byte of a frame carrying a node message.
NODE_FRAME = 0x02

#: Largest node message, in bytes.
MAX_NODE_MESSAGE = 1 << 16
#: Most CBOR items in one node message: channel parameters with their app options fit
#: easily, and a stranger's message costs the decoder a few milliseconds at most.
MAX_NODE_ITEMS = 4096
#: Longest refusal reason kept from an open reply, in characters.
MAX_REASON = 200
#: Longest L1 domain and account key a node message may carry, in bytes.
_MAX_KEY = 256


@dataclass(frozen=True, slots=True)
class Account:
    """The sender's channel key on the L1 ``domain``."""

    domain: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class Open:
    """A channel the sender opens: ``params`` as plain data, not yet checked."""

    params: Any


@dataclass(frozen=True, slots=True)
class OpenReply:
    """The answer to an :class:`Open`: ``reason`` is ``None`` if accepted."""

    channel_id: bytes
    reason: str | None


NodeMessage = Account | Open | OpenReply


def parse_node_message(data: bytes) -> NodeMessage:
    """Decode and shape-check one node message.

    Raises:
        CodecError: undecodable, too large, an unknown kind, or a field of the wrong shape.
    """
    msg = decode(data, max_size=MAX_NODE_MESSAGE, max_items=MAX_NODE_ITEMS)
    if type(msg) is not list or not msg:
        raise CodecError("a node message is a non-empty array")
    kind, n = msg[0], len(msg)
    if kind == "account" and n == 3:
        domain, key = msg[1], msg[2]
        if type(domain) is not bytes or type(key) is not bytes:
            raise CodecError("an account is two byte strings")
        if len(domain) > _MAX_KEY or len(key) > _MAX_KEY:
            raise CodecError("an account's domain or key is too long")
        return Account(domain, key)
    if kind == "open" and n == 2:
        return Open(msg[1])
    if kind == "open-reply" and n == 3:
        cid, reason = msg[1], msg[2]
        if type(cid) is not bytes or len(cid) not in (0, HASH_SIZE):
            raise CodecError("an open reply names a channel id")
        if reason is not None and type(reason) is not str:
            raise CodecError("an open reply's reason is text or null")
        return OpenReply(cid, None if reason is None else reason[:MAX_REASON])
    raise CodecError(f"unknown node message {str(kind)[:20]!r}")


def account_frame(domain: bytes, key: bytes) -> bytes:
    """The frame announcing this node's channel ``key`` on the L1 ``domain``."""
    return _node_frame(["account", domain, key])


def open_frame(params: Any) -> bytes:
    """The frame opening a channel with ``params`` (as plain data)."""
    return _node_frame(["open", params])


def open_reply_frame(channel_id: bytes, reason: str | None) -> bytes:
    """The frame answering an open: ``reason`` is None if accepted."""
    return _node_frame(["open-reply", channel_id, reason])


def _node_frame(value: Any) -> bytes:
    return bytes([NODE_FRAME]) + encode(value)
