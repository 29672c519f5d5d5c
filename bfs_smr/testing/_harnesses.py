"""Harnesses for the bundled L1s, for :func:`~bfs_smr.testing.check_l1_adapter`.

Each is also an example of an :class:`~bfs_smr.testing.L1Harness` for your own L1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from bfs_smr._crypto import SignatureScheme
from bfs_smr._errors import LocalError
from bfs_smr.adapters import evm
from bfs_smr.adapters.local import LocalAdapter, LocalL1
from bfs_smr.adapters.memory import MemoryAdapter, MemoryL1

if TYPE_CHECKING:
    from types import TracebackType

    from bfs_smr.adapters.evm import DevChain, EvmAdapter

__all__ = ["EvmL1Harness", "LocalL1Harness", "MemoryL1Harness"]


class MemoryL1Harness:
    """The embedded L1: a :class:`~bfs_smr.adapters.memory.MemoryL1` and its faucet.

    Args:
        chain: the L1 to drive (default: a new one). Pass a subclass to check it.
    """

    def __init__(self, chain: MemoryL1 | None = None) -> None:
        self.chain = chain or MemoryL1()

    @property
    def scheme(self) -> SignatureScheme:
        return self.chain.format.scheme

    def adapter(self, secret: bytes) -> MemoryAdapter:
        return self.chain.adapter(self.scheme.public_key(secret))

    def fund(self, account: bytes, amount: int) -> None:
        self.chain.mint(account, amount)

    def balance(self, account: bytes) -> int:
        return self.chain.balance(account)

    def advance(self, seconds: int) -> None:
        self.chain.advance(seconds)


class LocalL1Harness:
    """The local L1 on a new SQLite file, each adapter on a connection of its own (as
    each process has).

    A local L1 follows the wall clock, so a challenge window would take real seconds to
    pass. The harness gives every connection its own clock instead (through
    :class:`~bfs_smr.adapters.local.LocalL1`'s ``clock`` argument): it starts at the wall
    clock's time and moves only by :meth:`advance`, so a window passes at once. Close the
    harness (or use it as a context manager) to close the connections.

    Args:
        path: where to create the L1 file; it must not exist.
        start: the clock's first value (default: the wall clock's time now).
    """

    def __init__(self, path: Path | str, *, start: int | None = None) -> None:
        self._time = int(time.time()) if start is None else start
        self.path = Path(path)
        self.chain = LocalL1.create(self.path, clock=self.now)
        self._connections = [self.chain]

    def now(self) -> int:
        """The clock every connection of this harness reads."""
        return self._time

    @property
    def scheme(self) -> SignatureScheme:
        return self.chain.format.scheme

    def adapter(self, secret: bytes) -> LocalAdapter:
        connection = LocalL1(self.path, clock=self.now)
        self._connections.append(connection)
        return connection.adapter(self.scheme.public_key(secret))

    def fund(self, account: bytes, amount: int) -> None:
        self.chain.mint(account, amount)

    def balance(self, account: bytes) -> int:
        return self.chain.balance(account)

    def advance(self, seconds: int) -> None:
        if seconds < 0:
            raise LocalError("time only moves forward")
        self._time += seconds

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    def __enter__(self) -> LocalL1Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EvmL1Harness:
    """The Vyper adjudicator on a development chain (needs the ``evm`` extra).

    Every adapter's account gets :attr:`GAS_MONEY` to pay fees with; :meth:`balance`
    leaves it and the fees paid out, so the same expected balances hold as on a fee-less
    L1. Time moves by mining a block that much later.

    Args:
        chain: a :class:`~bfs_smr.adapters.evm.DevChain` (default: a new in-process
            py-evm chain; ``DevChain.rpc(url)`` for an anvil node).
    """

    #: Wei each adapter's account gets for fees, on top of what a scenario funds.
    GAS_MONEY = 10**17

    def __init__(self, chain: DevChain | None = None) -> None:
        self.chain: DevChain = chain if chain is not None else evm.DevChain.embedded()
        self._adapters: dict[bytes, EvmAdapter] = {}

    @property
    def scheme(self) -> SignatureScheme:
        scheme: SignatureScheme = evm.Secp256k1()
        return scheme

    def adapter(self, secret: bytes) -> EvmAdapter:
        adapter = self.chain.adapter(secret)
        self._adapters[adapter.account] = adapter
        self.chain.mint(adapter.account, self.GAS_MONEY)
        return adapter

    def fund(self, account: bytes, amount: int) -> None:
        self.chain.mint(account, amount)

    def balance(self, account: bytes) -> int:
        adapter = self._adapters[account]
        return int(adapter.balance()) + int(adapter.fees_paid) - self.GAS_MONEY

    def advance(self, seconds: int) -> None:
        self.chain.advance(seconds)
