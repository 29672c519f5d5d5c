"""Node processes on the EVM: ``--l1 evm:URL`` against anvil, driven by the CLI.

The same user path as tests/test_node.py, with the Vyper adjudicator as the L1: deploy
it with ``bfs-smr l1 init``, fund each node's ``evm_address``, open, pay, close; and a
stale close by a cheating node, refuted by the running victim. Anvil mines a block a
second here, so block time follows the clock and challenge windows end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodeproc import NodeProc, cli, ok
from tests.nodeproc import open_channel as _open

pytest.importorskip("web3")

WINDOW = 4
FUND = 10**18  # wei: deposits and gas


@pytest.fixture(scope="module")
def evm_l1() -> Iterator[str]:
    from conftest import anvil

    with anvil(block_time=1) as node:
        spec = f"evm:{node.url}"
        first = ok("l1", "init", "--l1", spec)
        assert first["deployed"] is True and len(first["adjudicator"]) == 42
        again = ok("l1", "init", "--l1", spec)  # the same address, not a second contract
        assert again == {**first, "deployed": False}
        yield spec


@pytest.fixture
def nodes(tmp_path: Path, evm_l1: str) -> Iterator[list[NodeProc]]:
    made = [
        NodeProc(tmp_path / f"node{i}", evm_l1, extra=("--window", str(WINDOW))) for i in range(2)
    ]
    for node in made:
        address = _evm_address(node)
        funded = ok("l1", "fund", "--l1", evm_l1, address, str(FUND))
        assert funded["node_id"].lower() == address and funded["balance"] == FUND
        node.start()
    yield made
    for node in made:
        if node.alive():
            assert node.stop() == 0, node.log.read_text()[-3000:]


def _evm_address(node: NodeProc) -> str:
    from adapters.evm import Secp256k1

    key = bytes.fromhex((node.dir / "l1.key").read_text())
    return "0x" + Secp256k1().public_key(key).hex()


def _balance(l1: str, node: NodeProc) -> int:
    balance: int = ok("l1", "balance", "--l1", l1, _evm_address(node))["balance"]
    return balance


def test_init_prints_the_evm_address_it_keeps(tmp_path: Path) -> None:
    made = ok("init", "--data-dir", str(tmp_path / "n"))
    node = NodeProc.__new__(NodeProc)
    node.dir = tmp_path / "n"
    assert made["evm_address"] == _evm_address(node)
    assert (tmp_path / "n" / "l1.key").stat().st_mode & 0o777 == 0o600


def test_open_pay_close_on_the_evm(nodes: list[NodeProc], evm_l1: str) -> None:
    alice, bob = nodes
    status = alice.call("status")
    assert "0x" + status["account"] == _evm_address(alice)
    channel = _open(alice, bob)
    for amount in (10, 20, 5):
        ok("channel", "pay", "--data-dir", str(alice.dir), channel, str(amount))
    ok("channel", "pay", "--data-dir", str(bob.dir), channel, "7")
    shown = ok("channel", "show", "--data-dir", str(bob.dir), channel)
    assert shown["phase"] == "open" and shown["l1"] == "open"
    assert shown["outcome"] == {alice.node_id: 472, bob.node_id: 28}
    before = _balance(evm_l1, bob)
    closed = ok("channel", "close", "--data-dir", str(alice.dir), channel)
    assert closed == {"channel": channel, "payouts": {alice.node_id: 472, bob.node_id: 28}}
    # Bob sent no transaction (he deposited nothing, Alice closed): exactly his payout.
    assert _balance(evm_l1, bob) == before + 28
    assert ok("channel", "close", "--data-dir", str(bob.dir), channel) == closed


def test_a_stale_close_on_the_evm_is_refuted(nodes: list[NodeProc], evm_l1: str) -> None:
    alice, bob = nodes
    channel = _open(alice, bob)
    for _ in range(3):
        ok("channel", "pay", "--data-dir", str(alice.dir), channel, "100")
    alice.stop()
    # Alice turns cheat: she registers seq 0 on the adjudicator with her own key.
    from adapters.evm import EvmAdapter, connect
    from adapters.evm.deploy import adjudicator_address
    from bfs_smr.runtime.store import Store

    cid = bytes.fromhex(channel)
    with Store(alice.dir) as store:
        stale = store.log_range(cid, 0, 0)[0]
        params = store.params(cid)
    key = bytes.fromhex((alice.dir / "l1.key").read_text())
    cheat = EvmAdapter(connect(evm_l1.removeprefix("evm:")), adjudicator_address(), key)
    cheat.track(params)
    cheat.unilateral_close(stale)
    refuted = bob.wait_log("stale close on L1: refuting", timeout=WINDOW * 5)
    assert refuted["registered_seq"] == 0 and refuted["our_seq"] == 3
    bob.wait_log("L1 refute")
    closed = bob.call("close", channel=channel)
    assert closed["payouts"] == {alice.node_id: 200, bob.node_id: 300}
    assert cheat.channel(cid).payouts == (200, 300)


def test_evm_errors_are_one_line(tmp_path: Path, evm_l1: str) -> None:
    bad = cli("l1", "balance", "--l1", evm_l1, "ab" * 32, "--json")
    assert bad.code == 2 and "20-byte address" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    nowhere = cli("l1", "balance", "--l1", "evm:http://127.0.0.1:9", "0x" + "11" * 20)
    assert nowhere.code == 2 and "no EVM node answers" in nowhere.stderr
    other = cli("l1", "balance", "--l1", evm_l1 + "#0x" + "22" * 20, "0x" + "11" * 20)
    assert other.code == 2 and "no adjudicator at" in other.stderr
    assert ok("l1", "balance", "--l1", evm_l1, "0x" + "33" * 20)["balance"] == 0
