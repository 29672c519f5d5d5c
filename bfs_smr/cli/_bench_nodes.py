"""Benchmarks with real node processes: two ``bfs-smr node`` processes on loopback, each
with its durable store, over a shared local L1 file in a temporary directory.

- :func:`bench_sequential`: one payment in flight at a time, measured inside the paying
  node from ``issue`` to "doubly signed and durable" (the control endpoint's own round
  trip is not counted: it is the CLI's cost, not the protocol's).
- :func:`bench_idle_channels`: the paying node's resident memory before and after opening
  many channels, per idle channel.
- :func:`round_trip_seconds`: a round trip on loopback between two processes, each on
  an asyncio event loop as a node is, for the sequential bound.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bfs_smr.adapters.local import LocalL1
from bfs_smr.cli._bench import commit_seconds
from bfs_smr.cli._demo import Progress, _no_progress
from bfs_smr.runtime.node._control import call
from bfs_smr.runtime.store._datadir import DataDir

__all__ = [
    "bench_idle_channels",
    "bench_throughput",
    "echo_server",
    "node_pair",
    "round_trip_seconds",
]

#: Bytes sent each way per probe round trip: about a proposal's frame.
_FRAME = 256


class _NodeProcess:
    def __init__(self, data_dir: Path, l1: str) -> None:
        self.dir = data_dir
        self.node_id = DataDir(data_dir).init().hex()
        log = open(data_dir / "node.log", "w")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "bfs_smr.cli", "node", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", "--l1", l1, "--json", "--log-json"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )  # fmt: skip
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a bench node did not start: {(data_dir / 'node.log').read_text()}")
        self.address = json.loads(line)["listen"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def node_pair(fund: int) -> Iterator[tuple[_NodeProcess, _NodeProcess]]:
    """Two running nodes on a fresh local L1 (window 60 s); the first is funded."""
    with tempfile.TemporaryDirectory(prefix="bfs-smr-bench-") as tmp:
        base = Path(tmp)
        l1 = f"local:{base / 'l1.sqlite3'}"
        chain = LocalL1.create(base / "l1.sqlite3", window=60)
        nodes: list[_NodeProcess] = []
        try:
            for name in ("alice", "bob"):
                nodes.append(_NodeProcess(base / name, l1))
            chain.mint(bytes.fromhex(nodes[0].node_id), fund)
            chain.close()
            yield nodes[0], nodes[1]
        finally:
            for node in nodes:
                node.stop()


class _Echo(asyncio.Protocol):
    """Sends back every byte it receives; ``closed`` is set when the peer goes."""

    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _serve_echo() -> None:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: _Echo(closed), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    try:
        await asyncio.wait_for(closed, 600)
    finally:
        server.close()


def echo_server() -> None:
    """The far end of :func:`round_trip_seconds`, run in a child process: print the
    loopback port, echo one connection until it closes."""
    asyncio.run(_serve_echo())


class _Pinger(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.pending = 0

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _ping(port: int, trips: int) -> list[float]:
    loop = asyncio.get_running_loop()
    transport, pinger = await loop.create_connection(_Pinger, "127.0.0.1", port)
    frame = bytes(_FRAME)
    times = []
    try:
        for _ in range(trips):
            pinger.waiter = loop.create_future()
            pinger.pending = _FRAME
            start = time.perf_counter()
            transport.write(frame)
            await asyncio.wait_for(pinger.waiter, 30)
            times.append(time.perf_counter() - start)
    finally:
        transport.close()
    return times


def round_trip_seconds(trips: int = 1_000) -> float:
    """Median seconds of a round trip between this process and a child on loopback TCP.

    Both ends run an asyncio event loop with the protocol-style transport a node's links
    use (``TCP_NODELAY``, as asyncio sets it), and a 256-byte frame goes each way: what a
    payment waits on between the nodes besides their cryptography and their commits (the
    transport's encryption is a few microseconds and is not in it). The first 50 trips
    warm both ends up and are left out.
    """
    code = "from bfs_smr.cli._bench_nodes import echo_server; echo_server()"
    child = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the round-trip probe's echo process did not start")
        times = asyncio.run(_ping(int(line), trips + 50))[50:]
    finally:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()
    return statistics.median(times)


def _open(alice: _NodeProcess, bob: _NodeProcess, deposit: int) -> str:
    args = {"peer": bob.address, "peer_id": bob.node_id, "deposit": deposit, "timeout": 60}
    channel: str = call(alice.dir, "open", args, timeout=70)["channel"]
    return channel


#: Pipelining windows and batch sizes the benchmark runs.
WINDOWS = (16, 64)
BATCH_SIZES = (10, 100, 1_000)
#: The window batched runs use (updates in flight, each holding k payments).
BATCH_WINDOW = 16
#: Automatic batching in the pipelined runs: off (one payment per update), and what a
#: node does under load by default.
AUTO_BATCH = (1, 64)


def _run(
    alice: _NodeProcess, channel: str, count: int, window: int, batch: int, *, auto: int = 1
) -> dict[str, Any]:
    args = {
        "channel": channel,
        "count": count,
        "window": window,
        "batch": batch,
        "max_batch": auto,
    }
    r = call(alice.dir, "bench", args, timeout=900)
    return {
        "payments": r["payments"],
        "payments_per_second": round(r["payments_per_second"], 1),
        "p50_ms": round(r["p50_ms"], 3),
        "p99_ms": round(r["p99_ms"], 3),
        "window": r["window"],
        "k": r["k"],
        "max_batch": r["max_batch"],
        "outstanding": r["outstanding"],
        "seconds": round(r["seconds"], 3),
    }


def batched_count(payments: int, k: int) -> int:
    """Payments in the batched run of size ``k``: 400 batches at least, so that even the
    fastest run lasts long enough to time."""
    return max(payments, k * 400)


def bench_throughput(payments: int, progress: Progress = _no_progress) -> dict[str, Any]:
    """Two node processes, one channel: sequential, pipelined and batched payments.

    Every figure is measured inside the paying node from issue to "doubly signed and
    durable" (the path ``channel pay`` takes), so the control endpoint's own round trip
    is not counted. Returns ``sequential``, ``pipelined`` (each window with automatic
    batching off, then on), ``batched``, ``ten_thousand_payments_seconds`` (10,000
    payments, window 64, one per update), ``disk_bytes_per_update``, and the bounds the
    sequential figure is measured against, each measured before and after the runs and
    averaged: ``fsync_seconds`` (one durable commit to a store in the directory the nodes'
    stores are in: :func:`~bfs_smr.cli._bench.commit_seconds`) and ``round_trip_seconds``
    (:func:`round_trip_seconds`).
    """
    warm_up = 500
    runs: list[tuple[str, int, int, int, int]] = [("sequential", payments, 1, 1, 1)]
    runs += [("pipelined", payments, w, 1, 1) for w in WINDOWS]
    runs += [("ten_thousand", 10_000, 64, 1, 1)]
    runs += [("pipelined", payments, w, 1, AUTO_BATCH[1]) for w in WINDOWS]
    runs += [("batched", batched_count(payments, k), BATCH_WINDOW, k, 1) for k in BATCH_SIZES]
    total = warm_up + sum(count for _, count, _, _, _ in runs)
    result: dict[str, Any] = {"pipelined": [], "batched": []}
    with node_pair(total) as (alice, bob):
        channel = _open(alice, bob, total)
        _run(alice, channel, warm_up, 16, 1)
        disk = alice.dir.parent  # where both nodes' stores are
        fsyncs, trips = [commit_seconds(disk)], [round_trip_seconds()]
        for done, (name, count, window, k, auto) in enumerate(runs):
            figures = _run(alice, channel, count, window, k, auto=auto)
            if name == "sequential":
                result["sequential"] = figures
            elif name == "ten_thousand":
                result["ten_thousand_payments_seconds"] = figures["seconds"]
                # Every update so far holds one payment: the disk an unbatched update costs.
                result["disk_bytes_per_update"] = _disk_per_update(alice, bob)
            else:
                result[name].append(figures)
            progress(done + 1, len(runs))
        fsyncs.append(commit_seconds(disk))
        trips.append(round_trip_seconds())
    result["fsync_seconds"] = round(statistics.fmean(fsyncs), 7)
    result["round_trip_seconds"] = round(statistics.fmean(trips), 7)
    return result


def _disk_per_update(*nodes: _NodeProcess) -> dict[str, float]:
    """Each store's file size per doubly-signed update in it, after a checkpoint folds the
    WAL in (the WAL is reused, so it is not per-update growth)."""
    sizes = {}
    for name, node in zip(("sequencer", "follower"), nodes, strict=True):
        path = node.dir / "channels.sqlite3"
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            updates = db.execute("SELECT count(*) FROM log").fetchone()[0]
        finally:
            db.close()
        sizes[name] = round(path.stat().st_size / max(updates, 1), 1)
    return sizes


def bench_idle_channels(channels: int, progress: Progress = _no_progress) -> dict[str, Any]:
    """Open ``channels`` channels from one node to another; report the opener's memory."""
    with node_pair(channels) as (alice, bob):
        before = call(alice.dir, "status")["rss_bytes"]
        start = time.perf_counter()
        done = 0
        with ThreadPoolExecutor(4) as pool:
            for _ in pool.map(lambda _: _open(alice, bob, 1), range(channels)):
                done += 1
                progress(done, channels)
        seconds = time.perf_counter() - start
        status = call(alice.dir, "status")
        peer_status = call(bob.dir, "status")
    return {
        "channels": status["channels"],
        "peer_channels": peer_status["channels"],
        "open_seconds": seconds,
        "rss_before_bytes": before,
        "rss_after_bytes": status["rss_bytes"],
        "bytes_per_idle_channel": (status["rss_bytes"] - before) / channels,
    }
