"""How the adjudicator wants updates signed."""

from __future__ import annotations

from typing import Any

from bfs_smr.adapters.evm._crypto import Secp256k1
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from bfs_smr import L1Format, LocalError, StateMachine, Update, hash_bytes

__all__ = ["EvmFormat", "binding", "evm_domain"]

_DOMAIN_TAG = b"evm:"
_WORD = 1 << 256
_DIGEST_TYPES = ["uint256", "bytes32", "uint256", "uint256", "uint256", "bool", "bytes32"]


def evm_domain(chain_id: int, contract: bytes) -> bytes:
    """The L1 domain of one adjudicator: ``b"evm:" ‖ chain id (32 bytes) ‖ address``."""
    if len(contract) != 20:
        raise LocalError("a contract address is 20 bytes")
    if not 0 <= chain_id < 1 << 256:
        raise LocalError("a chain id is a 256-bit unsigned integer")
    return _DOMAIN_TAG + chain_id.to_bytes(32, "big") + contract


def binding(state_hash: bytes, entry_hash: bytes) -> bytes:
    """What the adjudicator's digest binds an update by: ``keccak256(state_hash ‖
    entry_hash)``."""
    return keccak(state_hash + entry_hash)


class EvmFormat(L1Format):
    """secp256k1 over the EIP-191 (version 0) digest the adjudicator recomputes.

    ``keccak256(0x19 ‖ 0x00 ‖ contract ‖ abi_encode(chain_id, channel_id, seq, out_a, out_b,
    final, binding))`` where ``binding = keccak256(state_hash ‖ entry_hash)``:
    ``entry_hash`` is :meth:`bfs_smr.Update.entry_hash`, the BLAKE2b hash of the canonical
    update, which binds the previous hash, the app and the commands; ``state_hash`` is
    repeated in the clear so the adjudicator can check a state it is given against a
    signed update without the update's body. The chain id and the contract address bind
    the L1 (I5, docs/design.md §4).

    Args:
        chain_id: the EVM chain id.
        contract: the adjudicator's 20-byte address.
    """

    def __init__(self, chain_id: int, contract: bytes) -> None:
        self.domain = evm_domain(chain_id, contract)
        self.chain_id = chain_id
        self.contract = bytes(contract)
        self.scheme = Secp256k1()
        self._prefix = b"\x19\x00" + self.contract

    def digest(self, update: Update, body: bytes) -> bytes:
        out_a, out_b = update.outcome
        if max(out_a, out_b, update.seq) >= _WORD:
            # Not representable on chain: a digest no adjudicator call can ever match.
            return keccak(b"bfs-smr/evm/unrepresentable" + self._prefix + body)
        fields = (
            self.chain_id,
            update.channel_id,
            update.seq,
            out_a,
            out_b,
            update.final,
            binding(update.state_hash, hash_bytes(body)),
        )
        return keccak(self._prefix + abi_encode(_DIGEST_TYPES, fields))

    def watch_commitment(self, secret: bytes) -> bytes:
        """``keccak256(secret)``: the adjudicator checks a unilateral close's ``reveal``
        against ``ChannelParams.watch`` with the hash the EVM computes cheaply."""
        return keccak(secret)

    def encode_state(self, app: StateMachine[Any], state: Any) -> bytes:
        """The ABI encoding of ``state`` as ``app.state_abi`` (the app's CBOR encoding if
        the app declares no ABI type: it has no rules on chain)."""
        abi = app.state_abi
        if abi is None:
            return app.encode_state(state)
        return abi_encode([abi], [state])

    def state_hash(self, app: StateMachine[Any], state: Any) -> bytes:
        """``keccak256`` of :meth:`encode_state` for an app with on-chain rules, so the
        adjudicator checks a forced move's state against a signed update; BLAKE2b of the
        CBOR encoding otherwise."""
        if app.state_abi is None:
            return app.state_hash(state)
        return keccak(self.encode_state(app, state))
