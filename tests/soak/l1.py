"""The soak's own readers of the L1 (never through a proxy): value, channels, funding."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from tests.nodeproc import NodeProc

__all__ = ["EvmView", "L1View", "LocalView"]


class LocalView:
    """The harness's own reader of a ``local:PATH`` L1."""

    kind = "local"

    def __init__(self, path: Path, window: int) -> None:
        from bfs_smr.adapters.local import LocalL1

        self.spec = f"local:{path}"
        self.chain = LocalL1.create(path, window=window)  # what `bfs-smr l1 init` does
        self.supports_force = True

    def fund(self, node: NodeProc, amount: int) -> str:
        self.chain.mint(bytes.fromhex(node.node_id), amount)
        return node.node_id

    def value(self, accounts: list[str]) -> int:
        """All value on the L1: balances plus what is locked in unsettled channels."""
        return int(self.chain.total_supply())

    def balance(self, account: str) -> int:
        return int(self.chain.balance(bytes.fromhex(account)))

    def channel(self, cid: str) -> dict[str, Any] | None:
        from bfs_smr import L1Error

        try:
            info = self.chain.channel(bytes.fromhex(cid))
        except L1Error:
            return None
        forced = info.forced
        return {
            "status": info.status.value,
            "registered_seq": info.registered_seq,
            "payouts": info.payouts,
            "forced": None if forced is None else (forced.seq, tuple(forced.update.outcome)),
        }

    def close(self) -> None:
        self.chain.close()


class EvmView:
    """The harness's own reader of the adjudicator on anvil (straight, not through a proxy)."""

    kind = "evm"

    def __init__(self, url: str) -> None:
        from bfs_smr.adapters.evm import EvmAdapter, connect, deploy_adjudicator, deploy_all_rules

        self.spec = f"evm:{url}"
        self.w3 = connect(url)
        self.address, _ = deploy_adjudicator(self.w3)  # what `bfs-smr l1 init` does
        deploy_all_rules(self.w3)
        self.reader = EvmAdapter(self.w3, self.address, os.urandom(32))  # reads only
        self.supports_force = True
        self.first_block = 0
        self._lock = threading.Lock()  # the reader's event list is not thread-safe

    def fund(self, node: NodeProc, amount: int) -> str:
        from bfs_smr.adapters.evm import Secp256k1
        from eth_utils.address import to_checksum_address

        key = bytes.fromhex((node.dir / "l1.key").read_text())
        address = "0x" + Secp256k1().public_key(key).hex()
        # As `bfs-smr l1 fund` does: from the RPC node's first unlocked account.
        from web3.types import Wei

        to = to_checksum_address(address)
        tx = self.w3.eth.send_transaction(
            {"from": self.w3.eth.accounts[0], "to": to, "value": Wei(amount)}
        )
        self.w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        return address

    def start(self) -> None:
        self.first_block = int(self.w3.eth.block_number) + 1

    def balance(self, account: str) -> int:
        from eth_utils.address import to_checksum_address

        return int(self.w3.eth.get_balance(to_checksum_address(account)))

    def value(self, accounts: list[str]) -> int:
        """The contract's balance, the accounts' balances and the fees the accounts paid
        since :meth:`start`: constant unless value is created or lost."""
        total = self.balance("0x" + self.address.hex()) + sum(self.balance(a) for a in accounts)
        ours = {a.lower() for a in accounts}
        for number in range(self.first_block, int(self.w3.eth.block_number) + 1):
            block = self.w3.eth.get_block(number, full_transactions=True)
            for tx in block["transactions"]:
                if not isinstance(tx, bytes | str) and str(tx["from"]).lower() in ours:
                    receipt = self.w3.eth.get_transaction_receipt(tx["hash"])
                    total += int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
        return total

    def channel(self, cid: str) -> dict[str, Any] | None:
        from bfs_smr import L1EventKind

        last = None
        seq = None
        with self._lock:
            events = self.reader.events()
        for event in events:
            if event.channel_id.hex() == cid:
                last = event
                if event.seq is not None:
                    seq = event.seq
        if last is None:
            return None
        status = {
            L1EventKind.SETTLED: "settled",
            L1EventKind.CANCELLED: "cancelled",
            L1EventKind.CLOSING_STARTED: "closing",
            L1EventKind.REFUTED: "closing",
        }.get(last.kind, "open")
        return {"status": status, "registered_seq": seq, "payouts": last.payouts, "forced": None}

    def close(self) -> None:
        pass


L1View = LocalView | EvmView
