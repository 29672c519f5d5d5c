"""The runtime layer: everything that performs I/O or keeps time (the core does neither).

This namespace declares the in-process runtime and the app registry:

* :class:`LocalPair` (with its :class:`Party`), :func:`memory_pair` and :func:`evm_pair`:
  two channel parties in one process, on the embedded or the EVM L1. The demos and the
  benchmark run on them; :mod:`bfs_smr.testing` re-exports them for tests.
* :func:`available_apps`, :func:`load_app`, :func:`register_app`: the app registry of
  :mod:`bfs_smr.plugins`, re-exported because every runtime finds apps through it.

The daemon, the store and the transport are sub-packages with their own declared names
(``bfs_smr.runtime.node``, ``bfs_smr.runtime.store``, ``bfs_smr.runtime.transport``);
they are not re-exported here, so importing this namespace does not load the daemon.
``tests/test_declared_apis.py`` pins ``__all__``.
"""

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
