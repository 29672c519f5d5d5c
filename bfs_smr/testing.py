"""Conformance kits for code that plugs into bfs-smr.

``check_app`` runs an app through a sequence of commands and checks the properties the
framework relies on: determinism, no mutation of states, conservation of value in every
outcome, a canonical state encoding that round-trips, and hostile commands refused with
:class:`CommandRejected` rather than any other exception. Every bundled app passes it;
run it on yours in your own test suite.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._app import StateMachine
from ._errors import CommandRejected
from ._update import ChannelParams

__all__ = ["HOSTILE_COMMANDS", "check_app"]

#: Commands a malicious peer might send; an app must refuse each with CommandRejected.
HOSTILE_COMMANDS: tuple[Any, ...] = (
    None,
    0,
    -1,
    2**70,
    "",
    "pay",
    b"\x00" * 64,
    [],
    [1, 2, 3],
    {},
    {"": None},
    {"pay": -5, "inc": 1, "cell": 99},
    {"pay": "1"},
    {"inc": True},
    {"cell": 9},
    {"cell": [0]},
    {"pay": 2**80},
    {"inc": 0},
)


def check_app(
    app: StateMachine[Any],
    params: ChannelParams,
    commands: Iterable[tuple[int, Any]],
) -> Any:
    """Run ``commands`` (``(actor, command)`` pairs) from the initial state, checking.

    Commands the app rejects are skipped (they must be rejected with
    :class:`CommandRejected`). Returns the final state.

    Raises:
        AssertionError: naming the property the app broke.
    """
    state = app.initial_state(params)
    _check_state(app, params, state)
    for actor, command in commands:
        before = app.state_hash(state)
        for hostile in HOSTILE_COMMANDS:
            for who in (0, 1):
                try:
                    app.apply(state, hostile, who)
                except CommandRejected:
                    pass
                except Exception as exc:  # any other exception is the bug being checked for
                    raise AssertionError(
                        f"{app.name}: hostile command {hostile!r} raised {type(exc).__name__}, "
                        "not CommandRejected"
                    ) from exc
        try:
            new = app.apply(state, command, actor)
        except CommandRejected:
            assert app.state_hash(state) == before, f"{app.name}: a rejection mutated the state"
            continue
        again = app.apply(state, command, actor)
        assert app.state_hash(state) == before, f"{app.name}: apply mutated its input state"
        assert app.state_hash(new) == app.state_hash(again), (
            f"{app.name}: apply is not deterministic"
        )
        state = new
        _check_state(app, params, state)
    return state


def _check_state(app: StateMachine[Any], params: ChannelParams, state: Any) -> None:
    out = app.outcome(state)
    assert len(out) == 2 and all(type(x) is int and x >= 0 for x in out), (
        f"{app.name}: outcome {out!r} is not two non-negative integers"
    )
    assert sum(out) == params.locked, (
        f"{app.name}: outcome {out!r} does not pay exactly the locked {params.locked}"
    )
    data = app.encode_state(state)
    decoded = app.decode_state(data)
    assert app.encode_state(decoded) == data, f"{app.name}: state encoding does not round-trip"
    mover = app.to_move(state)
    assert mover in (None, 0, 1), f"{app.name}: to_move returned {mover!r}"
    if app.is_final(state):
        assert mover is None, f"{app.name}: a final state has a player to move"
