"""The soak test's short run (tests/soak/): real node processes, faults, every close.

Two rounds inside the suite's budget: the local L1 with three nodes, and the EVM (anvil)
with each node behind a proxy that the run cuts. Any length by command::

    python -m tests.soak --minutes 30 --seed N --l1 local|evm

A failing round prints its seed, the violations and the event log; set
``BFS_SMR_SOAK_SEED`` to replay one here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak import Report, Soak

SEED = int(os.environ.get("BFS_SMR_SOAK_SEED", "11"))


def _check(report: Report, *faults: str) -> None:
    print(report.summary())
    # The harness did its part: every fault ran.
    for fault in faults:
        if report.counts.get(fault, 0) < 1:
            pytest.fail(f"the round had no {fault}: {report.summary()}")
    # What the nodes did: channels opened and settled, and no violation.
    assert report.counts.get("channels", 0) >= 3, report.summary()
    assert report.counts.get("settled", 0) >= 1, report.summary()
    assert not report.violations, report.summary()


def test_soak_on_the_local_l1(tmp_path: Path) -> None:
    report = Soak(tmp_path, seed=SEED, seconds=15, l1="local", nodes=3, window=5).run()
    _check(report, "kills", "stops", "force scenarios")


def test_soak_on_the_evm_behind_a_cut_proxy(tmp_path: Path) -> None:
    pytest.importorskip("web3")
    from conftest import anvil

    with anvil(block_time=1) as node:
        report = Soak(
            tmp_path, seed=SEED, seconds=10, l1="evm", nodes=2, window=8, anvil_url=node.url
        ).run()
    _check(report, "kills", "L1 outages")
