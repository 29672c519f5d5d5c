"""``check_app``: the conformance kit for apps (state machines)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bfs_smr._app import StateMachine
from bfs_smr._errors import CommandRejected
from bfs_smr._update import ChannelParams

__all__ = ["HOSTILE_COMMANDS", "check_app"]

#: Commands a malicious peer might send to any app, whatever its commands look like. An
#: app may raise nothing but CommandRejected for them. The list names no app's command
#: keys on purpose: pass your app's own malformed commands to :func:`check_app` as
#: ``hostile``.
HOSTILE_COMMANDS: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    "",
    "command",
    b"\x00" * 64,
    [],
    [1, 2, 3],
    [[[[[]]]]],
    {},
    {"": None},
    {"unknown": 1},
    {1: 2},
    {"x" * 1_000: "y" * 1_000},
)


def check_app(
    app: StateMachine[Any],
    params: ChannelParams,
    commands: Iterable[tuple[int, Any]],
    *,
    hostile: Iterable[Any] = (),
) -> Any:
    """Run ``commands`` (``(actor, command)`` pairs) from the initial state, checking.

    In every state reached, each hostile command (:data:`HOSTILE_COMMANDS` plus
    ``hostile``), issued by either party, may raise :class:`CommandRejected` and no other
    exception: a peer's bytes must never crash the app. Commands the app rejects are
    skipped (they must be rejected with :class:`CommandRejected` and leave the state as
    it was). Every state must pay
    out exactly the locked total, round-trip through the app's encoding, and have a
    JSON-able view for each party (:meth:`StateMachine.present`).

    Args:
        app: the app under test.
        params: the channel parameters its initial state is made from.
        commands: ``(actor, command)`` pairs, applied in order.
        hostile: the app's own malformed commands (wrong types or ranges for its keys,
            extra keys …): the generic list cannot know an app's command shapes.

    Returns:
        The final state.

    Raises:
        AssertionError: naming the property the app broke.
    """
    hostile_commands = HOSTILE_COMMANDS + tuple(hostile)
    state = app.initial_state(params)
    _check_state(app, params, state)
    for actor, command in commands:
        before = app.state_hash(state)
        _check_hostile(app, state, hostile_commands)
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
    _check_hostile(app, state, hostile_commands)
    return state


def _check_hostile(app: StateMachine[Any], state: Any, hostile: tuple[Any, ...]) -> None:
    for command in hostile:
        for who in (0, 1):
            try:
                app.apply(state, command, who)
            except CommandRejected:
                pass
            except Exception as exc:  # any other exception is the bug being checked for
                raise AssertionError(
                    f"{app.name}: hostile command {command!r} raised {type(exc).__name__}, "
                    "not CommandRejected"
                ) from exc


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
    for party in (0, 1):
        view = app.present(state, party)
        assert type(view) is dict, f"{app.name}: present returned {type(view).__name__}"
        try:
            json.dumps(view, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{app.name}: present's view is not JSON: {exc}") from None
