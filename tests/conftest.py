"""Shared fixtures: real keys, a real embedded L1, real channel parties."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import ChannelLimits, Ed25519, Signer
from bfs_smr.runtime import LocalPair, memory_pair
from bfs_smr.runtime.store import Store


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Each test starts with the logging configuration the one before it found: an
    in-process command that configures logging (a level of "warning" for a bench, a
    stream) must not decide what a later test in the same worker can capture."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def new_signer() -> Signer:
    return Signer(Ed25519(), os.urandom(32))


def make_pair(
    app: str = "payments",
    deposits: tuple[int, int] = (1_000, 0),
    *,
    window: int = 100,
    max_in_flight: int = 64,
    max_batch: int = 1,
    max_queue: int = 100_000,
    **kwargs: Any,
) -> tuple[MemoryL1, LocalPair]:
    """A funded-but-unopened pair on a (new or given) embedded L1 (one command per update
    unless told otherwise)."""
    limits = ChannelLimits(max_in_flight, max_batch, max_queue)
    return memory_pair(app, deposits, challenge_window=window, limits=limits, **kwargs)


def anvil(**options: Any) -> Any:
    """An anvil node (from the npm package, installed on first use), not yet started;
    skips the test only on a machine without npm."""
    from bfs_smr.adapters.evm import Anvil, install_anvil

    try:
        binary = install_anvil()
    except FileNotFoundError as exc:
        pytest.skip(f"anvil needs npm: {exc}")
    return Anvil(binary, **options)


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """One anvil node for the session."""
    with anvil() as node:
        yield node.url


@pytest.fixture
def durable(tmp_path: Any) -> Any:
    """An open channel whose two parties persist to real SQLite files (payments unless
    said), one payment per update."""

    def make(
        app: Any = "payments",
        deposits: tuple[int, int] = (1_000, 500),
        max_in_flight: int = 64,
        **kw: Any,
    ) -> tuple[Any, LocalPair]:
        stores = (Store(tmp_path / "alice"), Store(tmp_path / "bob"))
        limits = ChannelLimits(max_in_flight=max_in_flight, max_batch=1)
        chain, pair = memory_pair(app, deposits, stores=stores, limits=limits, **kw)
        pair.open()
        return chain, pair

    return make


def both_equal(pair: LocalPair) -> int:
    """Both parties hold the same newest update and state; returns its seq."""
    a, b = pair.alice.chan, pair.bob.chan
    assert a.committed == b.committed and a.state == b.state
    return a.seq
