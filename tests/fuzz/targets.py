"""Fuzz targets: every surface of a node that reads untrusted bytes.

Each target takes one input and must either accept it or refuse it with the documented
exception; anything else (another exception, a broken round trip) is a finding. The
work each input costs is counted in Python function calls (``sys.setprofile``: Python
frames, not calls into C, which coverage instrumentation adds), a
deterministic measure: a target whose count grows faster than linearly in its input's
size (a shared-reference DAG walked as a tree, a quadratic dict) fails :func:`run_one`
however fast the machine is.

| target       | surface                                          | may raise      |
|--------------|--------------------------------------------------|----------------|
| `codec`      | `bfs_smr.decode` (every untrusted byte string)   | CodecError     |
| `message`    | `parse_message` (a channel peer's messages)      | CodecError     |
| `node_frame` | `parse_node_message` (any peer with a handshake) | CodecError     |
| `handshake`  | `SecureSession`, both ends, handshake and frames | TransportError |
| `tower_frame`| a tower's and a node's parsers of each other's frames | TowerProtocolError |
| `tower_entry`| an entry's plaintext, as a tower reads it after a close | ValueError |
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from bfs_smr import CodecError, Ed25519, Signer, decode, encode
from bfs_smr._messages import parse_message
from bfs_smr.runtime.node._nodemsg import parse_node_message
from bfs_smr.runtime.tower._protocol import TowerProtocolError, parse_from_node, parse_from_tower
from bfs_smr.runtime.tower._seal import read_plaintext
from bfs_smr.runtime.transport import MAGIC, VERSION, SecureSession, TransportError

__all__ = ["TARGETS", "WorkTooLarge", "best_us_per_kib", "calls_allowed", "run_one"]


class WorkTooLarge(AssertionError):
    """An input cost more work than linear in its size."""


def calls_allowed(size: int) -> int:
    """The most Python calls an input of ``size`` bytes may cost any target: a constant
    for setting up (the handshake's sessions and crypto) plus a constant per byte."""
    return 2_000 + 4 * size


def codec(data: bytes) -> None:
    try:
        value = decode(data)
    except CodecError:
        return
    # What the decoder takes is exactly what the encoder writes: one value, one encoding.
    if encode(value) != data:
        raise AssertionError("decode accepted bytes that are not the value's encoding")


def message(data: bytes) -> None:
    try:
        parse_message(data)
    except CodecError:
        return


def node_frame(data: bytes) -> None:
    try:
        parse_node_message(data)
    except CodecError:
        return


_ALICE = Signer(Ed25519(), bytes(range(32)))
_BOB = Signer(Ed25519(), bytes(range(1, 33)))


def handshake(data: bytes) -> None:
    """The first byte picks what the rest is fed to, in pieces whose sizes come from the
    second: a responder (after a genuine hello, or raw), an initiator after its hello, or
    an established session (frames)."""
    if len(data) < 2:
        return
    mode, step, rest = data[0] % 4, data[1] % 64 + 1, data[2:]
    if mode == 0:
        session = SecureSession.responder(_BOB)
    elif mode == 1:
        session = SecureSession.responder(_BOB)
        rest = MAGIC + bytes([VERSION]) + rest
    elif mode == 2:
        session = SecureSession.initiator(_ALICE, _BOB.public_key)
        session.data_to_send()
    else:
        session = _established()
    try:
        for i in range(0, len(rest), step):
            session.receive_data(rest[i : i + step])
            session.data_to_send()
        session.receive_eof()
    except TransportError:
        return


def _established() -> SecureSession:
    a = SecureSession.initiator(_ALICE, _BOB.public_key)
    b = SecureSession.responder(_BOB)
    for _ in range(3):
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
    assert b.established
    return b


def tower_frame(data: bytes) -> None:
    for parse in (lambda d: parse_from_node(d, TOWER_ENTRY), parse_from_tower):
        with contextlib.suppress(TowerProtocolError):
            parse(data)


#: The entry size the tower_frame target's tower takes (a small slot, so that seeds are
#: small): any other size is refused before anything is decoded.
TOWER_ENTRY = 80


def tower_entry(data: bytes) -> None:
    try:
        read_plaintext(data, 1)
    except ValueError:
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": codec,
    "message": message,
    "node_frame": node_frame,
    "handshake": handshake,
    "tower_frame": tower_frame,
    "tower_entry": tower_entry,
}


def run_one(target: Callable[[bytes], None], data: bytes) -> int:
    """Run ``target`` on ``data`` counting its Python calls; return the count.

    Raises:
        WorkTooLarge: more calls than :func:`calls_allowed` for the input's size.
        Exception: whatever the target raised that it may not.
    """
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":  # Python frames only: atheris's coverage hooks are C calls
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        target(data)
    finally:
        sys.setprofile(previous)
    if calls > calls_allowed(len(data)):
        raise WorkTooLarge(f"{calls} calls for {len(data)} bytes")
    return calls


def best_us_per_kib(target: Callable[[bytes], None], data: bytes, runs: int) -> float:
    """The best of ``runs`` wall times of ``target`` on ``data``, in µs per KiB of input:
    the input's cost, not the machine's other load."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        target(data)
        best = min(best, time.perf_counter() - start)
    return best * 1e6 / (len(data) / 1024)
