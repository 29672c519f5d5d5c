"""Canonical encoding and hashing.

One value, one byte string: everything that is hashed or signed is encoded with canonical
CBOR (RFC 8949 §4.2: shortest integers, sorted map keys, definite lengths). Decoding is
strict, bounded and linear: :func:`decode` accepts exactly what :func:`encode` writes (no
tags, so no shared references or bignums; no floats, undefined or indefinite lengths; no
long heads; no map keys out of order or repeated) within limits on bytes, items and
depth. A peer can neither pass two encodings of one value past a hash nor make decoding
cost more than a constant per input byte (docs/nodes.md, "Untrusted input").
"""

from __future__ import annotations

import hashlib
import importlib.machinery
from typing import Any

import cbor2

from ._errors import CodecError

__all__ = [
    "HASH_SIZE",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_MESSAGE_SIZE",
    "check_plain",
    "decode",
    "encode",
    "hash_bytes",
]

#: Size in bytes of every hash in the framework (BLAKE2b-256).
HASH_SIZE = 32

#: Upper bound on one decoded protocol message or stored value, in bytes.
MAX_MESSAGE_SIZE = 1 << 20

#: Upper bound on the items (containers, their members and map keys) of one decoded or
#: checked value. A payments update of 10,000 commands holds about 60,000.
MAX_ITEMS = 1 << 17

#: Deepest nesting of arrays and maps in a command or a state (:func:`check_plain`).
MAX_DEPTH = 32

# Messages wrap commands at most seven levels deep (entries → signed update → update →
# commands → entry → command), so decode allows that much more.
_DECODE_DEPTH = MAX_DEPTH + 8


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically.

    Args:
        value: built from ``None``, ``bool``, ``int``, ``str``, ``bytes``, lists, tuples
            and dicts with such keys and values.

    Returns:
        The canonical CBOR bytes.

    Raises:
        CodecError: the value holds something that has no canonical encoding here.
    """
    if _COMPILED:
        return _encode_written(value)
    return _encode_with_cbor2(value)


def _encode_written(value: Any) -> bytes:
    """:func:`encode` by :func:`_write`, with cbor2 for what it leaves."""
    out: list[bytes] = []
    try:
        _write(value, out, 0)
    except (_Unusual, UnicodeEncodeError):
        return _encode_with_cbor2(value)
    return b"".join(out)


def _encode_with_cbor2(value: Any) -> bytes:
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value: {exc}") from None


class _Unusual(Exception):  # not an error: the value goes to cbor2 instead
    """A value :func:`_write` leaves to cbor2 (a tuple, a float, a bignum, a subclass...)."""


# One-byte heads and simple values, made once.
_BYTE = [bytes((b,)) for b in range(256)]
# Deeper than any value the protocol encodes (MAX_DEPTH and a message's wrapping): a value
# nested further, or a cyclic one, goes to cbor2, which refuses it.
_WRITE_DEPTH = 2 * _DECODE_DEPTH


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return _BYTE[major << 5 | n]
    return item_head(major, n)


def _write(value: Any, out: list[bytes], depth: int) -> None:
    """Append the canonical encoding of ``value`` to ``out``, for the plain values the
    protocol encodes (exact types: int in 64 bits, str, bytes, bool, None, list, dict keyed
    by text or integers); byte for byte what ``cbor2.dumps(value, canonical=True)`` writes,
    without its per-call setup, which costs more than a small value's encoding. Anything
    else raises :class:`_Unusual`, and :func:`encode` hands the whole value to cbor2."""
    kind = type(value)
    if kind is int:
        if 0 <= value <= _INT_MAX:
            out.append(_head(0, value))
        elif _INT_MIN <= value < 0:
            out.append(_head(1, -1 - value))
        else:
            raise _Unusual
    elif kind is str:
        data = value.encode()
        out.append(_head(3, len(data)))
        out.append(data)
    elif kind is bytes:
        out.append(_head(2, len(value)))
        out.append(value)
    elif kind is list:
        if depth >= _WRITE_DEPTH:
            raise _Unusual
        out.append(_head(4, len(value)))
        for item in value:
            _write(item, out, depth + 1)
    elif kind is dict:
        if depth >= _WRITE_DEPTH:
            raise _Unusual
        out.append(_head(5, len(value)))
        if len(value) == 1:
            for key, item in value.items():
                _write_key(key, out)
                _write(item, out, depth + 1)
            return
        # Canonical order: shorter key encodings first, then bytewise (keys are distinct).
        pairs: list[tuple[bytes, Any]] = []
        for key, item in value.items():
            encoded: list[bytes] = []
            _write_key(key, encoded)
            pairs.append((b"".join(encoded), item))
        pairs.sort(key=_key_order)
        for encoded_key, item in pairs:
            out.append(encoded_key)
            _write(item, out, depth + 1)
    elif value is None:
        out.append(b"\xf6")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    else:
        raise _Unusual


def _write_key(key: Any, out: list[bytes]) -> None:
    kind = type(key)
    if kind is not str and kind is not int:
        raise _Unusual
    _write(key, out, 0)


def _key_order(pair: tuple[bytes, Any]) -> tuple[int, bytes]:
    return len(pair[0]), pair[0]


# Whether this module runs compiled (README.md, "A compiled build"). Compiled, the encoder
# below writes a payment's small values and a 1,000-command batch 2-3 times faster than
# cbor2's C encoder (whose per-call setup dominates a small value); interpreted, it is
# slower than cbor2 on large values, so the pure-Python build keeps cbor2. Both write the
# same bytes (tests/test_codec.py compares them).
_COMPILED = __file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))

_SCALARS = frozenset((int, str, bytes, bool, type(None)))
# Scalars that need no look beyond their type (an int needs its range checked).
_PLAIN = frozenset((str, bytes, bool, type(None)))
# The integers CBOR writes with a head of its own; larger ones would need a bignum tag.
_INT_MIN, _INT_MAX = -(1 << 64), (1 << 64) - 1


def check_plain(value: Any, *, max_items: int = MAX_ITEMS) -> int:
    """Check that a value built in this process (a command from the local user or an app,
    JSON from the control endpoint) holds only plain data that :func:`encode` writes
    canonically: ``None``, ``bool``, ``int``, ``str``, ``bytes``, lists, and dicts keyed
    by text or integers. Values from :func:`decode` are plain already.

    The walk stops after ``max_items`` items or :data:`MAX_DEPTH` levels, so a value whose
    lists share members (a DAG that is exponential as a tree) is refused quickly.

    Returns:
        The items the value holds, counted as :func:`decode` counts them.

    Raises:
        CodecError: an unsupported item, nesting deeper than :data:`MAX_DEPTH`, or more
            than ``max_items`` items.
    """
    budget = [max_items]
    _check(value, 0, budget)
    return max_items - budget[0]


def _check(value: Any, depth: int, budget: list[int]) -> None:
    kind = type(value)
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise CodecError("an integer outside CBOR's 64-bit range")
        return
    if kind in _SCALARS:
        return
    if kind is not list and kind is not dict:
        raise CodecError(f"unsupported item of type {kind.__name__}")
    if depth >= MAX_DEPTH:
        raise CodecError("value nested too deeply")
    budget[0] -= (len(value) if kind is list else 2 * len(value)) + 1
    if budget[0] < 0:
        raise CodecError("too many items")
    # Scalars inside, integers too, are checked here rather than by a call each: commands
    # are mostly small maps of text to integers, and batches check thousands of them.
    if kind is list:
        for item in value:
            member = type(item)
            if member is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    raise CodecError("an integer outside CBOR's 64-bit range")
            elif member not in _PLAIN:
                _check(item, depth + 1, budget)
        return
    for key, item in value.items():
        member = type(key)
        if member is int:
            if not _INT_MIN <= key <= _INT_MAX:
                raise CodecError("an integer outside CBOR's 64-bit range")
        elif member is not str:
            raise CodecError("map keys must be text or integers")
        member = type(item)
        if member is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise CodecError("an integer outside CBOR's 64-bit range")
        elif member not in _PLAIN:
            _check(item, depth + 1, budget)


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, max_items: int = MAX_ITEMS) -> Any:
    """Decode canonical CBOR bytes produced by :func:`encode`: the one decoder for every
    byte string that comes from outside the process (peer frames, node frames, control
    requests, stored values, state bytes handed to an L1).

    It accepts exactly what :func:`encode` writes and nothing else, in one pass whose work
    is linear in ``len(data)``: shortest-form heads, definite lengths, map keys that are
    integers or text in canonical order (so no duplicates), no tags (so no shared
    references, bignums or other objects), no floats, only the simple values false, true
    and null, UTF-8 text, nesting at most :data:`MAX_DEPTH` deep and at most ``max_items``
    items in all. A value that passes is plain data, so callers need no
    :func:`check_plain` after it, and re-encoding it gives back ``data`` exactly.

    Args:
        data: the bytes.
        max_size: refuse input longer than this.
        max_items: refuse input that holds more items (each container, each of its
            members, each map key) than this.

    Returns:
        The value, with arrays as lists.

    Raises:
        CodecError: too large, malformed, trailing bytes, or anything :func:`encode` would
            not have written.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("expected bytes")
    size = len(data)
    if size > max_size:
        raise CodecError(f"{size} bytes is over the limit of {max_size}")
    try:
        value, end = _item(bytes(data), 0, 0, [max_items])
    except IndexError:
        raise CodecError("malformed CBOR: truncated") from None
    except UnicodeDecodeError:
        raise CodecError("malformed CBOR: text is not UTF-8") from None
    if end != size:
        raise CodecError("trailing bytes after the value")
    return value


# The smallest argument each head length may carry: anything below has a shorter head.
_HEAD_MIN = {24: 24, 25: 1 << 8, 26: 1 << 16, 27: 1 << 32}
_HEAD_LEN = {24: 1, 25: 2, 26: 4, 27: 8}
_SIMPLE = {0xF4: False, 0xF5: True, 0xF6: None}
# Initial bytes of the items a container's loop takes without a call: each maps to the
# value (small integers, false, true, null); short text and byte strings are sliced there.
_INLINE: dict[int, Any] = {b: b for b in range(24)}
_INLINE.update({0x20 + n: -1 - n for n in range(24)})
_INLINE.update(_SIMPLE)


def _item(data: bytes, pos: int, depth: int, budget: list[int]) -> tuple[Any, int]:
    """Decode the item at ``pos``; return it and the position after it.

    IndexError (past the end) and UnicodeDecodeError propagate: :func:`decode` reports
    them. Containers take their commonest members (small integers, simple values, short
    text and byte strings) inline, without a call each.
    """
    initial = data[pos]
    major, info = initial >> 5, initial & 31
    pos += 1
    if major == 7:
        if initial in _SIMPLE:
            return _SIMPLE[initial], pos
        raise CodecError("unsupported CBOR item: a float or a simple value other than bool/null")
    if info < 24:
        arg = info
    elif info < 28:
        end = pos + _HEAD_LEN[info]
        if end > len(data):
            raise CodecError("malformed CBOR: truncated")
        arg = int.from_bytes(data[pos:end], "big")
        if arg < _HEAD_MIN[info]:
            raise CodecError("not in canonical form: a head longer than needed")
        pos = end
    elif info == 31:
        raise CodecError("unsupported CBOR item: indefinite length")
    else:
        raise CodecError("malformed CBOR: reserved head")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:  # noqa: PLR1714 - two int compares beat a tuple lookup
        end = pos + arg
        if end > len(data):
            raise CodecError("malformed CBOR: truncated")
        if major == 2:
            return data[pos:end], end
        return data[pos:end].decode(), end
    if major == 6:
        raise CodecError("unsupported CBOR item: a tag")
    # An array or a map: every member takes at least a byte, so a length the rest of the
    # input cannot hold is refused before any work is done for it.
    size = len(data)
    members = arg if major == 4 else 2 * arg
    if members > size - pos:
        raise CodecError("malformed CBOR: truncated")
    budget[0] -= members + 1
    if budget[0] < 0:
        raise CodecError("too many items")
    if depth >= _DECODE_DEPTH:
        raise CodecError("value nested too deeply")
    depth += 1
    inline = _INLINE
    if major == 4:
        items: list[Any] = []
        append = items.append
        for _ in range(arg):
            initial = data[pos]
            if initial in inline:
                append(inline[initial])
                pos += 1
            elif 0x40 <= initial < 0x78 and initial & 31 < 24:  # short bytes or text
                end = pos + 1 + (initial & 31)
                if end > size:
                    raise CodecError("malformed CBOR: truncated")
                chunk = data[pos + 1 : end]
                append(chunk.decode() if initial >= 0x60 else chunk)
                pos = end
            else:
                value, pos = _item(data, pos, depth, budget)
                append(value)
        return items, pos
    result: dict[Any, Any] = {}
    previous = b""
    for _ in range(arg):
        start = pos
        initial = data[pos]
        if 0x60 <= initial < 0x78:  # short text, the commonest key
            pos += 1 + initial - 0x60
            if pos > size:
                raise CodecError("malformed CBOR: truncated")
            key: Any = data[start + 1 : pos].decode()
        elif initial < 0x40 or 0x60 <= initial < 0x80:
            key, pos = _item(data, start, depth, budget)
        else:
            raise CodecError("map keys must be text or integers")
        encoded = data[start:pos]
        # Canonical order (as encode writes it): shorter encodings first, then bytewise.
        # Strictly increasing, so no key appears twice.
        if len(encoded) < len(previous) or (len(encoded) == len(previous) and encoded <= previous):
            raise CodecError("not in canonical form: map keys out of order or repeated")
        previous = encoded
        initial = data[pos]
        if initial in inline:
            result[key] = inline[initial]
            pos += 1
        else:
            result[key], pos = _item(data, pos, depth, budget)
    return result, pos


def item_head(major: int, n: int) -> bytes:
    """The canonical CBOR head of an item of major type ``major`` with argument ``n``
    (the shortest form, as ``encode`` writes it): for hot paths that assemble CBOR from
    pieces without building the value."""
    if n < 24:
        return bytes((major << 5 | n,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + n.to_bytes(size, "big")
    raise CodecError("integer too large for CBOR")


def encode_signatures(signatures: tuple[bytes | None, ...]) -> bytes:
    """``encode(list(signatures))`` without the encoder: an array of byte strings or nulls."""
    out = [item_head(4, len(signatures))]
    for sig in signatures:
        out.append(b"\xf6" if sig is None else item_head(2, len(sig)) + sig)
    return b"".join(out)


def hash_bytes(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data``."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()
