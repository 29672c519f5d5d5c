"""Wire constants and the cryptographic primitives the handshake is built from.

Every function here is pure: bytes in, bytes out. A failure to authenticate or a bad
Diffie-Hellman input raises :class:`TransportError`; nothing here logs or keeps a key.
The names are private to the package (``tests/byzantine_peer.py`` forges handshakes with
them through ``bfs_smr.runtime.transport``).
"""

from __future__ import annotations

import hashlib

import nacl.bindings as _sodium
import nacl.exceptions

from bfs_smr._crypto import Ed25519, Signer
from bfs_smr._errors import LocalError
from bfs_smr.runtime._logging import short_id

from ._errors import TransportError

MAGIC = b"bfssmr-t"
VERSION = 1

_ID = 32  # an Ed25519 public key: the node id
_SIG = 64
_KEY = 32  # an X25519 public key, and every derived key
_TAG = 16  # ChaCha20-Poly1305 tag
_HEADER: int = _sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES: int = _sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_MAX_WIRE = 0xFFFF_FFFF  # what a 4-byte length can declare
_ZERO_NONCE = bytes(12)
_ED25519 = Ed25519()

# Personalisation labels (BLAKE2b takes up to 16 bytes).
_P_TH1, _P_TH2, _P_TH3 = b"bfs-smr/t/th1", b"bfs-smr/t/th2", b"bfs-smr/t/th3"
_P_SIG_R, _P_SIG_I = b"bfs-smr/t/sig-r", b"bfs-smr/t/sig-i"
_P_HS2, _P_HS3, _P_HS4 = b"bfs-smr/t/k-hs2", b"bfs-smr/t/k-hs3", b"bfs-smr/t/k-hs4"
_P_I2R, _P_R2I = b"bfs-smr/t/k-i2r", b"bfs-smr/t/k-r2i"


def _hash(label: bytes, *parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=label)
    for part in parts:
        h.update(part)
    return h.digest()


def _kdf(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hashlib.blake2b(transcript, digest_size=32, key=secret, person=label).digest()


def _seal(key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    sealed: bytes = _sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, ad, _ZERO_NONCE, key
    )
    return sealed


def _open(key: bytes, ad: bytes, sealed: bytes, what: str) -> bytes:
    try:
        plain: bytes = _sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
            sealed, ad, _ZERO_NONCE, key
        )
    except nacl.exceptions.CryptoError:
        raise TransportError(
            f"handshake {what} failed authentication (tampered, replayed or from another session)"
        ) from None
    return plain


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        shared: bytes = _sodium.crypto_scalarmult(secret, public)
    except nacl.exceptions.CryptoError:  # libsodium refuses an all-zero result
        raise TransportError("bad ephemeral key (a low-order point)") from None
    return shared


def _short(node_id: bytes) -> str:
    """A node id in a reason: as log lines show it (:func:`short_id`), marked as cut."""
    return short_id(node_id) + "…"


def _check_identity(identity: Signer) -> None:
    if not isinstance(identity, Signer) or not isinstance(identity.scheme, Ed25519):
        raise LocalError("a transport identity is a Signer with the Ed25519 scheme")
