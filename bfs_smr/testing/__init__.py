"""Conformance kits and harnesses for code that plugs into bfs-smr.

* :func:`check_app` runs an app through commands and checks what the framework relies
  on: determinism, no mutation of states, conservation in every outcome, a canonical
  state encoding that round-trips, and hostile commands refused with
  :class:`~bfs_smr.CommandRejected` (:data:`HOSTILE_COMMANDS` plus the app's own).
* :class:`LocalPair` and :func:`memory_pair`: two channel parties in one process on the
  embedded L1 (re-exported from :mod:`bfs_smr.runtime`, where they live: the demos and
  the benchmark run on them too).

Every bundled app passes the kit; run them on yours in your own tests.
This package may use the runtime and the bundled adapters; nothing outside tests imports
it.
"""

from bfs_smr.runtime import LocalPair, Party, memory_pair
from bfs_smr.testing._app import HOSTILE_COMMANDS, check_app

__all__ = [
    "HOSTILE_COMMANDS",
    "LocalPair",
    "Party",
    "check_app",
    "memory_pair",
]
