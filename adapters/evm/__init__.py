"""The EVM L1: a Vyper adjudicator contract and its web3 adapter.

* :class:`Secp256k1` — the signature scheme (identities are 20-byte addresses);
* :class:`EvmFormat` — the digest the adjudicator checks (binds chain id and contract);
* :class:`EvmAdapter` — one party's client of a deployed adjudicator;
* :func:`deploy_adjudicator` / :func:`adjudicator_address` — the one adjudicator per
  chain that ``evm:URL`` L1 specs use;
* :class:`DevChain` — an in-process py-evm chain or an RPC node (anvil) with the
  adjudicator deployed, a faucet and a clock, for tests, demos and :func:`gas_report`.

Needs the ``evm`` extra: ``pip install 'bfs-smr[evm]'``. See docs/evm.md.
"""

from ._adapter import EvmAdapter, channel_key, decode_slot
from ._crypto import Secp256k1, address_of
from ._format import EvmFormat, evm_domain
from .deploy import (
    adjudicator_address,
    check_adjudicator,
    connect,
    deploy_adjudicator,
    deployment_block,
)
from .devchain import Anvil, DevChain, find_anvil, install_anvil

__all__ = [
    "Anvil",
    "DevChain",
    "EvmAdapter",
    "EvmFormat",
    "Secp256k1",
    "address_of",
    "adjudicator_address",
    "channel_key",
    "check_adjudicator",
    "connect",
    "decode_slot",
    "deploy_adjudicator",
    "deployment_block",
    "evm_domain",
    "find_anvil",
    "install_anvil",
]
