"""The EVM L1: a Vyper adjudicator contract and its web3 adapter.

* :class:`Secp256k1` — the signature scheme (identities are 20-byte addresses);
* :class:`EvmFormat` — the digest the adjudicator checks (binds chain id and contract);
* :class:`EvmAdapter` — one party's client of a deployed adjudicator;
* :func:`deploy_adjudicator` / :func:`adjudicator_address` — the one adjudicator per
  chain that ``evm:URL`` L1 specs use;
* :class:`EvmL1Plugin` — what ``--l1 evm:URL`` names (the ``evm`` entry point of the
  ``bfs_smr.l1`` group);
* :class:`DevChain` — an in-process py-evm chain or an RPC node (anvil) with the
  adjudicator deployed, a faucet and a clock, for tests, demos and :func:`gas_report`.

Needs the ``evm`` extra: ``pip install 'bfs-smr[evm]'``. See docs/evm.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bfs_smr.adapters.evm._adapter import EvmAdapter, channel_key, decode_slot
    from bfs_smr.adapters.evm._crypto import Secp256k1, address_of
    from bfs_smr.adapters.evm._format import EvmFormat, evm_domain
    from bfs_smr.adapters.evm._plugin import EvmL1Plugin
    from bfs_smr.adapters.evm.deploy import (
        adjudicator_address,
        check_adjudicator,
        connect,
        deploy_adjudicator,
        deploy_all_rules,
        deploy_rules,
        deployment_block,
        parse_evm_spec,
        rules_address,
    )
    from bfs_smr.adapters.evm.devchain import Anvil, DevChain, find_anvil, install_anvil

# Names load on first use (PEP 562): web3 takes over a second to import, and what needs
# only a key's address (``bfs-smr init``) or the signature scheme should not wait for it.
_WHERE = {
    "EvmAdapter": "_adapter",
    "channel_key": "_adapter",
    "decode_slot": "_adapter",
    "Secp256k1": "_crypto",
    "address_of": "_crypto",
    "EvmFormat": "_format",
    "evm_domain": "_format",
    "adjudicator_address": "deploy",
    "check_adjudicator": "deploy",
    "connect": "deploy",
    "deploy_adjudicator": "deploy",
    "deploy_all_rules": "deploy",
    "deploy_rules": "deploy",
    "deployment_block": "deploy",
    "parse_evm_spec": "deploy",
    "rules_address": "deploy",
    "EvmL1Plugin": "_plugin",
    "Anvil": "devchain",
    "DevChain": "devchain",
    "find_anvil": "devchain",
    "install_anvil": "devchain",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:  # a submodule (``evm.deploy``), as a package's attribute
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # a dependency of that module is missing: say so
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Anvil",
    "DevChain",
    "EvmAdapter",
    "EvmFormat",
    "EvmL1Plugin",
    "Secp256k1",
    "address_of",
    "adjudicator_address",
    "channel_key",
    "check_adjudicator",
    "connect",
    "decode_slot",
    "deploy_adjudicator",
    "deploy_all_rules",
    "deploy_rules",
    "deployment_block",
    "evm_domain",
    "find_anvil",
    "install_anvil",
    "parse_evm_spec",
    "rules_address",
]
