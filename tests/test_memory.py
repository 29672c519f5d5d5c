"""Memory per idle channel (issue 16, item 3: at most 2 KB at 10,000 channels).

Sizes are what :mod:`tracemalloc` counts for channels opened after a warm-up, divided by
their number, after a full collection: Python's own allocations, not the process's
resident size (``bfs-smr bench`` measures that), so the figures do not depend on the
allocator, the machine or the moment. Each bound sits above what the code takes
(with room for the tables' growth and the event loop's moment) and well below what it
took before: both noted beside each.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import Channel, ChannelParams
from bfs_smr._lazydeque import LazyDeque
from bfs_smr.plugins import load_app
from bfs_smr.runtime import LocalPair
from bfs_smr.runtime.node import Node, NodeConfig
from bfs_smr.runtime.store._datadir import DataDir
from tests.nodeproc import NodeProc, local_l1, ok


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Trace allocations from here; the callable gives the bytes held now beyond those
    held on entry (after a full collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]

        def held() -> int:
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - start

        yield held
    finally:
        tracemalloc.stop()


def test_a_lazy_deque_acts_as_a_deque_and_holds_nothing_while_empty() -> None:
    q: LazyDeque[int] = LazyDeque()
    assert not q and len(q) == 0 and list(q) == []
    with pytest.raises(IndexError):
        q.popleft()
    with pytest.raises(IndexError):
        q[0]
    q.append(1)
    q.extend([2, 3, 4])
    assert q and len(q) == 4 and list(q) == [1, 2, 3, 4] and q[0] == 1 and q[-1] == 4
    del q[1]
    assert list(q) == [1, 3, 4] and q == LazyDeque([1, 3, 4])
    assert q.popleft() == 1
    assert q.popleft() == 3
    assert q.popleft() == 4
    assert not q and q == LazyDeque() and q._d is None  # the deque is gone with its items
    q.append(5)
    del q[0]
    assert q._d is None
    q.extend([6, 7])
    q.clear()
    assert q._d is None and list(q) == []


#: Bytes a sans-IO channel, made and not yet started, may hold: 1,000 channels are made.
#: About 800 now; 3,700 before its four empty deques held no storage.
CHANNEL_BOUND = 1_000


def test_a_channel_record_holds_no_storage_for_its_empty_queues() -> None:
    chain = MemoryL1()
    alice, bob = LocalPair.new_signers(chain.format.scheme)
    app = load_app("payments")
    count = 1_000
    all_params = [
        ChannelParams(
            l1=chain.format.domain,
            participants=(alice.public_key, bob.public_key),
            deposits=(10, 0),
            app="payments",
            app_version=app.version,
            nonce=n,
        )
        for n in range(count)
    ]
    for params in all_params:
        assert params.channel_id  # (the id is cached once taken: take it before)
    kept = []
    with traced() as held:
        for params in all_params:
            kept.append(Channel(params, app, chain.format, alice))
        per_channel = held() / count
    assert per_channel < CHANNEL_BOUND, f"{per_channel:.0f} bytes per channel"


#: Bytes a node may hold for each idle channel it opened (the whole node: its record, the
#: channel, the newest update, the store's and the L1 watcher's share). About 2,750 now
#: (2,370 over 300 channels: the tables' growth weighs more over 60); 7,400 before (four
#: empty deques, a cached encoding, one app instance and one copy of the same keys and
#: names per channel, locks and lists made before anyone waited).
NODE_BOUND = 3_200
#: Channels opened before measuring (the link, caches, tables), then measured.
WARM_UP, MEASURED = 10, 60


def test_a_node_holds_little_memory_per_idle_channel(tmp_path: Path) -> None:
    l1 = local_l1(tmp_path, 60)
    bob = NodeProc(tmp_path / "bob", l1).start()
    alice_id = DataDir(tmp_path / "alice").init()
    ok("l1", "fund", "--l1", l1, alice_id.hex(), str(WARM_UP + MEASURED))
    config = NodeConfig(listen="127.0.0.1:0", l1=l1, poll_interval=0.02)
    node = Node(tmp_path / "alice", config)

    async def open_many(count: int) -> None:
        left = [count]

        async def opener() -> None:
            while left[0] > 0:
                left[0] -= 1
                args = {"peer": bob.address, "peer_id": bob.node_id, "deposit": 1}
                await node.op_open({**args, "timeout": 60})

        await asyncio.gather(*(opener() for _ in range(4)))

    async def main() -> float:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        running = asyncio.create_task(node.run(lambda _: ready.set_result(None)))
        await ready
        try:
            await open_many(WARM_UP)
            with traced() as held:
                await open_many(MEASURED)
                await asyncio.sleep(0.2)  # (the watcher's look that follows each open)
                per_channel = held() / MEASURED
            assert len(node.chans) == WARM_UP + MEASURED
            return per_channel
        finally:
            node.stop()
            await running

    try:
        per_channel = asyncio.run(main())
    finally:
        assert bob.stop() == 0
    assert per_channel < NODE_BOUND, f"{per_channel:.0f} bytes per idle channel"
