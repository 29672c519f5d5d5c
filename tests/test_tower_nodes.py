"""A watchtower protects a node that is down, with real processes on a local L1.

The victim's node is killed; its peer closes with an old backup of its own store; the
tower refutes the stale close and settles, so the victim gets its newest outcome. On the
way the victim's node restarts (its tower client catches up on a new link), and the
tower is killed with SIGKILL before the stale close and restarted only after it is on
the L1: it resumes from its store and still refutes.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from tests.nodeproc import NodeProc, TowerProc, local_l1, ok, open_channel

WINDOW = 10


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


def _balance(l1: str, account: str) -> int:
    result: int = ok("l1", "balance", "--l1", l1, account)["balance"]
    return result


def test_a_tower_refutes_a_stale_close_while_the_victim_is_down(tmp_path: Path) -> None:
    l1 = local_l1(tmp_path, WINDOW)
    tower = TowerProc(tmp_path / "tower", l1).start()
    alice = NodeProc(tmp_path / "alice", l1)
    bob = NodeProc(tmp_path / "bob", l1, extra=("--tower", tower.spec))
    ok("l1", "fund", "--l1", l1, alice.node_id, "1000")
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
    # Bob deposited nothing and was paid 8 in all: he gets 8, not the 3 of the stale close.
    assert _balance(l1, bob.node_id) == 8
    assert _balance(l1, alice.node_id) == 1000 - 8
    payouts = closed["payouts"]
    assert payouts[bob.node_id] == 8 and payouts[alice.node_id] == 492
