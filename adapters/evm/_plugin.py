"""``--l1 evm:URL``: the adjudicator through a JSON-RPC node (the ``evm`` entry point).

Loading this module imports neither web3 nor the signature scheme: they load (through
the package's lazy names) when a plug-in is made, so ``bfs-smr`` stays quick to start on
other L1s and says in one line that the ``evm`` extra is missing when it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bfs_smr.adapters import evm

from bfs_smr import L1Error, LocalError, Signer
from bfs_smr.plugins import KeyProvider, L1Connection, L1Plugin

__all__ = ["DEFAULT_WINDOW", "EvmL1Plugin"]

#: The challenge window a node on the EVM puts in its channels unless told otherwise.
DEFAULT_WINDOW = 86_400


@contextmanager
def _extra() -> Iterator[None]:
    """Turn a missing dependency of the ``evm`` extra into a one-line LocalError."""
    try:
        yield
    except ImportError as exc:
        raise LocalError(
            f"the EVM L1 needs the evm extra (pip install 'bfs-smr[evm]'): {exc}"
        ) from None


class EvmL1Plugin(L1Plugin):
    """``evm:URL`` (or ``evm:URL#0xADDRESS`` for another deployment than the one
    ``bfs-smr l1 init`` makes at the same address on every chain). See docs/evm.md.

    A node transacts and signs channel updates with its secp256k1 key, whose 20-byte
    address is its account. ``l1 init`` deploys the adjudicator and the installed apps'
    rules contracts unless they are there; ``l1 fund`` sends wei from the RPC node's first
    unlocked account (anvil's).

    Raises:
        LocalError: not an http(s) URL or a malformed address; the evm extra is missing.
    """

    def __init__(self, where: str) -> None:
        with _extra():
            self.url, self.address = evm.parse_evm_spec(where)
        self._w3: Any = None

    def _client(self, *, check: bool = True) -> tuple[Any, bytes]:
        """A web3 client and the adjudicator's address (checked to be the artifact's)."""
        with _extra():
            if self._w3 is None:
                self._w3 = evm.connect(self.url)
            address = self.address or evm.adjudicator_address()
            if check:
                evm.check_adjudicator(self._w3, address)
        return self._w3, address

    def connect(
        self, identity: Signer, l1_key: KeyProvider | None = None, window: int | None = None
    ) -> L1Connection:
        if l1_key is None:
            raise LocalError("a node on the EVM needs its secp256k1 key")
        w3, address = self._client()
        with _extra():
            secret = l1_key()
            adapter = evm.EvmAdapter(w3, address, secret)
            signer = Signer(evm.Secp256k1(), secret)
        return L1Connection(adapter, signer, DEFAULT_WINDOW if window is None else window)

    def parse_account(self, text: str) -> bytes:
        try:
            value = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            value = b""
        if len(value) != 20:
            raise LocalError(
                f"an EVM account is a 20-byte address (bfs-smr init prints the node's "
                f"evm_address), got {text!r}"
            )
        return value

    def format_account(self, account: bytes) -> str:
        w3, _ = self._client(check=False)
        return str(w3.to_checksum_address(account))

    def init(self, *, window: int | None = None, chain_id: str | None = None) -> dict[str, Any]:
        """Deploy the adjudicator, and the rules contract of every installed app that has
        one, unless they are there (``window`` and ``chain_id`` are the chain's own)."""
        w3, _ = self._client(check=False)
        with _extra():
            address, deployed = evm.deploy_adjudicator(w3)
            rules = evm.deploy.deploy_all_rules(w3)
        return {
            "chain_id": int(w3.eth.chain_id),
            "adjudicator": "0x" + address.hex(),
            "deployed": deployed,
            "rules": {app_id: "0x" + where.hex() for app_id, (where, _) in sorted(rules.items())},
        }

    def balance(self, account: bytes) -> int:
        w3, _ = self._client()
        return int(w3.eth.get_balance(w3.to_checksum_address(account)))

    def fund(self, account: bytes, amount: int) -> None:
        w3, _ = self._client()
        if not amount:
            return
        faucets = w3.eth.accounts
        if not faucets:
            raise L1Error("the EVM node has no unlocked account to fund from; send ETH yourself")
        to = w3.to_checksum_address(account)
        tx = w3.eth.send_transaction({"from": faucets[0], "to": to, "value": amount})
        if w3.eth.wait_for_transaction_receipt(tx)["status"] != 1:
            raise L1Error("the funding transaction failed")
