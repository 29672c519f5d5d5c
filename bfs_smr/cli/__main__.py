"""``python -m bfs_smr.cli``: the same as the ``bfs-smr`` command."""

from bfs_smr.cli import main

raise SystemExit(main())
