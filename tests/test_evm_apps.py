"""The bundled apps run unchanged over the EVM adjudicator (in-process py-evm chain)."""

import random

import pytest

from bfs_smr.runtime import LocalPair, evm_pair

pytest.importorskip("bfs_smr.adapters.evm")  # part of the test extra; present in CI


def opened(app: str, deposits: tuple[int, int]) -> LocalPair:
    _, pair = evm_pair(app, deposits)
    pair.open()
    return pair


def test_counter_over_the_evm_returns_the_deposits():
    pair = opened("counter", (1_000, 2_000))
    for i in range(10):
        pair.parties[i % 2].chan.issue({"inc": 1 + i})
    pair.pump()
    assert pair.alice.chan.state[0] == sum(range(1, 11))
    assert pair.close_cooperatively(by=pair.bob) == (1_000, 2_000)


def test_tictactoe_over_the_evm_pays_the_winner_or_splits():
    pair = opened("tictactoe", (500, 500))
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
