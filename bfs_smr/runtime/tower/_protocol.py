"""The messages between a node and a watchtower, over the authenticated, encrypted transport.

Each frame is one canonical CBOR array whose first item names the message. Every field a
peer sends is checked here, with the hardened decoder, before anything acts on it.

Node → tower::

    ["put", locator(32 bytes), seq, entry(entry_size bytes)]   file or replace an entry
    ["query", [locator, …]]                                    at most MAX_QUERY locators

Tower → node::

    ["welcome", version, slot]            first, on every link: the plaintext slot size
    ["ack", locator, seq]                 the entry is durable at this seq
    ["refused", locator or null, reason]  a put (or a frame) was refused, and why
    ["seqs", [seq or null, …]]            the seq of each queried entry, in query order

A tower answers every put and query in order, so a node needs no request ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bfs_smr._codec import decode, encode
from bfs_smr._errors import CodecError

__all__ = [
    "MAX_QUERY",
    "MAX_SEQ",
    "MAX_SLOT",
    "MIN_SLOT",
    "VERSION",
    "Ack",
    "Put",
    "Query",
    "Refused",
    "Seqs",
    "TowerProtocolError",
    "Welcome",
    "parse_from_node",
    "parse_from_tower",
]

VERSION = 1
#: Locators in one query: the answer stays a small frame.
MAX_QUERY = 512
#: The largest seq an update can have (Update.from_value's bound).
MAX_SEQ = (1 << 63) - 1
_LOCATOR = 32
#: The slots a tower may have (TowerConfig checks its own the same way).
MIN_SLOT, MAX_SLOT = 256, 65_536
#: Bytes of a frame a node or tower decodes: an entry of the largest slot, and headroom.
MAX_MESSAGE = 1 << 17


class TowerProtocolError(ValueError):
    """A frame is not a message of this protocol; the text says why."""


@dataclass(frozen=True, slots=True)
class Put:
    locator: bytes
    seq: int
    entry: bytes

    def encode(self) -> bytes:
        return encode(["put", self.locator, self.seq, self.entry])


@dataclass(frozen=True, slots=True)
class Query:
    locators: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode(["query", list(self.locators)])


@dataclass(frozen=True, slots=True)
class Welcome:
    version: int
    slot: int

    def encode(self) -> bytes:
        return encode(["welcome", self.version, self.slot])


@dataclass(frozen=True, slots=True)
class Ack:
    locator: bytes
    seq: int

    def encode(self) -> bytes:
        return encode(["ack", self.locator, self.seq])


@dataclass(frozen=True, slots=True)
class Refused:
    locator: bytes | None
    reason: str

    def encode(self) -> bytes:
        return encode(["refused", self.locator, self.reason[:200]])


@dataclass(frozen=True, slots=True)
class Seqs:
    seqs: tuple[int | None, ...]

    def encode(self) -> bytes:
        return encode(["seqs", list(self.seqs)])


def _message(data: bytes) -> list[Any]:
    try:
        value = decode(data, max_size=MAX_MESSAGE, max_items=MAX_QUERY + 8)
    except CodecError as exc:
        raise TowerProtocolError(f"undecodable frame: {exc}") from None
    if type(value) is not list or not value or type(value[0]) is not str:
        raise TowerProtocolError("a frame is an array that starts with its name")
    return value


def _locator(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != _LOCATOR:
        raise TowerProtocolError(f"a locator is {_LOCATOR} bytes")
    return value


def _seq(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise TowerProtocolError("a seq is an integer from 0 to 2**63 - 1")
    return value


def parse_from_node(data: bytes, entry_size: int) -> Put | Query:
    """A node's frame, checked for a tower whose entries are ``entry_size`` bytes.

    Raises:
        TowerProtocolError: why the frame is refused.
    """
    msg = _message(data)
    name = msg[0]
    if name == "put":
        if len(msg) != 4:
            raise TowerProtocolError("put is [put, locator, seq, entry]")
        entry = msg[3]
        if type(entry) is not bytes or len(entry) != entry_size:
            raise TowerProtocolError(f"an entry here is exactly {entry_size} bytes")
        return Put(_locator(msg[1]), _seq(msg[2]), entry)
    if name == "query":
        if len(msg) != 2 or type(msg[1]) is not list or not 0 < len(msg[1]) <= MAX_QUERY:
            raise TowerProtocolError(f"query is [query, [1 to {MAX_QUERY} locators]]")
        return Query(tuple(_locator(x) for x in msg[1]))
    raise TowerProtocolError(f"unknown message {name[:20]!r}")


def parse_from_tower(data: bytes) -> Welcome | Ack | Refused | Seqs:
    """A tower's frame, checked.

    Raises:
        TowerProtocolError: why the frame is refused.
    """
    msg = _message(data)
    name = msg[0]
    if name == "welcome" and len(msg) == 3:
        version, slot = msg[1], msg[2]
        if type(version) is not int or type(slot) is not int or not MIN_SLOT <= slot <= MAX_SLOT:
            # (a tiny slot would fit no update: the node would log every commit as too big)
            raise TowerProtocolError(
                f"welcome is [welcome, version, slot {MIN_SLOT} to {MAX_SLOT}]"
            )
        return Welcome(version, slot)
    if name == "ack" and len(msg) == 3:
        return Ack(_locator(msg[1]), _seq(msg[2]))
    if name == "refused" and len(msg) == 3:
        loc = None if msg[1] is None else _locator(msg[1])
        if type(msg[2]) is not str:
            raise TowerProtocolError("a refusal's reason is text")
        return Refused(loc, msg[2][:200])
    if name == "seqs" and len(msg) == 2 and type(msg[1]) is list and len(msg[1]) <= MAX_QUERY:
        return Seqs(tuple(None if x is None else _seq(x) for x in msg[1]))
    raise TowerProtocolError(f"not a tower message: {name[:20]!r}")
