"""``python -m bfs_smr.adapters.evm``: rewrite Adjudicator.json from Adjudicator.vy."""

from bfs_smr.adapters.evm.artifact import main

main()
