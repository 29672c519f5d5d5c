"""secp256k1 signatures as the EVM checks them (``ecrecover``)."""

from __future__ import annotations

import coincurve
from eth_utils.crypto import keccak

from bfs_smr import SignatureScheme

__all__ = ["SECP256K1_N", "Secp256k1", "address_of"]

#: The order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def address_of(public_key: coincurve.PublicKey) -> bytes:
    """The 20-byte Ethereum address of a public key."""
    return keccak(public_key.format(compressed=False)[1:])[12:]


class Secp256k1(SignatureScheme):
    """ECDSA over secp256k1 on a 32-byte digest, as ``ecrecover`` verifies it.

    A party's public key (its identity in :class:`bfs_smr.ChannelParams`) is its 20-byte
    Ethereum address. Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v`` in {27, 28} and a
    low ``s`` (at most n/2), the only form the adjudicator accepts.
    """

    name = "secp256k1"
    public_key_size = 20
    signature_size = 65

    def public_key(self, secret: bytes) -> bytes:
        if len(secret) != 32:
            raise ValueError("a secp256k1 secret is 32 bytes")
        return address_of(coincurve.PrivateKey(secret).public_key)

    def sign(self, secret: bytes, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("secp256k1 signs a 32-byte digest")
        rsv = coincurve.PrivateKey(secret).sign_recoverable(digest, hasher=None)
        # libsecp256k1 always produces low s; the recovery id becomes Ethereum's v.
        return rsv[:64] + bytes([27 + rsv[64]])

    def verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        recovered = recover(digest, signature)
        return recovered is not None and len(public_key) == 20 and recovered == public_key


def recover(digest: bytes, signature: bytes) -> bytes | None:
    """The address that signed ``digest``, or ``None`` where the adjudicator would refuse."""
    if len(digest) != 32 or len(signature) != 65:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_N // 2 and v in (27, 28)):
        return None
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except (ValueError, TypeError):
        return None
    return address_of(key)
