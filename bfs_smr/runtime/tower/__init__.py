"""The watchtower: it refutes stale closes and settles for nodes that are offline.

- :mod:`._seal`: the watch secret, and the sealed fixed-size entry a node gives a tower;
- :mod:`._protocol`: the node ↔ tower messages;
- :mod:`._store`: the tower's durable entries and cases;
- :mod:`._tower`: the tower daemon (``bfs-smr tower run``);
- :mod:`bfs_smr.runtime.node._towers`: a node's side, keeping each tower up to date
  (``node --tower``).

docs/watchtower.md describes the design, what a tower learns and when.
"""

from __future__ import annotations

from bfs_smr.runtime.tower._dir import TowerDir
from bfs_smr.runtime.tower._seal import (
    SLOT_SIZE,
    entry_size,
    locator,
    seal,
    unseal,
    watch_commitment_for,
    watch_secret,
)
from bfs_smr.runtime.tower._store import TowerStore
from bfs_smr.runtime.tower._tower import Tower, TowerConfig

__all__ = [
    "SLOT_SIZE",
    "Tower",
    "TowerConfig",
    "TowerDir",
    "TowerStore",
    "entry_size",
    "locator",
    "seal",
    "unseal",
    "watch_commitment_for",
    "watch_secret",
]
