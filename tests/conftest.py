"""Shared fixtures: real keys, a real embedded L1, real channel parties."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from adapters.memory import MemoryL1
from bfs_smr import Ed25519, Signer
from bfs_smr.runtime import LocalPair, load_app

PairFactory = Callable[..., tuple[MemoryL1, LocalPair]]


def new_signer() -> Signer:
    return Signer(Ed25519(), os.urandom(32))


def make_pair(
    app: str = "payments",
    deposits: tuple[int, int] = (1_000, 0),
    *,
    window: int = 100,
    nonce: int = 0,
    chain: MemoryL1 | None = None,
    alice: Signer | None = None,
    bob: Signer | None = None,
    **kwargs: Any,
) -> tuple[MemoryL1, LocalPair]:
    """A funded-but-unopened pair on a (new or given) embedded L1."""
    chain = chain or MemoryL1()
    alice = alice or new_signer()
    bob = bob or new_signer()
    chain.mint(alice.public_key, deposits[0])
    chain.mint(bob.public_key, deposits[1])
    pair = LocalPair(
        load_app(app),
        alice=alice,
        bob=bob,
        alice_l1=chain.adapter(alice.public_key),
        bob_l1=chain.adapter(bob.public_key),
        deposits=deposits,
        challenge_window=window,
        nonce=nonce,
        **kwargs,
    )
    return chain, pair


@pytest.fixture
def pair_factory() -> PairFactory:
    return make_pair
