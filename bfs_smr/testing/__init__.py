"""Conformance kits and harnesses for code that plugs into bfs-smr.

* :func:`check_app` runs an app through commands and checks what the framework relies
  on: determinism, no mutation of states, conservation in every outcome, a canonical
  state encoding that round-trips, and hostile commands refused with
  :class:`~bfs_smr.CommandRejected` (:data:`HOSTILE_COMMANDS` plus the app's own).
* :func:`check_l1_adapter` checks an L1 adapter against every L1 rule of
  docs/design.md §5 (:data:`L1_RULES`), through an :class:`L1Harness`; a broken rule
  raises :class:`L1RuleBroken`, naming it. :class:`MemoryL1Harness`,
  :class:`LocalL1Harness` and :class:`EvmL1Harness` drive the bundled L1s.
* :func:`check_app_rules` checks an app's rules contract on the EVM against the Python
  app (the twin kit): generated command sequences, valid and hostile, must get the same
  accept or reject, next state, player to move, finality and outcome from both
  (:data:`RULES_ABI` is the ABI the contract must have). Needs the ``evm`` extra.
* :class:`LocalPair` and :func:`memory_pair`: two channel parties in one process on the
  embedded L1 (re-exported from :mod:`bfs_smr.runtime`, where they live: the demos and
  the benchmark run on them too).

Every bundled app and adapter passes these kits; run them on yours in your own tests.
This package may use the runtime and the bundled adapters; nothing outside tests imports
it.
"""

from bfs_smr.runtime import LocalPair, Party, memory_pair
from bfs_smr.testing._app import HOSTILE_COMMANDS, check_app
from bfs_smr.testing._harnesses import EvmL1Harness, LocalL1Harness, MemoryL1Harness
from bfs_smr.testing._l1kit import L1_RULES, L1Harness, L1RuleBroken
from bfs_smr.testing._l1scenarios import check_l1_adapter
from bfs_smr.testing._rules import RULES_ABI, check_app_rules

__all__ = [
    "HOSTILE_COMMANDS",
    "L1_RULES",
    "RULES_ABI",
    "EvmL1Harness",
    "L1Harness",
    "L1RuleBroken",
    "LocalL1Harness",
    "LocalPair",
    "MemoryL1Harness",
    "Party",
    "check_app",
    "check_app_rules",
    "check_l1_adapter",
    "memory_pair",
]
