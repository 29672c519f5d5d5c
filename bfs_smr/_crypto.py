"""Signature schemes.

The L1 decides how an update is digested and which scheme signs it (the EVM wants
secp256k1 over keccak, the embedded L1 uses Ed25519), so the core signs exactly once per
update, in the format the L1 will check. A scheme is a small stateless object; a
:class:`Signer` pairs a scheme with one private key and never reveals it in ``repr``.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
from typing import ClassVar

import nacl.bindings
import nacl.exceptions

from ._errors import LocalError

__all__ = ["Ed25519", "SignatureScheme", "Signer"]


class SignatureScheme(abc.ABC):
    """How signatures are made and checked.

    Implementations set :attr:`name`, :attr:`public_key_size`, :attr:`signature_size`
    and implement the three methods. They must be deterministic in what they accept:
    :meth:`verify` returns ``True`` for exactly the signatures the L1 would accept.
    """

    name: ClassVar[str]
    public_key_size: ClassVar[int]
    signature_size: ClassVar[int]

    @abc.abstractmethod
    def public_key(self, secret: bytes) -> bytes:
        """Return the public key (the party's identity on this L1) for ``secret``."""

    @abc.abstractmethod
    def sign(self, secret: bytes, digest: bytes) -> bytes:
        """Sign ``digest`` with ``secret``; returns ``signature_size`` bytes."""

    @abc.abstractmethod
    def verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is valid for ``digest`` under ``public_key``.

        Never raises for malformed input: a wrong-sized key or signature is just invalid.
        """


class Ed25519(SignatureScheme):
    """Ed25519 (RFC 8032) via libsodium; the default scheme and the embedded L1's."""

    name = "ed25519"
    public_key_size = 32
    signature_size = 64

    def public_key(self, secret: bytes) -> bytes:
        if len(secret) != 32:
            raise ValueError("an Ed25519 secret (seed) is 32 bytes")
        public, _ = nacl.bindings.crypto_sign_seed_keypair(secret)
        return bytes(public)

    def sign(self, secret: bytes, digest: bytes) -> bytes:
        # libsodium wants the 64-byte expanded key; derive it from the seed. Callers on a
        # hot path go through Signer, which caches the expanded key.
        _, expanded = nacl.bindings.crypto_sign_seed_keypair(secret)
        return bytes(nacl.bindings.crypto_sign(digest, expanded)[:64])

    def verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        if len(public_key) != 32 or len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + digest, public_key)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True


class Signer:
    """One party's private key under one scheme.

    Args:
        scheme: the signature scheme.
        secret: the private key (for Ed25519, a 32-byte seed).
    """

    __slots__ = ("_expanded", "_secret", "_tag_key", "public_key", "scheme")

    def __init__(self, scheme: SignatureScheme, secret: bytes) -> None:
        self.scheme = scheme
        self._secret = bytes(secret)
        self.public_key = scheme.public_key(self._secret)
        self._expanded: bytes | None = None
        # A key only this party holds, for tags on what it proposes (see tag()); derived,
        # so nothing more is stored and a restarted party has the same one.
        self._tag_key = hashlib.blake2b(
            self._secret, digest_size=32, person=b"bfs-smr/tag/v1"
        ).digest()
        if isinstance(scheme, Ed25519):
            _, self._expanded = nacl.bindings.crypto_sign_seed_keypair(self._secret)

    def sign(self, digest: bytes) -> bytes:
        """Sign ``digest``."""
        if self._expanded is not None:
            return bytes(nacl.bindings.crypto_sign(digest, self._expanded)[:64])
        return self.scheme.sign(self._secret, digest)

    def tag(self, digest: bytes) -> bytes:
        """A 32-byte tag on ``digest`` that only this key could have made: keyed BLAKE2b
        under a key derived from the secret. Not a signature (it convinces nobody else);
        the sequencer puts one on each proposal so that after a crash it can recognise
        the proposals it made (docs/protocol.md, "Resynchronisation")."""
        return hashlib.blake2b(digest, digest_size=32, key=self._tag_key).digest()

    def check_tag(self, digest: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is this key's :meth:`tag` on ``digest`` (in constant time)."""
        return hmac.compare_digest(self.tag(digest), tag)

    def key_agreement(self, peer_public_key: bytes) -> bytes:
        """A 32-byte secret this Ed25519 key shares with the holder of ``peer_public_key``:
        X25519 of both keys mapped to Curve25519 (RFC 7748; libsodium's map). Both sides
        compute the same value; nobody else can.

        Raises:
            LocalError: this is not an Ed25519 key, or the peer's key is not a usable
                Ed25519 public key (malformed, or of small order).
        """
        if self._expanded is None:
            raise LocalError("key agreement needs an Ed25519 key")
        try:
            mine = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self._expanded)
            theirs = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(peer_public_key))
            return bytes(nacl.bindings.crypto_scalarmult(mine, theirs))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise LocalError("the peer's key is not a usable Ed25519 public key") from None

    def __repr__(self) -> str:  # never the secret
        return f"Signer({self.scheme.name}, public_key={self.public_key.hex()[:16]}…)"
