"""The presentation hook: each bundled app's view of a state for each party
(``StateMachine.present``), what ``channel show``, the node's API and its page print."""

import json

import pytest
from bfs_smr.apps.counter import Counter
from bfs_smr.apps.payments import Payments
from bfs_smr.apps.tictactoe import TicTacToe

from bfs_smr import ChannelParams, StateMachine
from bfs_smr.testing import check_app


def params(app, deposits):
    return ChannelParams(
        l1=b"memory:test",
        participants=(b"a" * 32, b"b" * 32),
        deposits=deposits,
        app=app.name,
        app_version=app.version,
    )


def play(app, cells):
    state = app.initial_state(params(app, (10, 10)))
    for i, cell in enumerate(cells):
        state = app.apply(state, {"cell": cell}, i % 2)
    return state


def test_payments_view_is_mine_and_theirs_for_each_party():
    app = Payments()
    state = app.apply(app.initial_state(params(app, (10, 5))), {"pay": 4}, 0)
    assert app.present(state, 0) == {"mine": 6, "theirs": 9}
    assert app.present(state, 1) == {"mine": 9, "theirs": 6}


def test_counter_view_is_the_count():
    app = Counter()
    state = app.apply(app.initial_state(params(app, (3, 4))), {"inc": 7}, 1)
    assert app.present(state, 0) == app.present(state, 1) == {"count": 7}


def test_tictactoe_fresh_game_the_opener_moves_first():
    app = TicTacToe()
    state = play(app, [])
    x, o = app.present(state, 0), app.present(state, 1)
    assert x["board"] == [""] * 9
    assert (x["you"], x["turn"], x["winner"]) == ("X", "you", None)
    assert (o["you"], o["turn"], o["winner"]) == ("O", "peer", None)


def test_tictactoe_turn_alternates_and_the_board_shows_marks():
    app = TicTacToe()
    state = play(app, [4, 0])
    x, o = app.present(state, 0), app.present(state, 1)
    assert x["board"] == ["O", "", "", "", "X", "", "", "", ""] == o["board"]
    assert (x["turn"], o["turn"]) == ("you", "peer")
    state = play(app, [4, 0, 8])
    assert (app.present(state, 0)["turn"], app.present(state, 1)["turn"]) == ("peer", "you")


@pytest.mark.parametrize(
    ("cells", "x_sees", "o_sees"),
    [
        ([0, 3, 1, 4, 2], "you", "peer"),  # X wins the top row
        ([4, 0, 8, 1, 6, 2], "peer", "you"),  # O wins the top row
        ([0, 1, 2, 4, 3, 5, 7, 6, 8], "draw", "draw"),
    ],
)
def test_tictactoe_winner_for_both_parties(cells, x_sees, o_sees):
    app = TicTacToe()
    state = play(app, cells)
    x, o = app.present(state, 0), app.present(state, 1)
    assert (x["winner"], o["winner"]) == (x_sees, o_sees)
    assert x["turn"] is None and o["turn"] is None  # nobody moves in a finished game


def test_the_default_view_is_the_state_as_plain_json():
    class Blob(StateMachine):
        name = "blob"

        def initial_state(self, params):
            return (b"\x01\xff", {"k": (1, 2)}, params.deposits[0], params.deposits[1])

        def apply(self, state, command, actor):
            return state

        def outcome(self, state):
            return (state[2], state[3])

    app = Blob()
    state = app.initial_state(params(app, (1, 2)))
    view = app.present(state, 1)
    assert view == {"state": ["01ff", {"k": [1, 2]}, 1, 2]}
    json.dumps(view)


def test_the_conformance_kit_checks_the_view_is_json():
    class Leaky(Payments):
        def present(self, state, party):
            return {"mine": b"not json"}

    app = Leaky()
    with pytest.raises(AssertionError, match="not JSON"):
        check_app(app, params(app, (5, 5)), [(0, {"pay": 1})])
