"""Payments: either party pays the other any positive amount it holds."""

from __future__ import annotations

from typing import Any

from bfs_smr import ChannelParams, StateMachine, reject

__all__ = ["Payments"]

# State: (balance of participant 0, balance of participant 1).
Balances = tuple[int, int]


class Payments(StateMachine[Balances]):
    """Commands: ``{"pay": amount}`` — the actor pays the other party ``amount``."""

    name = "payments"
    version = 1

    def initial_state(self, params: ChannelParams) -> Balances:
        return (params.deposits[0], params.deposits[1])

    def apply(self, state: Balances, command: Any, actor: int) -> Balances:
        if type(command) is not dict or command.keys() != {"pay"}:
            raise reject('a payment is {"pay": amount}')
        amount = command["pay"]
        if type(amount) is not int or amount <= 0:
            raise reject("amount must be a positive integer")
        if amount > state[actor]:
            raise reject(f"overdraft: paying {amount} with a balance of {state[actor]}")
        if actor == 0:
            return (state[0] - amount, state[1] + amount)
        return (state[0] + amount, state[1] - amount)

    def outcome(self, state: Balances) -> tuple[int, int]:
        return state

    def present(self, state: Balances, party: int) -> dict[str, Any]:
        return {"mine": state[party], "theirs": state[1 - party]}
