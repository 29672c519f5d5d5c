"""Canonical encoding and hashing.

One value, one byte string: everything that is hashed or signed is encoded with canonical
CBOR (RFC 8949 §4.2: shortest integers, sorted map keys, definite lengths). Decoding is
strict and bounded: input larger than the caller's limit, trailing bytes, or CBOR features
bfs-smr never emits (tags, floats, undefined, indefinite lengths) are refused, so a peer
cannot smuggle two encodings of one value past a hash.
"""

from __future__ import annotations

import hashlib
from io import BytesIO  # in-memory only: lets the decoder report where it stopped
from typing import Any

import cbor2

from ._errors import CodecError

__all__ = ["HASH_SIZE", "MAX_MESSAGE_SIZE", "check_plain", "decode", "encode", "hash_bytes"]

#: Size in bytes of every hash in the framework (BLAKE2b-256).
HASH_SIZE = 32

#: Upper bound on one decoded protocol message or stored value, in bytes.
MAX_MESSAGE_SIZE = 1 << 20


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
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value: {exc}") from None


_SCALARS = frozenset((int, str, bytes, bool, type(None)))
_KEYS = frozenset((str, int))


def check_plain(value: Any, depth: int = 0) -> None:
    """Check that a decoded value holds only plain CBOR data.

    cbor2 turns some tags into rich objects (datetimes, decimals …) and floats decode
    too; bfs-smr emits none of these, so a value that holds one came from a hostile peer.

    Raises:
        CodecError: an unsupported item, or nesting deeper than 32.
    """
    # The depth bound stops a hostile peer from nesting its way into a RecursionError.
    if depth > 32:
        raise CodecError("value nested too deeply")
    kind = type(value)
    if kind in _SCALARS:
        return
    # Scalars inside are checked here rather than by a call each: commands are mostly
    # small maps of scalars, and batches check thousands of them.
    if kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                check_plain(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) not in _KEYS:
                raise CodecError("map keys must be text or integers")
            if type(item) not in _SCALARS:
                check_plain(item, depth + 1)
        return
    raise CodecError(f"unsupported CBOR item of type {kind.__name__}")


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, canonical: bool = True) -> Any:
    """Decode canonical CBOR bytes produced by :func:`encode`.

    Args:
        data: the bytes.
        max_size: refuse input longer than this.
        canonical: require canonical form and plain items throughout. Protocol message
            parsing turns this off for speed: it never hashes received bytes (it
            re-encodes the fields it has checked) and calls :func:`check_plain` on the
            free-form parts itself. Trailing bytes are refused either way.

    Returns:
        The value, with arrays as lists.

    Raises:
        CodecError: too large, malformed, trailing bytes, a non-canonical encoding, or an
            item type bfs-smr never emits.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("expected bytes")
    if len(data) > max_size:
        raise CodecError(f"{len(data)} bytes is over the limit of {max_size}")
    data = bytes(data)
    stream = BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many types on hostile input
        raise CodecError(f"malformed CBOR: {type(exc).__name__}") from None
    if stream.tell() != len(data):
        raise CodecError("trailing bytes after the value")
    if not canonical:
        return value
    check_plain(value)
    # Canonical form is what gets hashed, so accept only input that is already canonical:
    # re-encoding must reproduce it exactly.
    if cbor2.dumps(value, canonical=True) != data:
        raise CodecError("not in canonical form")
    return value


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
