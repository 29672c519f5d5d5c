"""The bundled apps: their rules, and the conformance kit every app must pass."""

import random

import pytest
from bfs_smr.apps.counter import Counter
from bfs_smr.apps.payments import Payments
from bfs_smr.apps.tictactoe import TicTacToe, winner

from bfs_smr import ChannelParams, CommandRejected, InternalError
from bfs_smr.runtime import available_apps, load_app
from bfs_smr.testing import HOSTILE_COMMANDS, check_app


def params(app, deposits):
    return ChannelParams(
        l1=b"memory:test",
        participants=(b"a" * 32, b"b" * 32),
        deposits=deposits,
        app=app.name,
        app_version=app.version,
    )


# -- payments ---------------------------------------------------------------------


def test_payments_moves_value_both_ways():
    app = Payments()
    s = app.initial_state(params(app, (10, 5)))
    s = app.apply(s, {"pay": 4}, 0)
    assert s == (6, 9)
    s = app.apply(s, {"pay": 9}, 1)
    assert s == (15, 0)
    assert app.outcome(s) == (15, 0)


@pytest.mark.parametrize(
    "command", [{"pay": 0}, {"pay": -1}, {"pay": 11}, {"pay": True}, {"pay": 1, "x": 1}]
)
def test_payments_rejects_overdraft_and_non_positive(command):
    app = Payments()
    with pytest.raises(CommandRejected):
        app.apply((10, 0), command, 0)


def test_payments_overdraft_message_is_clear():
    with pytest.raises(CommandRejected, match="overdraft"):
        Payments().apply((10, 0), {"pay": 11}, 0)


# -- counter ----------------------------------------------------------------------


def test_counter_counts_and_returns_deposits():
    app = Counter()
    s = app.initial_state(params(app, (3, 4)))
    for actor in (0, 1, 1):
        s = app.apply(s, {"inc": 2}, actor)
    assert s[0] == 6
    assert app.outcome(s) == (3, 4)
    with pytest.raises(CommandRejected):
        app.apply(s, {"inc": 0}, 0)


# -- tic-tac-toe ------------------------------------------------------------------


def play(app, state, cells):
    for cell in cells:
        state = app.apply(state, {"cell": cell}, state[1])
    return state


def test_tictactoe_win_takes_the_pot():
    app = TicTacToe()
    s = play(app, app.initial_state(params(app, (5, 5))), [0, 3, 1, 4, 2])
    assert winner(s[0]) == 0 and app.is_final(s)
    assert app.outcome(s) == (10, 0)
    assert app.to_move(s) is None and app.may_close(s)
    s = play(app, app.initial_state(params(app, (5, 5))), [0, 3, 1, 4, 8, 5])
    assert app.outcome(s) == (0, 10)


def test_tictactoe_draw_splits():
    app = TicTacToe()
    s = play(app, app.initial_state(params(app, (5, 5))), [0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert winner(s[0]) is None and app.is_final(s)
    assert app.outcome(s) == (5, 5)


def test_tictactoe_turns_and_cells_enforced():
    app = TicTacToe()
    s = app.initial_state(params(app, (5, 5)))
    with pytest.raises(CommandRejected, match="turn"):
        app.apply(s, {"cell": 0}, 1)
    s = app.apply(s, {"cell": 0}, 0)
    with pytest.raises(CommandRejected, match="taken"):
        app.apply(s, {"cell": 0}, 1)
    with pytest.raises(CommandRejected, match="over"):
        app.apply(play(app, s, [3, 1, 4, 2]), {"cell": 8}, 1)


def test_tictactoe_in_progress_pays_the_player_not_to_move():
    app = TicTacToe()
    s = play(app, app.initial_state(params(app, (5, 5))), [0])
    assert app.to_move(s) == 1 and not app.may_close(s)
    assert app.outcome(s) == (10, 0)


def test_tictactoe_needs_equal_stakes():
    app = TicTacToe()
    with pytest.raises(CommandRejected):
        app.initial_state(params(app, (5, 6)))


# -- conformance ------------------------------------------------------------------


def random_commands(app_name, n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        actor = rng.randrange(2)
        if app_name == "payments":
            yield actor, {"pay": rng.randrange(-2, 40)}
        elif app_name == "counter":
            yield actor, {"inc": rng.randrange(0, 5)}
        else:
            yield actor, {"cell": rng.randrange(-1, 10)}


#: Each bundled app's own malformed commands, checked on top of the kit's generic ones.
HOSTILE = {
    "payments": [
        {"pay": -5},
        {"pay": "1"},
        {"pay": True},
        {"pay": 1.5},
        {"pay": 2**80},
        {"pay": None},
        {"pay": 1, "x": 1},
        {"pay": -5, "inc": 1, "cell": 99},
    ],
    "counter": [
        {"inc": True},
        {"inc": 0},
        {"inc": -1},
        {"inc": "1"},
        {"inc": 2**80},
        {"inc": [1]},
        {"inc": 1, "pay": 1},
    ],
    "tictactoe": [
        {"cell": 9},
        {"cell": -1},
        {"cell": [0]},
        {"cell": True},
        {"cell": "4"},
        {"cell": 2**80},
        {"cell": 4, "x": 0},
    ],
}


@pytest.mark.parametrize("name", ["payments", "counter", "tictactoe"])
@pytest.mark.parametrize("seed", range(5))
def test_bundled_apps_pass_the_conformance_kit(name, seed):
    app = load_app(name)
    commands = random_commands(name, 60, seed)
    check_app(app, params(app, (30, 30)), commands, hostile=HOSTILE[name])


def test_the_generic_hostile_commands_name_no_bundled_apps_key():
    keys = {key for commands in HOSTILE.values() for command in commands for key in command}
    assert {"pay", "inc", "cell"} <= keys
    generic = {repr(command) for command in HOSTILE_COMMANDS}
    assert not any(repr(key) in text for key in keys for text in generic)


def test_app_specific_hostile_commands_reach_the_app():
    class Fragile(Counter):
        name = "fragile"

        def apply(self, state, command, actor):
            if type(command) is dict and command.get("inc") == "boom":
                raise KeyError("boom")  # a crash only an app-specific command finds
            return super().apply(state, command, actor)

    app, ps, commands = Fragile(), params(Fragile(), (1, 1)), [(0, {"inc": 1})]
    check_app(app, ps, commands)  # the generic list cannot find it
    with pytest.raises(AssertionError, match=r"hostile command \{'inc': 'boom'\} raised KeyError"):
        check_app(app, ps, commands, hostile=[{"inc": "boom"}])


def test_conformance_kit_catches_a_stealing_app():
    class Thief(Payments):
        name = "thief"

        def outcome(self, state):
            return (state[0] + 1, state[1])

    with pytest.raises(AssertionError, match="locked"):
        check_app(Thief(), params(Thief(), (5, 5)), [])


def test_conformance_kit_catches_an_app_that_crashes_on_hostile_input():
    class Fragile(Counter):
        name = "fragile"

        def apply(self, state, command, actor):
            return (state[0] + command["inc"], state[1], state[2])  # no validation

    with pytest.raises(AssertionError, match="hostile"):
        check_app(Fragile(), params(Fragile(), (1, 1)), [(0, {"inc": 1})])


def test_framework_refuses_an_outcome_that_breaks_conservation():
    class Thief(Payments):
        name = "thief"

        def outcome(self, state):
            return (state[0] + 1, state[1])

    with pytest.raises(InternalError, match="locked"):
        Thief().checked_outcome((5, 5), params(Thief(), (5, 5)))


def test_bundled_apps_are_found_through_entry_points():
    found = available_apps()
    assert {"payments", "counter", "tictactoe"} <= set(found)
    assert found["payments"] is Payments
