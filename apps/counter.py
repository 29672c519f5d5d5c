"""Counter: either party increments a shared counter; closing returns the deposits."""

from __future__ import annotations

from typing import Any

from bfs_smr import ChannelParams, StateMachine, reject

__all__ = ["Counter"]

# State: (count, deposit of participant 0, deposit of participant 1).
CounterState = tuple[int, int, int]

MAX_STEP = 1 << 32


class Counter(StateMachine[CounterState]):
    """Commands: ``{"inc": n}`` with ``1 <= n <= 2**32``."""

    name = "counter"
    version = 1

    def initial_state(self, params: ChannelParams) -> CounterState:
        return (0, params.deposits[0], params.deposits[1])

    def apply(self, state: CounterState, command: Any, actor: int) -> CounterState:
        if type(command) is not dict or command.keys() != {"inc"}:
            raise reject('an increment is {"inc": n}')
        step = command["inc"]
        if type(step) is not int or not 1 <= step <= MAX_STEP:
            raise reject(f"step must be an integer from 1 to {MAX_STEP}")
        return (state[0] + step, state[1], state[2])

    def outcome(self, state: CounterState) -> tuple[int, int]:
        return (state[1], state[2])

    def present(self, state: CounterState, party: int) -> dict[str, Any]:
        return {"count": state[0]}
