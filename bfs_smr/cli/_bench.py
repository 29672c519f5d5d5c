"""Benchmarks: figures, each beside the bound measured in the same run. No assertions."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bfs_smr._codec import hash_bytes
from bfs_smr._crypto import Ed25519, Signer
from bfs_smr.cli._demo import Progress, _no_progress, demo_payments
from bfs_smr.runtime._local import memory_pair
from bfs_smr.runtime.store import Store, log_row

__all__ = ["bench_durable", "bench_in_process", "bench_reopen", "crypto_bound"]


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


def bench_durable(payments: int = 10_000) -> dict[str, Any]:
    """In-process payments with both parties persisting every step to SQLite (fsync)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bfs-bench-") as tmp:
        stores = (Store(f"{tmp}/alice"), Store(f"{tmp}/bob"))
        _, pair = memory_pair("payments", (payments, 0), stores=stores, keep_log=False)
        pair.open()
        start = time.perf_counter()
        for i in range(payments):
            pair.alice.chan.issue({"pay": 1})
            if i % 64 == 63:
                pair.pump()
        pair.pump()
        seconds = time.perf_counter() - start
        # Fold the WAL in first: it is reused after each checkpoint, not per-update growth.
        stores[1]._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = stores[1].path.stat().st_size + _wal_size(stores[1].path)
        for store in stores:
            store.close()
    rate = payments / seconds
    return {
        "payments": payments,
        "payments_per_second": round(rate, 1),
        "disk_bytes_per_update": round(size / payments, 1),
    }


def _wal_size(path: Any) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def bench_reopen(entries: int = 1_000_000) -> dict[str, Any]:
    """Seconds to reopen a channel whose log holds ``entries`` doubly-signed updates.

    The channel is real (opened and paid through the protocol, so its head, state and
    counters are genuine); the bulk of the log is then filled with copies of a real
    entry under new sequence numbers, since signing a million updates would only
    measure signing. Reopening must not read the log, so its cost must not depend on it.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bfs-bench-") as tmp:
        store = Store(f"{tmp}/alice")
        _, pair = memory_pair("payments", (10, 0), stores=(store, Store(f"{tmp}/bob")))
        pair.open()
        pair.alice.chan.issue({"pay": 1})
        pair.pump()
        cid = pair.params.channel_id
        # A row between checkpoints (no previous hash of its own) stands for all of them.
        sample = log_row(store.log_range(cid, 1, 1)[0])
        db = store._db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO log VALUES (?, ?, ?)",
            ((pair.alice.key, seq, sample) for seq in range(2, entries)),
        )
        db.execute("COMMIT")
        log_size = store.log_size(cid)
        store.close()
        start = time.perf_counter()
        reopened = Store(f"{tmp}/alice")
        channel = reopened.load(cid, pair.app, pair.alice.l1.format, pair.alice.signer)
        seconds = time.perf_counter() - start
        assert channel.committed == pair.alice.chan.committed
        reopened.close()
    return {"log_entries": log_size, "reopen_seconds": round(seconds, 4)}
