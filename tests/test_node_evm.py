"""Node processes on the EVM: ``--l1 evm:URL`` against anvil, driven by the CLI.

The same user path as tests/test_node.py, with the Vyper adjudicator as the L1: deploy
it with ``bfs-smr l1 init``, fund each node's ``evm_address``, open, pay, close; and a
stale close by a cheating node, refuted by the running victim. Anvil mines a block a
second here, so block time follows the clock and challenge windows end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodeproc import NodeProc, cli, ok, watch_secret_of
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
        assert funded["address"].lower() == address and funded["balance"] == FUND
        node.start()
    yield made
    for node in made:
        if node.alive():
            assert node.stop() == 0, node.log.read_text()[-3000:]


def _evm_address(node: NodeProc) -> str:
    from bfs_smr.adapters.evm import Secp256k1

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
    from bfs_smr.adapters.evm import EvmAdapter, connect
    from bfs_smr.adapters.evm.deploy import adjudicator_address

    from bfs_smr.runtime.store import Store

    cid = bytes.fromhex(channel)
    with Store(alice.dir) as store:
        stale = store.log_range(cid, 0, 0)[0]
        params = store.params(cid)
    key = bytes.fromhex((alice.dir / "l1.key").read_text())
    cheat = EvmAdapter(connect(evm_l1.removeprefix("evm:")), adjudicator_address(), key)
    cheat.track(params)
    cheat.unilateral_close(stale, watch_secret_of(alice, bob, params))
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


class _CuttableProxy:
    """A TCP proxy in front of the RPC endpoint that a test can cut: while cut, every
    connection through it is dropped and new ones are closed at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut = threading.Event()
        self.conns: list[Any] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(2)
            s.close()

    def _drop_all(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(2)
            s.close()

    def outage(self, seconds: float) -> None:
        """Drop every connection and refuse service for ``seconds``."""
        import time

        self.cut.set()
        self._drop_all()
        time.sleep(seconds)
        self.cut.clear()

    def close(self) -> None:
        self.cut.set()
        self.server.close()
        self._drop_all()


def test_a_node_refutes_after_an_outage_of_its_rpc_endpoint(tmp_path: Path, evm_l1: str) -> None:
    """Regression (issue 11, defect 10): a dropped RPC connection killed the node's L1
    watch for good (a requests error, not an L1Error), and a stale close then stood."""
    from urllib.parse import urlsplit

    url = urlsplit(evm_l1.removeprefix("evm:"))
    assert url.hostname is not None and url.port is not None
    proxy = _CuttableProxy((url.hostname, url.port))
    alice = NodeProc(tmp_path / "alice", evm_l1, extra=("--window", str(WINDOW)))
    bob = NodeProc(
        tmp_path / "bob", f"evm:http://127.0.0.1:{proxy.port}", extra=("--window", str(WINDOW))
    )
    try:
        for node in (alice, bob):
            ok("l1", "fund", "--l1", evm_l1, _evm_address(node), str(FUND))
            node.start()
        channel = _open(alice, bob)
        for _ in range(3):
            ok("channel", "pay", "--data-dir", str(alice.dir), channel, "100")
        alice.stop()
        proxy.outage(3.0)
        from bfs_smr.adapters.evm import EvmAdapter, connect
        from bfs_smr.adapters.evm.deploy import adjudicator_address

        from bfs_smr.runtime.store import Store

        cid = bytes.fromhex(channel)
        with Store(alice.dir) as store:
            stale = store.log_range(cid, 0, 0)[0]
            params = store.params(cid)
        key = bytes.fromhex((alice.dir / "l1.key").read_text())
        cheat = EvmAdapter(connect(evm_l1.removeprefix("evm:")), adjudicator_address(), key)
        cheat.track(params)
        cheat.unilateral_close(stale, watch_secret_of(alice, bob, params))
        refuted = bob.wait_log("stale close on L1: refuting", timeout=WINDOW * 5)
        assert refuted["registered_seq"] == 0 and refuted["our_seq"] == 3
        closed = bob.call("close", channel=channel)
        assert closed["payouts"] == {alice.node_id: 200, bob.node_id: 300}
        # The outage was seen (and outlived): the node said so, and retried.
        assert any(e.get("event") == "L1 unavailable: retrying" for e in bob.log_events())
    finally:
        for node in (alice, bob):
            if node.alive():
                node.stop()
        proxy.close()
