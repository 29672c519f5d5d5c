"""Seed corpora: genuine inputs for each fuzz target, so that coverage-guided fuzzing
starts from messages that get past the first checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bfs_smr import encode
from bfs_smr.runtime import memory_pair
from bfs_smr.runtime.tower._protocol import Ack, Put, Query, Refused, Seqs, Welcome
from bfs_smr.runtime.transport import MAGIC, VERSION


def channel_messages() -> list[bytes]:
    """Every kind of message two real parties exchange: open, pay both ways, close."""
    _, pair = memory_pair("payments", (1_000, 1_000))
    seen: list[bytes] = []
    for party in pair.parties:
        receive = party.chan.receive

        def recording(data: bytes, receive=receive) -> None:  # type: ignore[no-untyped-def]
            seen.append(bytes(data))
            receive(data)

        party.chan.receive = recording  # type: ignore[method-assign]
    pair.open()
    pair.alice.chan.issue({"pay": 5})
    pair.bob.chan.issue_batch([{"pay": 1}, {"pay": 2}])
    pair.pump()
    pair.resync()  # HELLOs both ways
    pair.bob.chan.close()
    pair.pump()
    return seen


def seeds(target: str) -> list[bytes]:
    if target == "codec":
        values = [0, -1, 2**64 - 1, "text", b"bytes", [1, [2]], {"a": 1, 10: [None, True]}]
        return [encode(v) for v in values] + channel_messages()[:4]
    if target == "message":
        return channel_messages()
    if target == "node_frame":
        _, pair = memory_pair("payments", (10, 0))
        params = pair.params
        return [
            encode(["account", params.l1, params.participants[0]]),
            encode(["open", params.to_value()]),
            encode(["open-reply", params.channel_id, None]),
            encode(["open-reply", params.channel_id, "no"]),
        ]
    if target == "handshake":
        hello = MAGIC + bytes([VERSION]) + bytes(range(32))
        return [
            bytes([0, 63]) + hello,
            bytes([1, 7]) + bytes(32),
            bytes([2, 63]) + bytes(144),
            bytes([3, 63]) + bytes([0, 0, 0, 20]) + bytes(20),
        ]
    if target == "tower_frame":
        loc = bytes(range(32))
        return [
            Put(loc, 7, bytes(80)).encode(),
            Query((loc, bytes(32))).encode(),
            Welcome(1, 2048).encode(),
            Ack(loc, 7).encode(),
            Refused(loc, "older").encode(),
            Seqs((7, None)).encode(),
        ]
    if target == "tower_entry":
        _, pair = memory_pair("payments", (10, 0))
        pair.open()
        pair.alice.chan.issue({"pay": 3})
        pair.pump()
        body = encode([pair.params.to_value(), pair.bob.log[-1].to_value()])
        return [len(body).to_bytes(4, "big") + body + bytes(16)]
    raise KeyError(target)


def write_seeds(target: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for data in seeds(target):
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
