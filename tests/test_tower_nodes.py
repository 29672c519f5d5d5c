"""A watchtower protects a node that is down, with real processes on a local L1 and on
the EVM (the adjudicator on anvil).

The victim's node is killed; its peer closes with an old backup of its own store; the
tower refutes the stale close and settles, so the victim gets its newest outcome. On the
way the victim's node restarts (its tower client catches up on a new link), and the
tower is killed with SIGKILL before the stale close and restarted only after it is on
the L1: it resumes from its store and still refutes.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.nodeproc import NodeProc, TowerProc, local_l1, ok, open_channel

WINDOW = 10
FUND = 10**18  # on the EVM: wei for deposits and gas


@dataclass
class L1:
    """One L1 for the story: its spec, and each party's account on it."""

    spec: str
    evm: bool

    def account(self, data_dir: Path) -> str:
        """The account a node or tower in ``data_dir`` holds value in on this L1."""
        if not self.evm:
            name = "tower.json" if (data_dir / "tower.json").exists() else "node.json"
            key = "tower_id" if name == "tower.json" else "node_id"
            return str(json.loads((data_dir / name).read_text())[key])
        from bfs_smr.adapters.evm import Secp256k1

        secret = bytes.fromhex((data_dir / "l1.key").read_text())
        return "0x" + Secp256k1().public_key(secret).hex()

    def fund(self, data_dir: Path, amount: int) -> None:
        ok("l1", "fund", "--l1", self.spec, self.account(data_dir), str(amount))

    def balance(self, data_dir: Path) -> int:
        result: int = ok("l1", "balance", "--l1", self.spec, self.account(data_dir))["balance"]
        return result


@pytest.fixture(params=["local", "evm"])
def l1(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[L1]:
    if request.param == "local":
        yield L1(local_l1(tmp_path, WINDOW), evm=False)
        return
    pytest.importorskip("web3")
    from conftest import anvil

    with anvil(block_time=1) as node:
        spec = f"evm:{node.url}"
        ok("l1", "init", "--l1", spec)
        yield L1(spec, evm=True)


def _pay(alice: NodeProc, channel: str, times: int) -> None:
    for _ in range(times):
        ok("channel", "pay", "--data-dir", str(alice.dir), channel, "1")


def _tower_holds(node: NodeProc, channel: str, seq: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = node.call("show", channel=channel)
        if any(held == seq for held in shown["towers"].values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the tower never held seq {seq}: {shown['towers']}")


def test_a_tower_refutes_a_stale_close_while_the_victim_is_down(tmp_path: Path, l1: L1) -> None:
    tower = TowerProc(tmp_path / "tower", l1.spec)
    window = ("--window", str(WINDOW))
    alice = NodeProc(tmp_path / "alice", l1.spec, extra=window)
    if l1.evm:
        l1.fund(tower.dir, FUND)  # the tower pays its own gas
    tower.start()
    bob = NodeProc(tmp_path / "bob", l1.spec, extra=(*window, "--tower", tower.spec))
    funds = {alice.dir: 1000 if not l1.evm else FUND, bob.dir: 0 if not l1.evm else FUND}
    for where, amount in funds.items():
        if amount:
            l1.fund(where, amount)
    before = {where: l1.balance(where) for where in funds}
    alice.start()
    bob.start()
    try:
        channel = open_channel(alice, bob)
        _pay(alice, channel, 3)
        _tower_holds(bob, channel, 3)
        bob.stop()  # the victim's node restarts: it asks the tower what it holds
        bob.start(bob.port)
        # Alice's backup: her store as it was at seq 3 (a node stopped cleanly).
        alice.stop()
        shutil.copytree(
            alice.dir, tmp_path / "alice-backup", ignore=shutil.ignore_patterns("*.log")
        )
        alice.start(alice.port)
        _pay(alice, channel, 5)
        newest = bob.call("show", channel=channel)["seq"]
        assert newest == 8
        _tower_holds(bob, channel, newest)

        # The tower dies at a random instruction; it comes back once the close is on L1.
        tower.kill()
        bob.kill()  # the victim goes offline for good

        # Alice restores her old store and closes with it.
        alice.stop()
        shutil.rmtree(alice.dir)
        shutil.copytree(tmp_path / "alice-backup", alice.dir)
        alice.start(alice.port)
        assert alice.call("show", channel=channel)["seq"] == 3
        closed: dict[str, Any] = {}

        def close() -> None:
            closed.update(
                ok("channel", "close", "--unilateral", "--data-dir", str(alice.dir), channel)
            )

        closer = threading.Thread(target=close)
        closer.start()
        deadline = time.monotonic() + 20
        while alice.call("show", channel=channel)["l1"] != "closing":
            assert time.monotonic() < deadline, "the stale close never reached the L1"
            time.sleep(0.1)
        tower.start()
        refuted = tower.wait_log("stale close refuted", timeout=30)
        assert refuted["registered_seq"] == 3 and refuted["seq"] == newest
        closer.join(60)
        settled = tower.wait_log("channel settled on L1", timeout=30)
        assert settled["channel"] == channel
    finally:
        for proc in (alice, bob):
            if proc.alive():
                proc.stop()
        if tower.proc is not None:
            tower.stop()
    # Bob deposited nothing, sent nothing to the L1, and was paid 8 in all: he gets 8, not
    # the 3 of the stale close (to the wei on the EVM: his node paid no gas).
    assert l1.balance(bob.dir) == before[bob.dir] + 8
    if not l1.evm:
        assert l1.balance(alice.dir) == 1000 - 8
    payouts = closed["payouts"]
    assert payouts[bob.node_id] == 8 and payouts[alice.node_id] == 492
