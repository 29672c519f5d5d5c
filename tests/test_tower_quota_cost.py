"""The cost of a tower's quota check for a new entry, counted in SQLite VM steps (not time).

Found by ``bfs-smr tower bench``: ``Tower._check_put`` counts a node's entries with
``SELECT COUNT(*) … WHERE client = ?`` for every put of a new entry, which reads every
row of that node (each ~1 KiB in the table b-tree, the rest in an overflow page). With
1,000 entries a node that cost ~3.5 ms a put, with 50,000 ~150 ms, on the tower's event
loop: filling a tower is quadratic, and a node at its quota stalls every other node with
cheap refused puts. Fixed: every node's count is read once and then kept in memory, so a
new put costs one indexed read whatever the node keeps.
"""

from __future__ import annotations

import os
from pathlib import Path

from bfs_smr.runtime.tower import Tower, TowerConfig, TowerDir, TowerStore, entry_size
from bfs_smr.runtime.tower._protocol import Put


def _steps_of_a_new_put(tmp_path: Path, entries: int) -> int:
    path = tmp_path / f"tower-{entries}"
    TowerDir(path).init()
    tower = Tower(path, TowerConfig(listen="127.0.0.1:0", l1=f"local:{tmp_path / 'l1'}"))
    tower.store = store = TowerStore(path)
    client = os.urandom(32)
    size = entry_size(tower.config.slot)
    store.put_many((client, os.urandom(32), 0, os.urandom(size)) for _ in range(entries))
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    assert tower._check_put(client, Put(os.urandom(32), 0, bytes(size)), {}, set()) is None
    store._db.set_progress_handler(step, 10)  # counted: a new put once the tower runs
    try:
        assert tower._check_put(client, Put(os.urandom(32), 0, bytes(size)), {}, set()) is None
    finally:
        store._db.set_progress_handler(None, 0)
        store.close()
    return steps[0]


def test_a_new_entry_costs_the_same_check_with_few_or_many_entries(tmp_path: Path) -> None:
    few = _steps_of_a_new_put(tmp_path, 10)
    many = _steps_of_a_new_put(tmp_path, 3_000)
    assert many <= 2 * few + 5, (few, many)
