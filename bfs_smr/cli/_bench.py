"""Benchmarks: figures, each beside the bound measured in the same run. No assertions."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bfs_smr._codec import hash_bytes
from bfs_smr._crypto import Ed25519, Signer
from bfs_smr.cli._demo import Progress, _no_progress, demo_payments
from bfs_smr.runtime._local import memory_pair
from bfs_smr.runtime.store import Store, log_row

__all__ = [
    "FSYNCS_PER_PAYMENT",
    "bench_durable",
    "bench_in_process",
    "bench_reopen",
    "commit_seconds",
    "crypto_bound",
    "judge",
    "meets",
    "sequential_bound",
]

#: Durable commits one sequential payment waits on, one after the other, once the follower
#: signs first (docs/protocol.md): the follower's (before its signature leaves, I1), then
#: the sequencer's (before it reports the payment done, I3).
FSYNCS_PER_PAYMENT = 2
#: Bytes written by each probe commit: about a log row and its head (docs/durability.md).
_PROBE_ROW = 256


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


def commit_seconds(directory: Path | str, commits: int = 300) -> float:
    """Median seconds of one durable commit to a store made in ``directory``.

    The store is made and opened by :class:`Store` itself (WAL, ``synchronous=FULL``,
    1 KiB pages), and each commit is what a payment's durable step is: ``BEGIN
    IMMEDIATE``, one small row, ``COMMIT`` (SQLite appends to the WAL and fsyncs it, and
    returns once it is on the disk). The first 50 commits (the WAL growing from nothing)
    are left out; the median leaves out the rare commit that also checkpoints the WAL.
    """
    store = Store(Path(directory) / "commit-probe", keep_log=False)
    db = store._db
    row = bytes(_PROBE_ROW)
    times = []
    try:
        for i in range(commits + 50):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"probe {i}", row))
            db.execute("COMMIT")
            times.append(time.perf_counter() - start)
    finally:
        store.close()
    return statistics.median(times[50:])


def sequential_bound(fsync_seconds: float, round_trip_seconds: float, crypto: float) -> float:
    """Payments/s with one in flight if a payment cost only what it must wait on: its
    durable commits one after the other, one network round trip between the nodes, and
    its cryptography (``crypto``: the crypto bound, payments/s)."""
    return 1 / (FSYNCS_PER_PAYMENT * fsync_seconds + round_trip_seconds + 1 / crypto)


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


#: The targets (docs/performance.md): pipelined at window 16, one payment per update;
#: batched, by batch size, payments/s at least this many times the crypto bound.
PIPELINED_TARGET = {"min": {"ratio_to_crypto_bound": 0.85}, "max": {"p99_ms": 5.0}}
BATCH_TARGETS = {100: 30.0, 1_000: 100.0}


def meets(entry: Mapping[str, Any], target: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether a figure meets its target: each key under ``min`` at least, under ``max``
    at most, the value given."""
    least, most = target.get("min", {}), target.get("max", {})
    return all(entry[k] >= v for k, v in least.items()) and all(
        entry[k] <= v for k, v in most.items()
    )


def judge(result: dict[str, Any]) -> None:
    """Set each figure of ``bfs-smr bench`` beside its bound and its target, in place.

    Reads the bounds measured in the run (``crypto_bound_per_second``, ``fsync_seconds``,
    ``round_trip_seconds``), adds ``sequential_bound_per_second``, each figure's ratio to
    its bound (computed from the rounded values the JSON shows, so they can be checked
    from it), and, where the project sets one (docs/performance.md), its ``target``
    (``{"min": {key: value}, "max": {key: value}}`` over the figure's own keys) and
    whether it was ``met``.
    """
    crypto = result["crypto_bound_per_second"]
    bound = sequential_bound(result["fsync_seconds"], result["round_trip_seconds"], crypto)
    result["sequential_bound_per_second"] = round(bound, 1)
    sequential = result["sequential"]
    runs = [sequential, *result["pipelined"], *result["batched"], result["durable_in_process"]]
    for entry in runs:
        entry["ratio_to_crypto_bound"] = round(entry["payments_per_second"] / crypto, 3)
    sequential["ratio_to_sequential_bound"] = round(
        sequential["payments_per_second"] / result["sequential_bound_per_second"], 3
    )
    result["ten_thousand_payments"] = {"seconds": result["ten_thousand_payments_seconds"]}
    pipelined_16 = [p for p in result["pipelined"] if (p["window"], p["max_batch"]) == (16, 1)]
    batched = [b for b in result["batched"] if b["k"] in BATCH_TARGETS]
    targets: list[tuple[dict[str, Any], dict[str, dict[str, float]]]] = [
        (result["in_process"], {"min": {"ratio": 0.8}}),
        (sequential, {"min": {"ratio_to_sequential_bound": 0.8}}),
        *[(p, PIPELINED_TARGET) for p in pipelined_16],
        *[(b, {"min": {"ratio_to_crypto_bound": BATCH_TARGETS[b["k"]]}}) for b in batched],
        (result["ten_thousand_payments"], {"max": {"seconds": 1.3}}),
        (result["channels"], {"max": {"bytes_per_idle_channel": 2_000.0}}),
        (result["reopen"], {"max": {"reopen_seconds": 1.0}}),
    ]  # fmt: skip
    for entry, target in targets:
        entry["target"] = target
        entry["met"] = meets(entry, target)
