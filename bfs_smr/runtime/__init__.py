"""The runtime layer: everything that performs I/O or keeps time (the core does neither)."""

from bfs_smr.plugins import available_apps, load_app, register_app
from bfs_smr.runtime._local import LocalPair, Party, evm_pair, memory_pair

__all__ = [
    "LocalPair",
    "Party",
    "available_apps",
    "evm_pair",
    "load_app",
    "memory_pair",
    "register_app",
]
