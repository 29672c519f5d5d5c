"""Benchmarks: figures, each beside the bound measured in the same run. No assertions."""

from __future__ import annotations

import os
import time
from typing import Any

from .._codec import hash_bytes
from .._crypto import Ed25519, Signer
from ._demo import Progress, _no_progress, demo_payments

__all__ = ["bench_in_process", "crypto_bound"]


def crypto_bound(payments: int) -> float:
    """Payments/s if a payment cost only its cryptography.

    Each payment in the channel protocol costs two signatures (proposer, counter-signer)
    and two verifications (each party checks the other's); this loop does exactly those on
    32-byte digests with the same library, and nothing else.
    """
    scheme = Ed25519()
    alice, bob = Signer(scheme, os.urandom(32)), Signer(scheme, os.urandom(32))
    digests = [hash_bytes(i.to_bytes(8, "big")) for i in range(min(payments, 1024))]
    verify = scheme.verify
    n = len(digests)
    start = time.perf_counter()
    for i in range(payments):
        d = digests[i % n]
        s1 = alice.sign(d)
        verify(alice.public_key, d, s1)
        s2 = bob.sign(d)
        verify(bob.public_key, d, s2)
    return payments / (time.perf_counter() - start)


def bench_in_process(
    payments: int = 10_000, *, progress: Progress = _no_progress
) -> dict[str, Any]:
    """In-process payments/s (all signatures made and checked) vs the crypto bound."""
    # Bound first and last, averaged, so drift on a shared machine hits both sides alike.
    bound_a = crypto_bound(payments // 2 or 1)
    result = demo_payments(payments=payments, amount=1, progress=progress, verify=False)
    bound_b = crypto_bound(payments // 2 or 1)
    bound = (bound_a + bound_b) / 2
    rate = result["updates"] / result["seconds"]
    return {
        "payments": payments,
        "payments_per_second": round(rate, 1),
        "crypto_bound_per_second": round(bound, 1),
        "ratio": round(rate / bound, 3),
    }
