"""What a node gives a watchtower for one channel, and how the tower reads it after a close.

Every channel a node opens commits to a *watch secret* ``w``
(:attr:`bfs_smr.ChannelParams.watch` = the L1 format's ``watch_commitment(w)``). Both
parties derive ``w`` from their node keys, so it is never sent and never stored::

    w = BLAKE2b-256(key = X25519(node key, peer's node key),
                    "bfs-smr/watch-secret/v1" ‖ id of the parameters without ``watch``)

An L1 refuses a unilateral close that does not reveal ``w``, and publishes it in the
close's event. Until then nothing on L1 or at the tower depends on it, so the tower
holds, per channel and per party::

    locator = BLAKE2b-256("bfs-smr/tower/locator/v1" ‖ w)
    entry   = nonce(24) ‖ XChaCha20-Poly1305(key = BLAKE2b-256("bfs-smr/tower/key/v1" ‖ w),
                  ad = "bfs-smr/tower/entry/v1" ‖ locator ‖ seq(8, big-endian),
                  plaintext = length(4) ‖ CBOR [params, newest doubly-signed update] ‖ zeros)

The plaintext is padded to the tower's slot size, so an entry has the same size after the
first update and after the millionth, whatever the update holds. The tower sees the
locator (a random-looking name), the seq (in clear, so that it can refuse an older one)
and when the node updates the entry; it reads the rest only once ``w`` is on L1.
docs/watchtower.md says what it learns and when.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

import nacl.bindings as _sodium
import nacl.exceptions

from bfs_smr._codec import decode, encode, hash_bytes
from bfs_smr._crypto import Signer
from bfs_smr._errors import CodecError, LocalError
from bfs_smr._l1 import L1Format
from bfs_smr._update import ChannelParams, SignedUpdate

__all__ = [
    "ENTRY_OVERHEAD",
    "SLOT_SIZE",
    "entry_size",
    "locator",
    "read_plaintext",
    "seal",
    "unseal",
    "watch_commitment_for",
    "watch_secret",
]

#: The plaintext an entry holds, unless a tower says otherwise: a channel's parameters and
#: an update of about 50 payments fit, and two entries' rows fit a 4 KiB page of the
#: tower's store (2.2 KB a channel on disk; a slot of 1,920 bytes would take a page each).
SLOT_SIZE = 1888
_NONCE = 24
_TAG = 16
_LENGTH = 4
#: What sealing adds to a slot: the nonce and the authentication tag.
ENTRY_OVERHEAD = _NONCE + _TAG


def entry_size(slot: int) -> int:
    """The size of every entry a tower with ``slot`` bytes of plaintext holds."""
    return slot + ENTRY_OVERHEAD


def watch_secret(identity: Signer, peer: bytes, params: ChannelParams) -> bytes:
    """The channel's watch secret, as either party derives it from its node key.

    Args:
        identity: this node's Ed25519 identity.
        peer: the other party's node id.
        params: the channel's parameters (``watch`` is ignored: it commits to the result).

    Raises:
        LocalError: ``peer`` is not a usable node id.
    """
    shared = identity.key_agreement(peer)
    base = dataclasses.replace(params, watch=b"").channel_id
    return hashlib.blake2b(b"bfs-smr/watch-secret/v1" + base, key=shared, digest_size=32).digest()


def watch_commitment_for(
    fmt: L1Format, identity: Signer, peer: bytes, params: ChannelParams
) -> bytes:
    """What ``params.watch`` must be for a channel between this node and ``peer``."""
    return fmt.watch_commitment(watch_secret(identity, peer, params))


def locator(secret: bytes) -> bytes:
    """The name a tower files a channel's entries under."""
    return hash_bytes(b"bfs-smr/tower/locator/v1" + secret)


def _key(secret: bytes) -> bytes:
    return hash_bytes(b"bfs-smr/tower/key/v1" + secret)


def _ad(loc: bytes, seq: int) -> bytes:
    return b"bfs-smr/tower/entry/v1" + loc + seq.to_bytes(8, "big")


def seal(
    secret: bytes, params: ChannelParams, update: SignedUpdate, *, slot: int = SLOT_SIZE
) -> bytes | None:
    """The entry for ``update`` (doubly signed), or ``None`` if it does not fit ``slot``.

    Raises:
        LocalError: the update is not of this channel.
    """
    if update.update.channel_id != params.channel_id:
        raise LocalError("the update is not of this channel")
    body = encode([params.to_value(), update.to_value()])
    if _LENGTH + len(body) > slot:
        return None
    plain = len(body).to_bytes(_LENGTH, "big") + body
    plain += bytes(slot - len(plain))
    nonce = secrets.token_bytes(_NONCE)
    sealed = _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _ad(locator(secret), update.seq), nonce, _key(secret)
    )
    return nonce + sealed


def unseal(secret: bytes, seq: int, entry: bytes) -> tuple[ChannelParams, SignedUpdate]:
    """Read an entry filed under ``secret``'s locator with ``seq``.

    Only the shapes are checked here: the caller checks that the parameters commit to
    ``secret`` and that the update is doubly signed.

    Raises:
        ValueError: it does not decrypt under ``secret`` and ``seq``, or what it holds is
            not a channel's parameters and a signed update of that seq.
    """
    if len(entry) <= ENTRY_OVERHEAD:
        raise ValueError("an entry is longer than its nonce and tag")
    nonce, sealed = entry[:_NONCE], entry[_NONCE:]
    try:
        plain = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, _ad(locator(secret), seq), nonce, _key(secret)
        )
    except nacl.exceptions.CryptoError:
        raise ValueError("the entry does not decrypt with this channel's secret") from None
    return read_plaintext(plain, seq)


def read_plaintext(plain: bytes, seq: int) -> tuple[ChannelParams, SignedUpdate]:
    """An entry's plaintext (as decrypted, padding included) filed as ``seq``: the
    channel's parameters and its update, shapes checked. A party wrote it, but the tower
    reads every entry under a revealed locator, and anyone may file one there: it is
    untrusted input, read through the hardened decoder.

    Raises:
        ValueError: why it is refused.
    """
    if len(plain) < _LENGTH:
        raise ValueError("an entry's plaintext starts with its length")
    size = int.from_bytes(plain[:_LENGTH], "big")
    if _LENGTH + size > len(plain) or any(plain[_LENGTH + size :]):
        raise ValueError("the entry's padding is malformed")
    try:
        value = decode(plain[_LENGTH : _LENGTH + size])
        if type(value) is not list or len(value) != 2:
            raise ValueError("an entry holds [params, update]")
        params = ChannelParams.from_value(value[0])
        update = SignedUpdate.from_value(value[1])
        ours = update.update.channel_id == params.channel_id  # (hashes every field)
    except (CodecError, LocalError, TypeError, LookupError) as exc:
        raise ValueError(f"the entry holds no channel update: {exc}") from None
    if update.seq != seq or not ours:
        raise ValueError("the entry's update is not the one it was filed as")
    return params, update
