"""The bundled apps run unchanged over the EVM adjudicator (in-process py-evm chain)."""

import os
import random

import pytest

from bfs_smr import Signer
from bfs_smr.runtime import LocalPair, load_app

evm = pytest.importorskip("adapters.evm")  # part of the test extra; present in CI


def evm_pair(app: str, deposits: tuple[int, int]) -> LocalPair:
    chain = evm.DevChain.embedded()
    secrets = (os.urandom(32), os.urandom(32))
    signers = [Signer(evm.Secp256k1(), s) for s in secrets]
    adapters = [chain.adapter(s) for s in secrets]
    for signer, deposit in zip(signers, deposits, strict=True):
        chain.mint(signer.public_key, deposit + 10**17)  # and gas money
    pair = LocalPair(
        load_app(app),
        alice=signers[0],
        bob=signers[1],
        alice_l1=adapters[0],
        bob_l1=adapters[1],
        deposits=deposits,
    )
    for adapter in adapters:
        adapter.track(pair.params)
    pair.open()
    return pair


def test_counter_over_the_evm_returns_the_deposits():
    pair = evm_pair("counter", (1_000, 2_000))
    for i in range(10):
        pair.parties[i % 2].chan.issue({"inc": 1 + i})
    pair.pump()
    assert pair.alice.chan.state[0] == sum(range(1, 11))
    assert pair.close_cooperatively(by=pair.bob) == (1_000, 2_000)


def test_tictactoe_over_the_evm_pays_the_winner_or_splits():
    pair = evm_pair("tictactoe", (500, 500))
    rng = random.Random(7)
    app = pair.app
    while not app.is_final(pair.alice.chan.state):
        state = pair.alice.chan.state
        cell = rng.choice([i for i, c in enumerate(state[0]) if c == 0])
        pair.parties[state[1]].chan.issue({"cell": cell})
        pair.pump()
    expected = app.outcome(pair.alice.chan.state)
    assert pair.close_cooperatively() == expected
    assert sum(expected) == 1_000
