import os

import pytest

from bfs_smr import Ed25519, Signer


def test_sign_verify_and_tamper():
    scheme = Ed25519()
    signer = Signer(scheme, os.urandom(32))
    digest = os.urandom(32)
    sig = signer.sign(digest)
    assert len(sig) == scheme.signature_size
    assert scheme.verify(signer.public_key, digest, sig)
    assert scheme.sign(signer._secret, digest) == sig  # Ed25519 is deterministic
    assert not scheme.verify(signer.public_key, digest[:-1] + bytes([digest[-1] ^ 1]), sig)
    assert not scheme.verify(signer.public_key, digest, sig[:-1] + bytes([sig[-1] ^ 1]))
    other = Signer(scheme, os.urandom(32))
    assert not scheme.verify(other.public_key, digest, sig)


@pytest.mark.parametrize("key_len, sig_len", [(31, 64), (32, 63), (0, 0), (33, 64)])
def test_verify_never_raises_on_malformed_input(key_len, sig_len):
    assert Ed25519().verify(b"k" * key_len, b"d" * 32, b"s" * sig_len) is False


def test_repr_does_not_leak_the_secret():
    secret = os.urandom(32)
    signer = Signer(Ed25519(), secret)
    assert secret.hex() not in repr(signer)
    assert secret.hex()[:16] not in repr(signer)


def test_secret_must_be_32_bytes():
    with pytest.raises(ValueError):
        Signer(Ed25519(), b"short")
