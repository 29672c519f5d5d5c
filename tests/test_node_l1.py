"""What a node does on L1 when the L1 fails it, or its noted L1 status is stale.

Two real nodes in this process (real stores, a real SQLite L1 file, real TCP links on
loopback); the tests inject faults into one node's L1 adapter, the way a busy L1 file
or a dropped RPC connection shows up, and look at the L1 itself for what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bfs_smr.adapters.local import LocalL1

from bfs_smr import L1ChannelStatus, L1Error, LocalError
from bfs_smr.runtime.node import Node, NodeConfig
from bfs_smr.runtime.store._datadir import DataDir

WINDOW = 2


@asynccontextmanager
async def _node(path: Path, chain: LocalL1, **options: Any) -> AsyncIterator[Node]:
    node_id = DataDir(path).init()
    chain.mint(node_id, 1_000)
    options.setdefault("max_inbound_deposit", 1_000)  # these tests deposit for peers
    node = Node(path, NodeConfig(listen="127.0.0.1:0", l1=f"local:{chain.path}", **options))
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(node.run(lambda _: ready.set_result(None)))
    await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done(), "the node did not start"
    try:
        yield node
    finally:
        node.stop()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def _pair(tmp_path: Path, **bob_options: Any) -> AsyncIterator[tuple[LocalL1, Node, Node]]:
    chain = LocalL1.create(tmp_path / "l1.sqlite3", window=WINDOW)
    try:
        async with (
            _node(tmp_path / "alice", chain) as alice,
            _node(tmp_path / "bob", chain, **bob_options) as bob,
        ):
            yield chain, alice, bob
    finally:
        chain.close()


async def _open(alice: Node, bob: Node, peer_deposit: int = 0) -> bytes:
    opened = await alice.op_open(
        {
            "peer_id": bob.node_id.hex(),
            "peer": f"127.0.0.1:{bob.port}",
            "deposit": 500,
            "peer_deposit": peer_deposit,
            "timeout": 20,
        }
    )
    return bytes.fromhex(opened["channel"])


def _fail_first(calls: list[Any], real: Callable[..., Any], error: Exception) -> Any:
    def call(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise error
        return real(*args)

    return call


def test_a_failed_peer_deposit_is_retried(tmp_path: Path) -> None:
    """Regression (issue 11, defect 12): the first deposit failing (a busy L1 file)
    left the channel funding for good; the node now deposits its share again."""

    async def run() -> None:
        async with _pair(tmp_path) as (chain, alice, bob):
            calls: list[Any] = []
            adapter: Any = bob.l1.adapter
            busy = L1Error(f"{chain.path}: database is locked")
            adapter.deposit = _fail_first(calls, adapter.deposit, busy)
            cid = await _open(alice, bob, peer_deposit=100)
            info = chain.channel(cid)
            assert info.status is L1ChannelStatus.OPEN and info.deposited == (500, 100)
            assert [amount for _, amount in calls] == [100, 100]  # its share, twice

    asyncio.run(run())


def test_a_unilateral_close_acts_on_the_l1_read_now(tmp_path: Path) -> None:
    """Regression (issue 11, defect 5): with a stale noted L1 status (a node that has not
    looked at the L1 since the channel opened, as right after a restart or an open),
    ``close --unilateral`` registered nothing and answered "the node keeps at it"."""

    async def run() -> None:
        # Bob's node looks at the L1 once, at its start, before the channel exists.
        async with _pair(tmp_path, poll_interval=3_600) as (chain, alice, bob):
            cid = await _open(alice, bob)
            assert chain.channel(cid).status is L1ChannelStatus.OPEN
            try:
                await bob.op_close({"channel": cid.hex(), "unilateral": True, "timeout": 0.5})
            except LocalError as exc:
                assert "closing" in str(exc) and "keeps at it" in str(exc)
            info = chain.channel(cid)
            assert info.status is L1ChannelStatus.CLOSING and info.registered_seq == 0
            # Alice's node (whose newest update is the registered one, seq 0) settles
            # once the window ends: seq 0 counts as a close, not as "none" (defect 4).
            for _ in range(200):
                if chain.channel(cid).status is L1ChannelStatus.SETTLED:
                    break
                await asyncio.sleep(0.1)
            assert chain.channel(cid).payouts == (500, 0)

    asyncio.run(run())


def test_a_failed_l1_action_is_reported_to_the_caller(tmp_path: Path) -> None:
    """Regression (issue 11, defect 5): a unilateral close the L1 refused was swallowed;
    the caller now gets the L1's reason at once."""

    async def run() -> None:
        async with _pair(tmp_path) as (chain, alice, bob):
            cid = await _open(alice, bob)
            adapter: Any = bob.l1.adapter
            down = L1Error("L1 unreachable: ConnectionError: connection refused")
            adapter.unilateral_close = _fail_first([], adapter.unilateral_close, down)
            with pytest.raises(L1Error, match="unreachable"):
                await bob.op_close({"channel": cid.hex(), "unilateral": True, "timeout": 5})
            # Asked again, the node tries again, and the close is registered.
            with pytest.raises(LocalError, match="keeps at it"):
                await bob.op_close({"channel": cid.hex(), "unilateral": True, "timeout": 0.2})
            assert chain.channel(cid).status is L1ChannelStatus.CLOSING

    asyncio.run(run())


def test_a_node_whose_l1_guard_breaks_stops(tmp_path: Path) -> None:
    """Regression (issue 11, defect 10): an error other than L1Error ended the L1 watch
    and left the node taking payments it could no longer defend; now the node stops."""

    async def run() -> None:
        chain = LocalL1.create(tmp_path / "l1.sqlite3", window=WINDOW)
        try:
            async with _node(tmp_path / "alice", chain) as alice:
                adapter: Any = alice.l1.adapter

                def broken(since: int = 0) -> Any:
                    raise RuntimeError("a bug in the adapter")

                adapter.events = broken
                await asyncio.wait_for(alice._stopping.wait(), 20)
        finally:
            chain.close()

    asyncio.run(run())
